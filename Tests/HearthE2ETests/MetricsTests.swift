import CSIProto
import Foundation
import HearthRPC
import XCTest
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// `--metrics-listen`: a plugin's /metrics counts every gRPC call by method
/// and status and shows its volumes' daemons; Prometheus's own text parser
/// (Python prometheus-client) reads it.
final class MetricsTests: XCTestCase {
    func testServeExportsCallsAndDaemonsToPrometheus() async throws {
        let dir = FileManager.default.temporaryDirectory.path + "/hearth-metrics-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let port = try freeTCPPort()
        let server = try LocalCluster.start(
            ["serve", "--endpoint", "unix://\(dir)/csi.sock", "--store", "file://\(dir)/store", "--data-dir", "\(dir)/data",
             "--allowed-path", dir, "--node-id", "metrics-node", "--metrics-listen", "127.0.0.1:\(port)", "--log-level", "warning"],
            log: dir + "/serve.log", environment: [:])
        let channel = RPCChannel(endpoint: .unix(path: "\(dir)/csi.sock"))
        var stagedVolume = ""
        do {
            try await waitUntil("hearth serve answers", within: .seconds(30)) { FileManager.default.fileExists(atPath: "\(dir)/csi.sock") }
            let capability = mountCapability()
            var create = Csi_V1_CreateVolumeRequest()
            create.name = "pvc-metrics"
            create.volumeCapabilities = [capability]
            let volume = try await channel.call("/csi.v1.Controller/CreateVolume", create, as: Csi_V1_CreateVolumeResponse.self,
                                                timeout: .seconds(30)).volume
            _ = try await channel.call("/csi.v1.Controller/CreateVolume", create, as: Csi_V1_CreateVolumeResponse.self)
            create.name = ""
            do {
                _ = try await channel.call("/csi.v1.Controller/CreateVolume", create, as: Csi_V1_CreateVolumeResponse.self)
                XCTFail("a nameless CreateVolume succeeded")
            } catch let error as RPCError {
                XCTAssertEqual(error.code, .invalidArgument)
            }
            var stage = Csi_V1_NodeStageVolumeRequest()
            stage.volumeID = volume.volumeID
            stage.stagingTargetPath = dir + "/staging"
            stage.volumeCapability = capability
            _ = try await channel.call("/csi.v1.Node/NodeStageVolume", stage, as: Csi_V1_NodeStageVolumeResponse.self, timeout: .seconds(60))
            stagedVolume = volume.volumeID
            try writeDurably(Data("counted".utf8), to: dir + "/staging/file")
            XCTAssertEqual(FileManager.default.contents(atPath: dir + "/staging/file"), Data("counted".utf8))

            let samples = try await scrape(port)
            func value(_ name: String, _ labels: [String: String]) -> Double? {
                samples.first { sample in
                    sample.name == name && labels.allSatisfy { key, value in sample.labels[key] == value }
                }?.value
            }
            XCTAssertEqual(value("hearth_grpc_calls_total", ["method": "/csi.v1.Controller/CreateVolume", "code": "OK"]), 2)
            XCTAssertEqual(value("hearth_grpc_calls_total", ["method": "/csi.v1.Controller/CreateVolume", "code": "INVALID_ARGUMENT"]), 1)
            XCTAssertEqual(value("hearth_grpc_call_duration_seconds_count", ["method": "/csi.v1.Controller/CreateVolume"]), 3)
            XCTAssertEqual(value("hearth_grpc_calls_total", ["method": "/csi.v1.Node/NodeStageVolume", "code": "OK"]), 1)
            XCTAssertEqual(value("hearth_node_volumes_staged", [:]), 1)
            XCTAssertEqual(value("hearth_node_daemon_up", ["volume": volume.volumeID]), 1)
            XCTAssertEqual(value("hearth_node_daemon_restarts_total", ["volume": volume.volumeID]), 0)
            // The daemon's own counters, asked over its control socket at scrape time.
            let created = value("hearth_fuse_operations_total", ["volume": volume.volumeID, "op": "create"]) ?? 0
            XCTAssertGreaterThanOrEqual(created, 1)
            XCTAssertEqual(value("hearth_fuse_operation_duration_seconds_count", ["volume": volume.volumeID, "op": "create"]), created)
            XCTAssertEqual(value("hearth_fuse_operation_duration_seconds_bucket", ["volume": volume.volumeID, "op": "create", "le": "+Inf"]), created)
            XCTAssertGreaterThanOrEqual(value("hearth_fuse_operations_total", ["volume": volume.volumeID, "op": "fsync"]) ?? 0, 1)
            XCTAssertNotNil(value("hearth_cache_dirty_bytes", ["volume": volume.volumeID]))
            XCTAssertNotNil(value("hearth_store_uploaded_bytes_total", ["volume": volume.volumeID]))
        } catch {
            XCTFail("\(error)\n\((try? String(contentsOfFile: dir + "/serve.log", encoding: .utf8)) ?? "")")
        }
        if !stagedVolume.isEmpty {
            var unstage = Csi_V1_NodeUnstageVolumeRequest()
            unstage.volumeID = stagedVolume
            unstage.stagingTargetPath = dir + "/staging"
            _ = try? await channel.call("/csi.v1.Node/NodeUnstageVolume", unstage, as: Csi_V1_NodeUnstageVolumeResponse.self, timeout: .seconds(60))
        }
        await channel.close()
        XCTAssertTrue(terminateAndWait(server), "hearth serve did not exit within 60 s of SIGTERM:\n\((try? String(contentsOfFile: dir + "/serve.log", encoding: .utf8)) ?? "")")
        try? FileManager.default.removeItem(atPath: dir)
    }

    struct Sample: Decodable {
        var name: String
        var labels: [String: String]
        var value: Double
    }

    /// GET /metrics, parsed by prometheus_client (which rejects malformed text).
    func scrape(_ port: Int) async throws -> [Sample] {
        let (body, response) = try await URLSession.shared.data(from: URL(string: "http://127.0.0.1:\(port)/metrics")!)
        XCTAssertEqual((response as? HTTPURLResponse)?.statusCode, 200)
        let parser = Process()
        parser.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        parser.arguments = ["python3", "-c", """
            import json, sys
            from prometheus_client.parser import text_string_to_metric_families
            out = [{"name": s.name, "labels": s.labels, "value": s.value}
                   for f in text_string_to_metric_families(sys.stdin.read()) for s in f.samples]
            print(json.dumps(out))
            """]
        let input = Pipe(), output = Pipe()
        parser.standardInput = input
        parser.standardOutput = output
        try parser.run()
        input.fileHandleForWriting.write(body)
        try input.fileHandleForWriting.close()
        let parsed = output.fileHandleForReading.readDataToEndOfFile()
        parser.waitUntilExit()
        guard parser.terminationStatus == 0 else {
            throw E2EError("prometheus_client could not parse /metrics:\n\(String(decoding: body, as: UTF8.self))")
        }
        return try JSONDecoder().decode([Sample].self, from: parsed)
    }
}
