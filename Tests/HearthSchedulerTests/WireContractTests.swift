import Foundation
import HearthInventory
import HearthScheduler
import HearthStore
import NIOCore
import XCTest

/// The extender API exactly as kube-scheduler speaks it, both forms, over real HTTP.
final class WireContractTests: XCTestCase {
    static let resolver = StaticVolumeResolver([
        .ml("data-trainer-0"): ResolvedVolume(id: "vol-data", logicalBytes: 1000),
        .ml("models"): ResolvedVolume(id: "vol-models", logicalBytes: 3000),
    ])

    func testPrioritizeInNodeNamesFormAnswersABareHostPriorityArray() async throws {
        let harness = try await ExtenderHarness.start(resolver: Self.resolver)
        try await harness.report("node-a", [CachedVolume(volumeID: "vol-data", cachedBytes: 1000, logicalBytes: 1000),
                                            CachedVolume(volumeID: "vol-models", cachedBytes: 3000, logicalBytes: 3000)])
        try await harness.report("node-b", [CachedVolume(volumeID: "vol-models", cachedBytes: 1500, logicalBytes: 3000)])
        let pod = GoPayloads.pod(claims: [("data", "data-trainer-0", false), ("models", "models", true)])
        let reply = try await harness.post("prioritize", GoPayloads.argsWithNames(pod: pod, nodes: ["node-a", "node-b", "node-c"]))
        XCTAssertEqual(reply.status, 200, reply.text)
        let list = try XCTUnwrap(try reply.json() as? [[String: Any]], reply.text)
        XCTAssertEqual(list.map { $0["Host"] as? String }, ["node-a", "node-b", "node-c"])
        // node-b: 1500 of 4000 bytes = 37.5% → 3; node-c caches nothing → 0.
        XCTAssertEqual(list.map { ($0["Score"] as? NSNumber)?.int64Value }, [10, 3, 0])
        XCTAssertEqual(Set(list.flatMap(\.keys)), ["Host", "Score"])
        await harness.stop()
    }

    func testPrioritizeInNodesFormReadsNamesFromTheNodeList() async throws {
        let harness = try await ExtenderHarness.start(resolver: Self.resolver)
        try await harness.report("node-b", [CachedVolume(volumeID: "vol-data", cachedBytes: 1000, logicalBytes: 1000)])
        let pod = GoPayloads.pod(claims: [("data", "data-trainer-0", false), ("models", "models", true)])
        let reply = try await harness.post("prioritize", GoPayloads.argsWithNodes(pod: pod, nodes: ["node-a", "node-b"]))
        XCTAssertEqual(reply.status, 200, reply.text)
        let list = try reply.decode([HostPriority].self)
        XCTAssertEqual(list, [HostPriority(host: "node-a", score: 0), HostPriority(host: "node-b", score: 2)])
        await harness.stop()
    }

    func testFilterInNodeNamesFormAnswersNamesAndNullNodes() async throws {
        let harness = try await ExtenderHarness.start(resolver: Self.resolver)
        let pod = GoPayloads.pod(claims: [("data", "data-trainer-0", false)])
        let reply = try await harness.post("filter", GoPayloads.argsWithNames(pod: pod, nodes: ["node-a", "node-b"]))
        XCTAssertEqual(reply.status, 200, reply.text)
        let object = try XCTUnwrap(try reply.json() as? [String: Any])
        XCTAssertEqual(Set(object.keys), ["Nodes", "NodeNames", "FailedNodes", "FailedAndUnresolvableNodes", "Error"])
        XCTAssertTrue(object["Nodes"] is NSNull, reply.text)
        XCTAssertEqual(object["NodeNames"] as? [String], ["node-a", "node-b"])
        XCTAssertEqual((object["FailedNodes"] as? [String: String])?.count, 0)
        XCTAssertEqual(object["Error"] as? String, "")
        await harness.stop()
    }

    /// kube-scheduler uses the node objects filter returns: they must come back whole.
    func testFilterInNodesFormReturnsTheNodeObjectsUnchanged() async throws {
        let harness = try await ExtenderHarness.start(resolver: Self.resolver)
        try await harness.report("node-b", [CachedVolume(volumeID: "vol-data", cachedBytes: 1000, logicalBytes: 1000)])
        let pod = GoPayloads.pod(annotations: [LocalityRequirement.annotation: "100%"], claims: [("data", "data-trainer-0", false)])
        let reply = try await harness.post("filter", GoPayloads.argsWithNodes(pod: pod, nodes: ["node-a", "node-b", "node-c"]))
        XCTAssertEqual(reply.status, 200, reply.text)
        let object = try XCTUnwrap(try reply.json() as? [String: Any])
        XCTAssertTrue(object["NodeNames"] is NSNull, reply.text)
        let nodes = try XCTUnwrap(object["Nodes"] as? [String: Any])
        XCTAssertNotNil(nodes["metadata"] as? [String: Any])
        let items = try XCTUnwrap(nodes["items"] as? [[String: Any]])
        XCTAssertEqual(items.count, 1)
        let original = try JSONSerialization.jsonObject(with: Data(GoPayloads.node("node-b").utf8)) as! NSDictionary
        XCTAssertEqual(items[0] as NSDictionary, original)
        let failed = try XCTUnwrap(object["FailedNodes"] as? [String: String])
        XCTAssertEqual(Set(failed.keys), ["node-a", "node-c"])
        XCTAssertTrue(failed["node-a"]!.contains("caches 0% of the pod's Hearth volume bytes"), failed["node-a"]!)
        XCTAssertTrue(failed["node-a"]!.contains("asks for 100%"), failed["node-a"]!)
        await harness.stop()
    }

    func testGenericEphemeralVolumesAreClaimsNamedPodDashVolume() async throws {
        let resolver = StaticVolumeResolver([.ml("trainer-0-scratch"): ResolvedVolume(id: "vol-scratch", logicalBytes: 10)])
        let harness = try await ExtenderHarness.start(resolver: resolver)
        try await harness.report("node-a", [CachedVolume(volumeID: "vol-scratch", cachedBytes: 10)])
        let pod = GoPayloads.pod(claims: [], ephemeral: ["scratch"])
        let list = try await harness.post("prioritize", GoPayloads.argsWithNames(pod: pod, nodes: ["node-a", "node-b"]))
            .decode([HostPriority].self)
        XCTAssertEqual(list.map(\.score), [10, 0])
        await harness.stop()
    }

    func testFilterResultRoundTripsThroughTheWireTypes() throws {
        let result = ExtenderFilterResult(nodeNames: ["a"], failedNodes: ["b": "why"], failedAndUnresolvableNodes: ["c": "lease"])
        let text = String(decoding: try JSONEncoder().encode(result), as: UTF8.self)
        XCTAssertTrue(text.contains("\"Nodes\":null"), text)
        let back = try JSONDecoder().decode(ExtenderFilterResult.self, from: Data(text.utf8))
        XCTAssertEqual(back.nodeNames, ["a"])
        XCTAssertEqual(back.failedNodes, ["b": "why"])
        XCTAssertEqual(back.failedAndUnresolvableNodes, ["c": "lease"])
        // Go writes nil maps as null.
        let fromGo = try JSONDecoder().decode(ExtenderFilterResult.self, from: Data(
            #"{"Nodes":null,"NodeNames":["x"],"FailedNodes":null,"FailedAndUnresolvableNodes":null,"Error":""}"#.utf8))
        XCTAssertEqual(fromGo.failedNodes, [:])
    }
}

final class PriorityListEncodingTests: XCTestCase {
    func testDirectEncodingDecodesLikeJSONEncoderOutput() throws {
        let list = [HostPriority(host: "node-a", score: 10), HostPriority(host: "we\"ird\\name\u{1}\n", score: 0),
                    HostPriority(host: "nöde-ü", score: 7), HostPriority(host: "", score: -1)]
        let direct = HostPriority.listJSON(list)
        let decoded = try JSONDecoder().decode([HostPriority].self, from: Data(direct.readableBytesView))
        XCTAssertEqual(decoded, list)
        XCTAssertEqual(String(buffer: HostPriority.listJSON([])), "[]")
        XCTAssertEqual(String(buffer: HostPriority.listJSON([HostPriority(host: "n", score: 3)])), #"[{"Host":"n","Score":3}]"#)
        let reference = try JSONSerialization.jsonObject(with: try JSONEncoder().encode(list)) as! NSArray
        XCTAssertEqual(try JSONSerialization.jsonObject(with: Data(direct.readableBytesView)) as! NSArray, reference)
    }
}
