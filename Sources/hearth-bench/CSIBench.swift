import ArgumentParser
import CSIProto
import Foundation
import HearthRPC
import SwiftProtobuf

/// CreateVolume and NodeStage + NodePublish latency on the embedded store,
/// through a real `hearth serve` (its FUSE daemons included).
struct CSIBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "csi", abstract: "CreateVolume and NodeStage+NodePublish p50/p99 over N volumes on the embedded store.")

    @Option(help: "The hearth binary to serve CSI with.")
    var hearth = ".build/release/hearth"

    @Option(help: "Volumes to create and stage.")
    var volumes = 200

    func run() async throws {
        let dir = FileManager.default.temporaryDirectory.path + "/hearth-csibench-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let server = Process()
        server.executableURL = URL(fileURLWithPath: hearth)
        server.arguments = ["serve", "--endpoint", "unix://\(dir)/csi.sock", "--store", "file://\(dir)/store",
                            "--data-dir", "\(dir)/data", "--allowed-path", dir, "--node-id", "bench",
                            "--max-volumes", "\(volumes + 1)", "--log-level", "warning"]
        try server.run()
        defer { server.terminate(); server.waitUntilExit() }
        let channel = RPCChannel(endpoint: .unix(path: "\(dir)/csi.sock"))
        try await waitUntilServing(channel)

        var capability = Csi_V1_VolumeCapability()
        capability.mount = Csi_V1_VolumeCapability.MountVolume()
        capability.accessMode.mode = .singleNodeWriter
        var create: [Double] = [], stage: [Double] = []
        for i in 0..<volumes {
            var request = Csi_V1_CreateVolumeRequest()
            request.name = "bench-\(i)"
            request.capacityRange.requiredBytes = 1 << 30
            request.volumeCapabilities = [capability]
            var t0 = ContinuousClock.now
            let volume = try await call(channel, "Controller/CreateVolume", request, Csi_V1_CreateVolumeResponse.self).volume
            create.append((ContinuousClock.now - t0).microseconds)

            var stageRequest = Csi_V1_NodeStageVolumeRequest()
            stageRequest.volumeID = volume.volumeID
            stageRequest.stagingTargetPath = "\(dir)/staging/\(i)"
            stageRequest.volumeCapability = capability
            var publish = Csi_V1_NodePublishVolumeRequest()
            publish.volumeID = volume.volumeID
            publish.stagingTargetPath = stageRequest.stagingTargetPath
            publish.targetPath = "\(dir)/target/\(i)"
            publish.volumeCapability = capability
            t0 = ContinuousClock.now
            _ = try await call(channel, "Node/NodeStageVolume", stageRequest, Csi_V1_NodeStageVolumeResponse.self)
            _ = try await call(channel, "Node/NodePublishVolume", publish, Csi_V1_NodePublishVolumeResponse.self)
            stage.append((ContinuousClock.now - t0).microseconds)

            // Tear down before the next, so one daemon runs at a time.
            var unpublish = Csi_V1_NodeUnpublishVolumeRequest()
            unpublish.volumeID = volume.volumeID
            unpublish.targetPath = publish.targetPath
            _ = try await call(channel, "Node/NodeUnpublishVolume", unpublish, Csi_V1_NodeUnpublishVolumeResponse.self)
            var unstage = Csi_V1_NodeUnstageVolumeRequest()
            unstage.volumeID = volume.volumeID
            unstage.stagingTargetPath = stageRequest.stagingTargetPath
            _ = try await call(channel, "Node/NodeUnstageVolume", unstage, Csi_V1_NodeUnstageVolumeResponse.self)
        }
        await channel.close()
        print("\(volumes) volumes on the embedded store, hearth serve (\(hearth))")
        print(pad("operation", 28) + pad("p50 ms", 10) + pad("p99 ms", 10) + "max ms")
        for (name, samples) in [("CreateVolume", create), ("NodeStage + NodePublish", stage)] {
            let sorted = samples.sorted()
            let p = { (q: Double) in sorted[min(sorted.count - 1, Int(Double(sorted.count) * q))] / 1000 }
            print(pad(name, 28) + pad(String(format: "%.2f", p(0.5)), 10) + pad(String(format: "%.2f", p(0.99)), 10)
                + String(format: "%.2f", sorted.last! / 1000))
        }
    }

    func call<Req: SwiftProtobuf.Message, Resp: SwiftProtobuf.Message>(
        _ channel: RPCChannel, _ method: String, _ request: Req, _ type: Resp.Type
    ) async throws -> Resp {
        try await channel.call("/csi.v1.\(method)", request, as: type, timeout: .seconds(60))
    }

    func waitUntilServing(_ channel: RPCChannel) async throws {
        for _ in 0..<300 {
            if (try? await channel.call("/csi.v1.Identity/Probe", Csi_V1_ProbeRequest(), as: Csi_V1_ProbeResponse.self, timeout: .seconds(1))) != nil {
                return
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw ValidationError("hearth serve did not answer")
    }
}
