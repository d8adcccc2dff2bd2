import CSIProto
import Foundation
import XCTest
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// Issue 6's inventory, end to end with real processes: `hearth node` measures what
/// its cache holds of the volumes it served and reports it to a real `hearth
/// scheduler`, whose prioritize answer then prefers that node, before and after the
/// volume is unstaged. A token the scheduler does not accept gets the reports
/// refused, and the node stops attracting pods once its last report expires.
final class InventoryEndToEndTests: XCTestCase {
    static let node = "e2e-node"

    func testNodeReportsWhatItCachesAndPrioritizeFollows() async throws {
        let root = FileManager.default.temporaryDirectory.path + "/hearth-e2e-inv-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: root) }
        let store = ["--store", "file://\(root)/store"]
        let schedulerToken = root + "/scheduler-token"
        let nodeToken = root + "/node-token"
        try Data("first-token-\(UUID().uuidString)\n".utf8).write(to: URL(fileURLWithPath: schedulerToken))
        try FileManager.default.copyItem(atPath: schedulerToken, toPath: nodeToken)

        let inventoryPort = try freeTCPPort()
        let extenderPort = try freeTCPPort()
        let scheduler = try LocalCluster.start(
            ["scheduler", "--listen", "127.0.0.1:\(inventoryPort)", "--extender-listen", "127.0.0.1:\(extenderPort)",
             "--inventory-token-file", schedulerToken, "--inventory-ttl", "4", "--no-kubernetes-fallback",
             "--log-level", "warning"] + store,
            log: root + "/scheduler.log", environment: [:])
        defer { terminateAndWait(scheduler) }
        let http = HTTP(inventory: "http://127.0.0.1:\(inventoryPort)", extender: "http://127.0.0.1:\(extenderPort)")
        try await waitUntilAsync("the scheduler answers /healthz", within: .seconds(30)) {
            (try? await http.send("GET", http.inventory + "/healthz"))?.status == 200
        }

        let c = try await LocalCluster(storeArguments: store, nodeArguments: [
            "--inventory-url", http.inventory, "--inventory-token-file", nodeToken, "--inventory-interval", "1s",
        ])
        do {
            try await scenario(c, http: http, schedulerToken: schedulerToken, nodeToken: nodeToken)
        } catch {
            let schedulerLog = (try? String(contentsOfFile: root + "/scheduler.log", encoding: .utf8)) ?? ""
            XCTFail("\(error)\n\(c.logs())\n--- scheduler.log\n\(schedulerLog.suffix(3000))")
        }
        await c.stop()
    }

    func scenario(_ c: LocalCluster, http: HTTP, schedulerToken: String, nodeToken: String) async throws {
        // Reports need the token: none → 401, a wrong one → 403.
        let report = #"{"node":"intruder","volumes":[{"volumeID":"vol-x","cachedBytes":1,"logicalBytes":1,"writer":false}]}"#
        let missing = try await http.send("POST", http.inventory + "/inventory", body: report)
        XCTAssertEqual(missing.status, 401, missing.text)
        let wrong = try await http.send("POST", http.inventory + "/inventory", body: report, token: "not-the-token")
        XCTAssertEqual(wrong.status, 403, wrong.text)

        // A volume created as external-provisioner does (PVC e2e/data), written on the node.
        let capability = mountCapability()
        let volume = try await c.createVolume(
            "pvc-inventory", parameters: ["csi.storage.k8s.io/pvc/name": "data", "csi.storage.k8s.io/pvc/namespace": "e2e"])
        let context = try await c.publish(volume.volumeID, capability)
        let staging = c.kubelet + "/staging/\(volume.volumeID)"
        try await c.stage(volume.volumeID, staging, capability, context)
        let target = c.kubelet + "/pods/writer/mount"
        try await c.nodePublish(volume.volumeID, staging, target, capability, readOnly: false)
        let payload = Data((0..<(3 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31) })
        try writeDurably(payload, to: target + "/blob")

        // The node reports the volume; prioritize puts the pod where the bytes are.
        let pod = #"{"metadata":{"name":"reader","namespace":"e2e"},"spec":{"volumes":[{"name":"d","persistentVolumeClaim":{"claimName":"data"}}]}}"#
        let args = #"{"Pod":\#(pod),"Nodes":null,"NodeNames":["elsewhere","\#(Self.node)"]}"#
        func scores() async throws -> [String: Int] {
            let reply = try await http.send("POST", http.extender + "/prioritize", body: args)
            guard reply.status == 200, let list = try JSONSerialization.jsonObject(with: reply.body) as? [[String: Any]] else {
                throw E2EError("prioritize answered \(reply.status): \(reply.text)")
            }
            return Dictionary(uniqueKeysWithValues: list.map { ($0["Host"] as? String ?? "", $0["Score"] as? Int ?? -1) })
        }
        try await waitUntilAsync("prioritize scores the writer's node 10", within: .seconds(30)) {
            (try? await scores())?[Self.node] == 10
        }
        let staged = try await scores()
        XCTAssertEqual(staged, ["elsewhere": 0, Self.node: 10])

        // Unstaged: the bytes are still in the node's cache, and the node still says so
        // (several 1 s reports later, past the scheduler's 4 s TTL).
        var unpublish = Csi_V1_NodeUnpublishVolumeRequest()
        unpublish.volumeID = volume.volumeID
        unpublish.targetPath = target
        _ = try await c.nodeCall("NodeUnpublishVolume", unpublish, as: Csi_V1_NodeUnpublishVolumeResponse.self)
        try await c.unstage(volume.volumeID, staging)
        try await Task.sleep(for: .seconds(6))
        let unstaged = try await scores()
        XCTAssertEqual(unstaged, ["elsewhere": 0, Self.node: 10], "an unstaged volume's cached bytes still count")

        // The scheduler's token rotates and the node still has the old one: its reports
        // are refused, and once its last accepted one expires it attracts nothing.
        try Data("second-token-\(UUID().uuidString)".utf8).write(to: URL(fileURLWithPath: schedulerToken))
        try await waitUntilAsync("the node's refused reports expire", within: .seconds(40)) {
            (try? await scores())?[Self.node] == 0
        }
        XCTAssertTrue(c.logs().contains("rejected (403)"), "the node logs the refusal")
        XCTAssertFalse(c.logs().contains("second-token") || c.logs().contains("first-token"), "the token is never logged")
        // The node's Secret catches up (re-read for every report, no restart).
        try FileManager.default.removeItem(atPath: nodeToken)
        try FileManager.default.copyItem(atPath: schedulerToken, toPath: nodeToken)
        try await waitUntilAsync("the node's reports are accepted again", within: .seconds(20)) {
            (try? await scores())?[Self.node] == 10
        }
    }
}

/// A small HTTP client over URLSession for the scheduler's two listeners.
struct HTTP {
    let inventory: String
    let extender: String

    struct Reply {
        var status: Int
        var body: Data
        var text: String { String(decoding: body, as: UTF8.self) }
    }

    func send(_ method: String, _ url: String, body: String? = nil, token: String? = nil) async throws -> Reply {
        var request = URLRequest(url: URL(string: url)!)
        request.httpMethod = method
        request.timeoutInterval = 10
        if let body {
            request.httpBody = Data(body.utf8)
            request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        }
        if let token { request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization") }
        let (data, response) = try await URLSession.shared.data(for: request)
        return Reply(status: (response as? HTTPURLResponse)?.statusCode ?? 0, body: data)
    }
}

func waitUntilAsync(_ what: String, within bound: Duration, _ condition: () async -> Bool) async throws {
    let giveUp = ContinuousClock.now + bound
    while await !condition() {
        guard ContinuousClock.now < giveUp else { throw E2EError("timed out waiting until \(what)") }
        try await Task.sleep(for: .milliseconds(200))
    }
}
