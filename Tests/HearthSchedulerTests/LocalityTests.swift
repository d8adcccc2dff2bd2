import Foundation
import HearthInventory
import HearthScheduler
import HearthStore
import XCTest

/// Scoring, hard locality, the writer lease and inventory expiry, decided by
/// ``LocalityExtender`` (the HTTP layer adds nothing to these).
final class LocalityTests: XCTestCase {
    func testScoreTable() {
        let table: [(cached: Int64, total: Int64, score: Int64)] = [
            (0, 100, 0), (1, 100, 1), (9, 100, 1), (10, 100, 1), (19, 100, 1), (20, 100, 2), (50, 100, 5),
            (99, 100, 9), (999, 1000, 9), (100, 100, 10), (150, 100, 10), (0, 0, 0), (5, 0, 0),
            (1, Int64.max, 1), (Int64.max, Int64.max, 10), (Int64.max / 2, Int64.max, 5),
        ]
        for row in table {
            XCTAssertEqual(Scoring.score(cachedBytes: row.cached, totalBytes: row.total), row.score, "\(row)")
        }
    }

    func testLocalityAnnotationParsing() throws {
        let key = LocalityRequirement.annotation
        XCTAssertNil(try LocalityRequirement.of(nil))
        XCTAssertNil(try LocalityRequirement.of(["other": "1"]))
        XCTAssertNil(try LocalityRequirement.of([key: "0%"]))
        XCTAssertEqual(try LocalityRequirement.of([key: "80%"])?.minimumShare, 0.8)
        XCTAssertEqual(try LocalityRequirement.of([key: " 0.5 "])?.minimumShare, 0.5)
        XCTAssertEqual(try LocalityRequirement.of([key: "1"])?.minimumShare, 1)
        for bad in ["lots", "150%", "-1", "1.5", "nan", "%", ""] {
            XCTAssertThrowsError(try LocalityRequirement.of([key: bad]), bad)
        }
        XCTAssertTrue(Scoring.meets(0.5, cachedBytes: 50, totalBytes: 100))
        XCTAssertFalse(Scoring.meets(0.5, cachedBytes: 49, totalBytes: 100))
        XCTAssertTrue(Scoring.meets(1, cachedBytes: 0, totalBytes: 0))  // empty volumes: nothing to be near
        XCTAssertFalse(Scoring.meets(1, cachedBytes: 99, totalBytes: 100))
    }

    private func extender(_ volumes: [PVCReference: ResolvedVolume], clock: ManualClock = ManualClock(),
                          ttl: Duration = .seconds(90), leases: (any LeaseSource)? = nil) -> LocalityExtender {
        let inventory = InventoryStore(ttl: ttl, now: { clock.now })
        return LocalityExtender(inventory: inventory, resolver: StaticVolumeResolver(volumes),
                                leases: leases ?? InventoryLeaseSource(inventory: inventory))
    }

    private func pod(_ claims: [(String, Bool)], annotations: [String: String]? = nil) -> Pod {
        Pod(metadata: ObjectMeta(name: "p", namespace: "ml", annotations: annotations),
            spec: PodSpec(volumes: claims.enumerated().map { index, claim in
                PodVolume(name: "v\(index)", persistentVolumeClaim: .init(claimName: claim.0, readOnly: claim.1))
            }))
    }

    func testScoresAreTheShareOfAllTheVolumesBytes() async {
        let extender = extender([.ml("a"): ResolvedVolume(id: "vol-a", logicalBytes: 600),
                                 .ml("b"): ResolvedVolume(id: "vol-b", logicalBytes: 400),
                                 .ml("c"): ResolvedVolume(id: "vol-c", logicalBytes: nil)])
        extender.inventory.record(InventoryReport(node: "n1", volumes: [CachedVolume(volumeID: "vol-a", cachedBytes: 600)]))
        extender.inventory.record(InventoryReport(node: "n2", volumes: [CachedVolume(volumeID: "vol-b", cachedBytes: 400),
                                                                      CachedVolume(volumeID: "vol-a", cachedBytes: 300)]))
        extender.inventory.record(InventoryReport(node: "n3", volumes: [CachedVolume(volumeID: "vol-a", cachedBytes: 600),
                                                                      CachedVolume(volumeID: "vol-b", cachedBytes: 400)]))
        let scores = await extender.prioritize(pod: pod([("a", false), ("b", true), ("not-hearth", false)]),
                                               nodes: ["n1", "n2", "n3", "n4"])
        XCTAssertEqual(scores.map(\.score), [6, 7, 10, 0])
        // Volume c has no size anywhere: its reported cached bytes size it.
        extender.inventory.record(InventoryReport(node: "n4", volumes: [CachedVolume(volumeID: "vol-c", cachedBytes: 1000)]))
        let withC = await extender.prioritize(pod: pod([("a", false), ("b", false), ("c", false)]), nodes: ["n3", "n4"])
        XCTAssertEqual(withC.map(\.score), [5, 5])
    }

    func testPodsWithoutHearthVolumesGetEqualZeros() async {
        let extender = extender([:])
        let noClaims = await extender.prioritize(pod: pod([]), nodes: ["a", "b"])
        XCTAssertEqual(noClaims.map(\.score), [0, 0])
        let foreign = await extender.prioritize(pod: pod([("nfs-claim", false)]), nodes: ["a", "b"])
        XCTAssertEqual(foreign.map(\.score), [0, 0])
        let filtered = await extender.filter(pod: pod([("nfs-claim", false)], annotations: [LocalityRequirement.annotation: "100%"]),
                                             nodes: ["a", "b"])
        XCTAssertEqual(filtered.passed, [0, 1])
    }

    func testEmptyVolumesScoreZeroEverywhereAndSatisfyHardLocality() async {
        let extender = extender([.ml("empty"): ResolvedVolume(id: "vol-empty", logicalBytes: 0)])
        extender.inventory.record(InventoryReport(node: "n1", volumes: [CachedVolume(volumeID: "vol-empty", cachedBytes: 0)]))
        let scores = await extender.prioritize(pod: pod([("empty", false)]), nodes: ["n1", "n2"])
        XCTAssertEqual(scores.map(\.score), [0, 0])
        let outcome = await extender.filter(pod: pod([("empty", false)], annotations: [LocalityRequirement.annotation: "1"]),
                                            nodes: ["n1", "n2"])
        XCTAssertEqual(outcome.passed, [0, 1])
    }

    func testHardLocalityKeepsOnlyNodesWithTheShareAndSaysWhy() async {
        let extender = extender([.ml("a"): ResolvedVolume(id: "vol-a", logicalBytes: 1000)])
        extender.inventory.record(InventoryReport(node: "full", volumes: [CachedVolume(volumeID: "vol-a", cachedBytes: 1000)]))
        extender.inventory.record(InventoryReport(node: "half", volumes: [CachedVolume(volumeID: "vol-a", cachedBytes: 500)]))
        extender.inventory.record(InventoryReport(node: "almost", volumes: [CachedVolume(volumeID: "vol-a", cachedBytes: 499)]))
        let outcome = await extender.filter(pod: pod([("a", true)], annotations: [LocalityRequirement.annotation: "50%"]),
                                            nodes: ["full", "half", "almost", "none"])
        XCTAssertEqual(outcome.passed, [0, 1])
        XCTAssertEqual(Set(outcome.failed.keys), ["almost", "none"])
        XCTAssertEqual(outcome.failed["almost"], "node caches 49.9% of the pod's Hearth volume bytes; hearth.csi.dev/min-cached-share asks for 50%")
        XCTAssertTrue(outcome.unresolvable.isEmpty)
    }

    func testInvalidAnnotationFailsEveryNodeWithTheReason() async {
        let extender = extender([.ml("a"): ResolvedVolume(id: "vol-a", logicalBytes: 1)])
        let outcome = await extender.filter(pod: pod([("a", false)], annotations: [LocalityRequirement.annotation: "most"]),
                                            nodes: ["n1", "n2"])
        XCTAssertEqual(outcome.passed, [])
        XCTAssertTrue(outcome.unresolvable["n1"]?.contains("is not a share") == true, "\(outcome.unresolvable)")
    }

    func testWritersGoOnlyToTheLeaseHolderReadersAnywhere() async {
        let extender = extender([.ml("a"): ResolvedVolume(id: "vol-a", logicalBytes: 100),
                                 .ml("b"): ResolvedVolume(id: "vol-b", logicalBytes: 100)])
        extender.inventory.record(InventoryReport(node: "holder", volumes: [CachedVolume(volumeID: "vol-a", cachedBytes: 0, writer: true)]))
        extender.inventory.record(InventoryReport(node: "reader", volumes: [CachedVolume(volumeID: "vol-a", cachedBytes: 100)]))
        let writer = await extender.filter(pod: pod([("a", false), ("b", false)]), nodes: ["holder", "reader", "other"])
        XCTAssertEqual(writer.passed, [0])
        XCTAssertEqual(Set(writer.unresolvable.keys), ["reader", "other"])
        XCTAssertTrue(writer.unresolvable["other"]!.contains("single-writer lease is held by node holder"), writer.unresolvable["other"]!)
        let reader = await extender.filter(pod: pod([("a", true), ("b", false)]), nodes: ["holder", "reader", "other"])
        XCTAssertEqual(reader.passed, [0, 1, 2])
        // The same claim mounted twice, once writable: a writer.
        let twice = await extender.filter(pod: pod([("a", true), ("a", false)]), nodes: ["holder", "other"])
        XCTAssertEqual(twice.passed, [0])
    }

    func testLeaseUnresolvableWinsOverLocalityFailure() async {
        let extender = extender([.ml("a"): ResolvedVolume(id: "vol-a", logicalBytes: 100)])
        extender.inventory.record(InventoryReport(node: "holder", volumes: [CachedVolume(volumeID: "vol-a", cachedBytes: 100, writer: true)]))
        let outcome = await extender.filter(pod: pod([("a", false)], annotations: [LocalityRequirement.annotation: "90%"]),
                                            nodes: ["holder", "other"])
        XCTAssertEqual(outcome.passed, [0])
        XCTAssertEqual(Array(outcome.unresolvable.keys), ["other"])
        XCTAssertTrue(outcome.failed.isEmpty)
    }

    func testReportsExpireAfterTheTTLAndLeasesWithThem() async {
        let clock = ManualClock()
        let extender = extender([.ml("a"): ResolvedVolume(id: "vol-a", logicalBytes: 100)], clock: clock, ttl: .seconds(60))
        extender.inventory.record(InventoryReport(node: "n1", volumes: [CachedVolume(volumeID: "vol-a", cachedBytes: 100, writer: true)]))
        clock.advance(.seconds(59))
        var scores = await extender.prioritize(pod: pod([("a", false)]), nodes: ["n1", "n2"])
        XCTAssertEqual(scores.map(\.score), [10, 0])
        XCTAssertEqual(extender.inventory.liveNodeCount, 1)
        clock.advance(.seconds(2))
        scores = await extender.prioritize(pod: pod([("a", false)]), nodes: ["n1", "n2"])
        XCTAssertEqual(scores.map(\.score), [0, 0])
        XCTAssertEqual(extender.inventory.liveNodeCount, 0)
        let outcome = await extender.filter(pod: pod([("a", false)]), nodes: ["n1", "n2"])
        XCTAssertEqual(outcome.passed, [0, 1], "an expired lease holder no longer pins writers")
    }

    func testANewReportReplacesTheNodesPreviousOne() {
        let clock = ManualClock()
        let inventory = InventoryStore(ttl: .seconds(60), now: { clock.now })
        inventory.record(InventoryReport(node: "n1", volumes: [CachedVolume(volumeID: "vol-a", cachedBytes: 5),
                                                              CachedVolume(volumeID: "vol-b", cachedBytes: 7)]))
        inventory.record(InventoryReport(node: "n1", volumes: [CachedVolume(volumeID: "vol-b", cachedBytes: 9)]))
        XCTAssertTrue(inventory.entries(for: "vol-a").isEmpty)
        XCTAssertEqual(inventory.entries(for: "vol-b")["n1"]?.cachedBytes, 9)
        // Sweeps drop expired nodes entirely (memory stays bounded).
        clock.advance(.seconds(61))
        inventory.record(InventoryReport(node: "n2", volumes: []))
        inventory.sweep()
        XCTAssertTrue(inventory.entries(for: "vol-b").isEmpty)
        XCTAssertEqual(inventory.liveNodeCount, 1)
    }
}
