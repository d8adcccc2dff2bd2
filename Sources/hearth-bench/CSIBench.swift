import ArgumentParser
import CSIProto
import Foundation

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
        let fixture = try await ServeFixture(hearth: hearth, maxVolumes: volumes + 1, label: "csibench")
        var create: [Double] = [], stage: [Double] = []
        for i in 0..<volumes {
            var t0 = ContinuousClock.now
            let volume = try await fixture.createVolume("bench-\(i)", bytes: 1 << 30)
            create.append((ContinuousClock.now - t0).microseconds)

            var publish = Csi_V1_NodePublishVolumeRequest()
            publish.volumeID = volume.volumeID
            publish.targetPath = "\(fixture.directory)/target/\(i)"
            publish.volumeCapability = ServeFixture.mountCapability
            t0 = ContinuousClock.now
            publish.stagingTargetPath = try await fixture.stage(volume.volumeID)
            _ = try await fixture.call("Node/NodePublishVolume", publish, Csi_V1_NodePublishVolumeResponse.self)
            stage.append((ContinuousClock.now - t0).microseconds)

            // Tear down before the next, so one daemon runs at a time.
            var unpublish = Csi_V1_NodeUnpublishVolumeRequest()
            unpublish.volumeID = volume.volumeID
            unpublish.targetPath = publish.targetPath
            _ = try await fixture.call("Node/NodeUnpublishVolume", unpublish, Csi_V1_NodeUnpublishVolumeResponse.self)
            try await fixture.unstage(volume.volumeID)
        }
        await fixture.stop()
        print("\(volumes) volumes on the embedded store, hearth serve (\(hearth))")
        print(pad("operation", 28) + pad("p50 ms", 10) + pad("p99 ms", 10) + "max ms")
        for (name, samples) in [("CreateVolume", create), ("NodeStage + NodePublish", stage)] {
            let summary = LatencySummary(samples)
            print(pad(name, 28) + pad(String(format: "%.2f", summary.p50), 10) + pad(String(format: "%.2f", summary.p99), 10)
                + String(format: "%.2f", summary.max))
        }
    }
}
