import CSIProto
import Foundation
import HearthRPC
import XCTest
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// Issue 7: when the writing node cannot be reached to commit, the snapshot
/// pins the latest commit and a Warning Event on the VolumeSnapshot says so.
/// The API server is a stand-in that records what it is sent (Python's
/// http.server); csi-snapshotter's `--extra-create-metadata` parameters name
/// the VolumeSnapshot, and any other parameter is refused.
final class SnapshotEventTests: XCTestCase {
    func testUnreachableWriterYieldsAWarningEventOnTheVolumeSnapshot() async throws {
        let dir = FileManager.default.temporaryDirectory.path + "/hearth-events-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let port = try freeTCPPort()
        let api = try Self.recordingAPIServer(port: port, log: dir + "/posts.jsonl")
        defer {
            kill(api.processIdentifier, SIGKILL)
            api.waitUntilExit()
        }
        try await waitUntilAnswering(port)
        // No --control-listen on the node: it registers no address, so the commit cannot reach it.
        try await LocalCluster.run(storeArguments: ["--store", "file://\(dir)/store"],
                                   controllerArguments: ["--kubernetes-api", "http://127.0.0.1:\(port)"]) {
            try await scenario($0, posts: dir + "/posts.jsonl")
        }
        try? FileManager.default.removeItem(atPath: dir)
    }

    func scenario(_ c: LocalCluster, posts: String) async throws {
        let capability = mountCapability()
        let volume = try await c.createVolume("pvc-events")
        _ = try await c.publish(volume.volumeID, capability)  // the node holds the writer lease

        var snapshot = Csi_V1_CreateSnapshotRequest()
        snapshot.name = "snapshot-1234"
        snapshot.sourceVolumeID = volume.volumeID
        snapshot.parameters = ["csi.storage.k8s.io/volumesnapshot/name": "nightly",
                               "csi.storage.k8s.io/volumesnapshot/namespace": "team-a",
                               "csi.storage.k8s.io/volumesnapshotcontent/name": "snapcontent-1234",
                               "surprise": "x"]
        do {
            _ = try await c.controllerCall("CreateSnapshot", snapshot, as: Csi_V1_CreateSnapshotResponse.self)
            XCTFail("an unknown snapshot parameter was accepted")
        } catch let error as RPCError {
            XCTAssertEqual(error.code, .invalidArgument)
            XCTAssertTrue(error.message.contains("surprise"), error.message)
        }
        snapshot.parameters["surprise"] = nil
        let taken = try await c.controllerCall("CreateSnapshot", snapshot, as: Csi_V1_CreateSnapshotResponse.self).snapshot
        XCTAssertTrue(taken.readyToUse)

        try await waitUntil("the event is posted") { FileManager.default.fileExists(atPath: posts) }
        let lines = try String(contentsOfFile: posts, encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(lines.count, 1)
        struct Post: Decodable {
            var path: String
            var body: Event
        }
        struct Event: Decodable {
            struct Object: Decodable { var kind: String; var name: String; var namespace: String; var apiVersion: String }
            var kind: String
            var type: String
            var reason: String
            var message: String
            var involvedObject: Object
        }
        let post = try JSONDecoder().decode(Post.self, from: Data(lines[0].utf8))
        XCTAssertEqual(post.path, "/api/v1/namespaces/team-a/events")
        XCTAssertEqual(post.body.kind, "Event")
        XCTAssertEqual(post.body.type, "Warning")
        XCTAssertEqual(post.body.reason, "SnapshotOfLatestCommit")
        XCTAssertEqual(post.body.involvedObject.kind, "VolumeSnapshot")
        XCTAssertEqual(post.body.involvedObject.apiVersion, "snapshot.storage.k8s.io/v1")
        XCTAssertEqual(post.body.involvedObject.name, "nightly")
        XCTAssertEqual(post.body.involvedObject.namespace, "team-a")
        XCTAssertTrue(post.body.message.contains(volume.volumeID), post.body.message)
        XCTAssertTrue(post.body.message.contains("registered no address"), post.body.message)
    }

    /// Until something answers HTTP on the port (any status).
    func waitUntilAnswering(_ port: Int) async throws {
        for _ in 0..<100 {
            if (try? await URLSession.shared.data(from: URL(string: "http://127.0.0.1:\(port)/")!)) != nil { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw E2EError("the stand-in API server did not start")
    }

    /// Answers 201 to every POST and appends `{"path": ..., "body": ...}` to `log`.
    static func recordingAPIServer(port: Int, log: String) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", """
            import http.server, json, os, sys
            log, posts = sys.argv[2], []
            class Handler(http.server.BaseHTTPRequestHandler):
                def do_POST(self):
                    body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                    posts.append(json.dumps({"path": self.path, "body": body}))
                    with open(log + ".tmp", "w") as f: f.write("\\n".join(posts) + "\\n")
                    os.replace(log + ".tmp", log)  # readers see whole lines only
                    self.send_response(201); self.send_header("Content-Type", "application/json"); self.end_headers()
                    self.wfile.write(b"{}")
                def log_message(self, *args): pass
            http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
            """, String(port), log]
        try process.run()
        return process
    }
}
