import Foundation
import HearthInventory
import HearthScheduler
import HearthStore
import XCTest

/// What the HTTP surface promises: authentication, 4xx with a message for every bad
/// input (never a crash), body limits, concurrency, health and metrics.
final class HTTPBehaviourTests: XCTestCase {
    static let resolver = StaticVolumeResolver([.ml("data"): ResolvedVolume(id: "vol-data", logicalBytes: 100)])

    func testInventoryNeedsTheRightToken() async throws {
        let harness = try await ExtenderHarness.start(resolver: Self.resolver)
        let body = try JSONEncoder().encode(InventoryReport(node: "n1", volumes: [CachedVolume(volumeID: "vol-data", cachedBytes: 100)]))
        let missing = try await harness.post("inventory", body)
        XCTAssertEqual(missing.status, 401)
        XCTAssertTrue(missing.text.contains("Authorization: Bearer"), missing.text)
        let notBearer = try await harness.post("inventory", body, headers: [("Authorization", "Basic dXNlcjpwYXNz")])
        XCTAssertEqual(notBearer.status, 401)
        let wrong = try await harness.post("inventory", body, headers: [("Authorization", "Bearer nope")])
        XCTAssertEqual(wrong.status, 403)
        XCTAssertTrue(wrong.text.contains("token"), wrong.text)
        let prefix = try await harness.post("inventory", body, headers: [("Authorization", "Bearer \(ExtenderHarness.token.dropLast())")])
        XCTAssertEqual(prefix.status, 403)
        XCTAssertEqual(harness.inventory.liveNodeCount, 0, "refused reports change nothing")
        let good = try await harness.report("n1", [CachedVolume(volumeID: "vol-data", cachedBytes: 100)])
        let ack = try good.decode(InventoryAck.self)
        XCTAssertEqual(ack, InventoryAck(node: "n1", volumes: 1, ttlSeconds: 90))
        XCTAssertEqual(harness.inventory.liveNodeCount, 1)
        await harness.stop()
    }

    func testNoConfiguredTokenRefusesEveryReport() async throws {
        let harness = try await ExtenderHarness.start(resolver: Self.resolver, token: nil)  // Secret missing
        let empty = try await harness.post("inventory", "{}", headers: [("Authorization", "Bearer ")])
        XCTAssertEqual(empty.status, 401)
        let any = try await harness.post("inventory", #"{"node":"n1","volumes":[]}"#,
                                         headers: [("Authorization", "Bearer \(ExtenderHarness.token)")])
        XCTAssertEqual(any.status, 403)
        await harness.stop()
    }

    func testBadInventoryReportsAre400WithAMessage() async throws {
        let harness = try await ExtenderHarness.start(resolver: Self.resolver)
        let auth = [("Authorization", "Bearer \(ExtenderHarness.token)")]
        let cases: [(String, String)] = [
            ("{", "malformed JSON"),
            (#"{"node":"n1","volumes":[{"volumeID":"vol-a","cachedBytes":"many","logicalBytes":0,"writer":false}]}"#, "wrong type at volumes[0].cachedBytes"),
            (#"{"node":"n1"}"#, "missing key volumes"),
            (#"{"node":"","volumes":[]}"#, "node name"),
            (#"{"node":"n1","volumes":[{"volumeID":"../../etc","cachedBytes":1,"logicalBytes":0,"writer":false}]}"#, "invalid volume id"),
            (#"{"node":"n1","volumes":[{"volumeID":"vol-a","cachedBytes":-1,"logicalBytes":0,"writer":false}]}"#, "negative"),
        ]
        for (body, message) in cases {
            let reply = try await harness.post("inventory", body, headers: auth)
            XCTAssertEqual(reply.status, 400, body)
            XCTAssertTrue(reply.text.contains(message), "\(body) → \(reply.text)")
        }
        await harness.stop()
    }

    func testMalformedAndMistypedExtenderArgsAre400WithAMessage() async throws {
        let harness = try await ExtenderHarness.start(resolver: Self.resolver)
        let pod = GoPayloads.pod(claims: [("data", "data", false)])
        let cases: [(String, String)] = [
            ("", "malformed JSON"),
            ("not json", "malformed JSON"),
            (#"{"Pod":"#, "malformed JSON"),
            ("[]", "wrong type at top level"),
            (#"{"Pod":{"metadata":{}},"NodeNames":"node-a"}"#, "wrong type at NodeNames"),
            (#"{"Pod":{"metadata":{}},"NodeNames":[1,2]}"#, "wrong type at NodeNames[0]"),
            (#"{"Pod":{"metadata":{"annotations":{"a":1}}},"NodeNames":[]}"#, "wrong type at Pod.metadata.annotations.a"),
            (#"{"Pod":{"metadata":{},"spec":{"volumes":[{"name":"v","persistentVolumeClaim":{"claimName":"c","readOnly":"yes"}}]}},"NodeNames":[]}"#,
             "wrong type at Pod.spec.volumes[0].persistentVolumeClaim.readOnly"),
            (#"{"Pod":{"metadata":{}},"Nodes":{"metadata":{},"items":[{"metadata":{}}]}}"#, "Nodes.items[0]"),
            (#"{"Pod":null,"NodeNames":["a"]}"#, "Pod is required"),
            ("{\"Pod\":\(pod),\"Nodes\":null,\"NodeNames\":null}", "needs Nodes or NodeNames"),
        ]
        for verb in ["filter", "prioritize"] {
            for (body, message) in cases {
                let reply = try await harness.post(verb, body)
                XCTAssertEqual(reply.status, 400, "\(verb) \(body)")
                let error = (try? reply.json() as? [String: String])?["error"] ?? ""
                XCTAssertTrue(error.contains(message), "\(verb) \(body) → \(reply.text)")
            }
        }
        // Still serving after all of that.
        let ok = try await harness.post("prioritize", GoPayloads.argsWithNames(pod: pod, nodes: ["a"]))
        XCTAssertEqual(ok.status, 200, ok.text)
        await harness.stop()
    }

    func testHugeBodiesAre413WithAMessage() async throws {
        let harness = try await ExtenderHarness.start(resolver: Self.resolver, maxExtenderBody: 64 << 10, maxInventoryBody: 16 << 10)
        let pod = GoPayloads.pod(claims: [("data", "data", false)])
        let huge = GoPayloads.argsWithNames(pod: pod, nodes: (0..<10_000).map { "node-\($0)" })
        for verb in ["filter", "prioritize"] {
            let reply = try await harness.post(verb, huge)
            XCTAssertEqual(reply.status, 413, verb)
            XCTAssertTrue(reply.text.contains("exceeds the limit of 65536 bytes"), reply.text)
        }
        let bigReport = InventoryReport(node: "n1", volumes: (0..<1000).map { CachedVolume(volumeID: "vol-\($0)", cachedBytes: 1) })
        let reply = try await harness.post("inventory", try JSONEncoder().encode(bigReport),
                                           headers: [("Authorization", "Bearer \(ExtenderHarness.token)")])
        XCTAssertEqual(reply.status, 413)
        XCTAssertTrue(reply.text.contains("limit"), reply.text)
        let ok = try await harness.post("prioritize", GoPayloads.argsWithNames(pod: pod, nodes: ["a"]))
        XCTAssertEqual(ok.status, 200)
        await harness.stop()
    }

    func testManyConcurrentRequestsAllAnswerCorrectly() async throws {
        let harness = try await ExtenderHarness.start(resolver: Self.resolver)
        try await harness.report("node-1", [CachedVolume(volumeID: "vol-data", cachedBytes: 50)])
        let pod = GoPayloads.pod(claims: [("data", "data", false)])
        let names = (0..<200).map { "node-\($0)" }
        let body = GoPayloads.argsWithNames(pod: pod, nodes: names)
        let nodesBody = GoPayloads.argsWithNodes(pod: pod, nodes: Array(names.prefix(20)))
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<300 {
                group.addTask {
                    switch index % 4 {
                    case 0:
                        let list = try await harness.post("prioritize", body).decode([HostPriority].self)
                        XCTAssertEqual(list.count, 200)
                        XCTAssertEqual(list[1], HostPriority(host: "node-1", score: 5))
                        XCTAssertEqual(list.filter { $0.score != 0 }.count, 1)
                    case 1:
                        let result = try await harness.post("filter", body).decode(ExtenderFilterResult.self)
                        XCTAssertEqual(result.nodeNames, names)
                    case 2:
                        let result = try await harness.post("filter", nodesBody).decode(ExtenderFilterResult.self)
                        XCTAssertEqual(result.nodes?.items.map(\.name), Array(names.prefix(20)))
                    default:
                        try await harness.report("node-\(200 + index)", [CachedVolume(volumeID: "vol-other", cachedBytes: 1)])
                    }
                }
            }
            try await group.waitForAll()
        }
        XCTAssertEqual(harness.inventory.liveNodeCount, 76)
        await harness.stop()
    }

    func testHealthReadinessAndMetrics() async throws {
        let harness = try await ExtenderHarness.start(resolver: Self.resolver)
        let healthz = try await harness.get("healthz")
        XCTAssertEqual(healthz.status, 200)
        let readyz = try await harness.get("readyz")
        XCTAssertEqual(readyz.status, 200)
        try await harness.report("node-1", [CachedVolume(volumeID: "vol-data", cachedBytes: 100)])
        let pod = GoPayloads.pod(claims: [("data", "data", false)])
        _ = try await harness.post("prioritize", GoPayloads.argsWithNames(pod: pod, nodes: ["node-1", "node-2", "node-3"]))
        _ = try await harness.post("prioritize", "nope")
        _ = try await harness.post("inventory", "{}", headers: [("Authorization", "Bearer wrong")])
        let metrics = try await harness.get("metrics")
        XCTAssertEqual(metrics.status, 200)
        let text = metrics.text
        for line in [
            #"hearth_scheduler_requests_total{verb="prioritize",code="200"} 1"#,
            #"hearth_scheduler_requests_total{verb="prioritize",code="400"} 1"#,
            #"hearth_scheduler_scores_total{score="10"} 1"#,
            #"hearth_scheduler_scores_total{score="0"} 2"#,
            #"hearth_scheduler_inventory_reports_total{result="forbidden"} 1"#,
            #"hearth_scheduler_inventory_reports_total{result="accepted"} 1"#,
            "hearth_scheduler_inventory_nodes 1",
            #"hearth_scheduler_request_duration_seconds_count{verb="prioritize"} 2"#,
        ] {
            XCTAssertTrue(text.contains(line), "missing \(line) in\n\(text)")
        }
        await harness.stop()
    }

    func testExtenderOnlyListenerDoesNotServeInventory() async throws {
        let harness = try await ExtenderHarness.start(resolver: Self.resolver, routes: [.extender, .observability])
        let reply = try await harness.post("inventory", "{}", headers: [("Authorization", "Bearer \(ExtenderHarness.token)")])
        XCTAssertEqual(reply.status, 404)
        await harness.stop()
    }
}
