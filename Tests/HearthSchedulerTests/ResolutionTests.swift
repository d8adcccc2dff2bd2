import AsyncHTTPClient
import Foundation
import HearthInventory
import HearthScheduler
import HearthStore
import Hummingbird
import Logging
import Synchronization
import XCTest

/// Claims → volumes through the store's PVC index, the Kubernetes API fallback for
/// statically provisioned volumes, and the node-side reporter.
final class ResolutionTests: XCTestCase {
    private func temporaryStore() throws -> (Catalog, URL) {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("hearth-sched-\(UUID().uuidString)")
        return (Catalog(try DirectoryStore(root: root)), root)
    }

    /// A stand-in API server: one PVC bound to a Hearth PV, one to another driver's,
    /// one unbound; requires the bearer token a service account would send.
    private func fakeAPIServer(volumeID: String, requests: Locked<[String]>) async throws -> (Int, Task<Void, any Error>) {
        let router = Router()
        router.get("api/v1/namespaces/:ns/persistentvolumeclaims/:name") { request, context -> Response in
            requests.withLock { $0.append(request.uri.path) }
            guard request.headers[.authorization] == "Bearer sa-token" else { return Response(status: .unauthorized) }
            let name = context.parameters.get("name") ?? ""
            let volumeName = ["static": "pv-static", "foreign": "pv-foreign"][name]
            guard name != "missing" else { return Response(status: .notFound) }
            let spec = volumeName.map { "{\"volumeName\":\"\($0)\"}" } ?? "{}"
            return Response(status: .ok, body: .init(byteBuffer: ByteBuffer(string: "{\"kind\":\"PersistentVolumeClaim\",\"spec\":\(spec)}")))
        }
        router.get("api/v1/persistentvolumes/:name") { request, context -> Response in
            requests.withLock { $0.append(request.uri.path) }
            let driver = context.parameters.get("name") == "pv-static" ? "hearth.csi.dev" : "nfs.csi.k8s.io"
            let body = "{\"kind\":\"PersistentVolume\",\"spec\":{\"csi\":{\"driver\":\"\(driver)\",\"volumeHandle\":\"\(volumeID)\"}}}"
            return Response(status: .ok, body: .init(byteBuffer: ByteBuffer(string: body)))
        }
        let (ports, sink) = AsyncStream<Int>.makeStream()
        var logger = Logger(label: "fake-apiserver")
        logger.logLevel = .critical
        let app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
                              onServerRunning: { sink.yield($0.localAddress?.port ?? 0) }, logger: logger)
        let task = Task { try await app.run() }
        var iterator = ports.makeAsyncIterator()
        return (await iterator.next() ?? 0, task)
    }

    func testClaimsResolveThroughThePVCIndexThenTheKubernetesAPI() async throws {
        let (catalog, root) = try temporaryStore()
        defer { try? FileManager.default.removeItem(at: root) }
        let provisioned = try await catalog.createVolume(name: "pvc-1234", capacityBytes: 1 << 30,
                                                         pvc: PVCReference(namespace: "ml", name: "data"))
        let static_ = try await catalog.createVolume(name: "static-volume", capacityBytes: 1 << 20)
        let requests = Locked<[String]>([])
        let (port, server) = try await fakeAPIServer(volumeID: static_.id, requests: requests)
        let kubernetes = KubernetesClient(baseURL: "http://127.0.0.1:\(port)", token: { "sa-token" })
        let resolver = CatalogVolumeResolver(catalog: catalog, kubernetes: kubernetes)

        let fromIndex = try await resolver.volume(for: .ml("data"))
        XCTAssertEqual(fromIndex, ResolvedVolume(id: provisioned.id, logicalBytes: 0))
        XCTAssertTrue(requests.withLock { $0.isEmpty }, "the index answered; the API server was not asked")

        let fromAPI = try await resolver.volume(for: .ml("static"))
        XCTAssertEqual(fromAPI, ResolvedVolume(id: static_.id, logicalBytes: 0))
        XCTAssertEqual(requests.withLock { $0 }, ["/api/v1/namespaces/ml/persistentvolumeclaims/static", "/api/v1/persistentvolumes/pv-static"])

        let foreign = try await resolver.volume(for: .ml("foreign"))
        XCTAssertNil(foreign)
        let unbound = try await resolver.volume(for: .ml("unbound"))
        XCTAssertNil(unbound)
        let missing = try await resolver.volume(for: .ml("missing"))
        XCTAssertNil(missing)

        // Answers are cached: asking again does not reach the API server.
        let before = requests.withLock { $0.count }
        _ = try await resolver.volume(for: .ml("static"))
        _ = try await resolver.volume(for: .ml("foreign"))
        XCTAssertEqual(requests.withLock { $0.count }, before)

        // An unauthorized API server is an error, which the extender scores as non-Hearth.
        let badToken = CatalogVolumeResolver(catalog: catalog, kubernetes: KubernetesClient(baseURL: "http://127.0.0.1:\(port)"))
        do {
            _ = try await badToken.volume(for: .ml("static"))
            XCTFail("expected an error")
        } catch let error as KubernetesError {
            XCTAssertEqual(error.status, 401)
        }
        let extender = LocalityExtender(inventory: InventoryStore(), resolver: badToken,
                                        leases: InventoryLeaseSource(inventory: InventoryStore()))
        let pod = Pod(metadata: ObjectMeta(name: "p", namespace: "ml"),
                      spec: PodSpec(volumes: [PodVolume(name: "v", persistentVolumeClaim: .init(claimName: "static"))]))
        let scores = await extender.prioritize(pod: pod, nodes: ["a"])
        XCTAssertEqual(scores, [HostPriority(host: "a", score: 0)])
        server.cancel()
    }

    func testInClusterClientNeedsTheServiceHostVariable() throws {
        XCTAssertNil(try KubernetesClient.inCluster(environment: [:]))
    }

    func testReporterSendsSnapshotsWithTheTokenAndOnChange() async throws {
        let harness = try await ExtenderHarness.start(resolver: StaticVolumeResolver([:]))
        let contents = Locked([CachedVolume(volumeID: "vol-a", cachedBytes: 10, logicalBytes: 20, writer: true)])
        let reporter = InventoryReporter(endpoint: "http://127.0.0.1:\(harness.port)/inventory", node: "node-7",
                                         token: { ExtenderHarness.token }, interval: .seconds(3600),
                                         minimumGap: .milliseconds(10)) { contents.withLock { $0 } }
        let ack = try await reporter.report()
        XCTAssertEqual(ack, InventoryAck(node: "node-7", volumes: 1, ttlSeconds: 90))
        XCTAssertEqual(harness.inventory.entries(for: "vol-a")["node-7"]?.writer, true)

        let running = Task { await reporter.run() }
        contents.withLock { $0 = [CachedVolume(volumeID: "vol-b", cachedBytes: 5)] }
        reporter.noteChange()
        var waited = 0
        while harness.inventory.entries(for: "vol-b").isEmpty && waited < 200 {
            try await Task.sleep(for: .milliseconds(20))
            waited += 1
        }
        XCTAssertEqual(harness.inventory.entries(for: "vol-b")["node-7"]?.cachedBytes, 5)
        XCTAssertTrue(harness.inventory.entries(for: "vol-a").isEmpty, "a report replaces the node's previous one")
        running.cancel()

        let wrongToken = InventoryReporter(endpoint: "http://127.0.0.1:\(harness.port)/inventory", node: "node-8",
                                           token: { "wrong" }) { [] }
        do {
            try await wrongToken.report()
            XCTFail("expected a rejection")
        } catch InventoryReportError.rejected(let status, _) {
            XCTAssertEqual(status, 403)
        }
        await harness.stop()
    }
}

/// Where writers may go: the controller's publication record first, the nodes'
/// reports when the store cannot be read.
final class LeaseSourceTests: XCTestCase {
    struct Unreachable: LeaseSource {
        struct Down: Error {}
        func writerLeaseHolder(volumeID: String) async throws -> String? { throw Down() }
    }

    func testPublicationRecordsAreTheLeaseAndInventoryTheFallback() async throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("hearth-lease-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        let publications = Publications(try DirectoryStore(root: root))
        let source = PublicationLeaseSource(publications: publications, cacheFor: .zero)
        let none = try await source.writerLeaseHolder(volumeID: "vol-a")
        XCTAssertNil(none)
        _ = try await publications.publish(PublishRequest(volumeID: "vol-a", nodeID: "node-1", writer: true,
                                                          singleNode: false, maxVolumesOnNode: 0))
        _ = try await publications.publish(PublishRequest(volumeID: "vol-a", nodeID: "node-2", writer: false,
                                                          singleNode: false, maxVolumesOnNode: 0))
        let holder = try await source.writerLeaseHolder(volumeID: "vol-a")
        XCTAssertEqual(holder, "node-1")

        let inventory = InventoryStore()
        inventory.record(InventoryReport(node: "node-9", volumes: [CachedVolume(volumeID: "vol-a", cachedBytes: 0, writer: true)]))
        // The store answers: its word is final, even "no holder" against a node's report.
        let combined = FallbackLeaseSource(primary: source, fallback: InventoryLeaseSource(inventory: inventory))
        let fromStore = try await combined.writerLeaseHolder(volumeID: "vol-a")
        XCTAssertEqual(fromStore, "node-1")
        try await publications.unpublish(volumeID: "vol-a", nodeID: "node-1")
        let released = try await combined.writerLeaseHolder(volumeID: "vol-a")
        XCTAssertNil(released)
        // The store is down: the reports stand in.
        let degraded = FallbackLeaseSource(primary: Unreachable(), fallback: InventoryLeaseSource(inventory: inventory))
        let fromReports = try await degraded.writerLeaseHolder(volumeID: "vol-a")
        XCTAssertEqual(fromReports, "node-9")

        // Through the extender: a writer of vol-a goes only where the store says.
        _ = try await publications.publish(PublishRequest(volumeID: "vol-a", nodeID: "node-2", writer: false,
                                                          singleNode: false, maxVolumesOnNode: 0))
        _ = try await publications.publish(PublishRequest(volumeID: "vol-a", nodeID: "node-3", writer: true,
                                                          singleNode: false, maxVolumesOnNode: 0))
        let extender = LocalityExtender(inventory: inventory,
                                        resolver: StaticVolumeResolver([.ml("a"): ResolvedVolume(id: "vol-a", logicalBytes: 1)]),
                                        leases: combined)
        let pod = Pod(metadata: ObjectMeta(name: "p", namespace: "ml"),
                      spec: PodSpec(volumes: [PodVolume(name: "v", persistentVolumeClaim: .init(claimName: "a"))]))
        let outcome = await extender.filter(pod: pod, nodes: ["node-2", "node-3", "node-9"])
        XCTAssertEqual(outcome.passed, [1])
        XCTAssertEqual(Set(outcome.unresolvable.keys), ["node-2", "node-9"])
    }
}
