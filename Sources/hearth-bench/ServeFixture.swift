import ArgumentParser
import CSIProto
import Foundation
import HearthRPC
import SwiftProtobuf

/// A real `hearth serve` on the embedded store in a scratch directory, for
/// the benchmarks that go through CSI as Kubernetes would.
final class ServeFixture {
    let directory: String
    private(set) var channel: RPCChannel
    private var server: Process
    private let hearth: String
    private let arguments: [String]

    init(hearth: String, maxVolumes: Int, label: String) async throws {
        directory = FileManager.default.temporaryDirectory.path + "/hearth-\(label)-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        self.hearth = hearth
        arguments = ["serve", "--endpoint", "unix://\(directory)/csi.sock", "--store", "file://\(directory)/store",
                     "--data-dir", "\(directory)/data", "--allowed-path", directory, "--node-id", "bench",
                     "--max-volumes", "\(maxVolumes)", "--log-level", "warning"]
        server = try Self.launch(hearth, arguments)
        channel = RPCChannel(endpoint: .unix(path: "\(directory)/csi.sock"))
        try await waitUntilServing()
    }

    private static func launch(_ hearth: String, _ arguments: [String]) throws -> Process {
        let server = Process()
        server.executableURL = URL(fileURLWithPath: hearth)
        server.arguments = arguments
        try server.run()
        return server
    }

    /// Starts a second `hearth serve` beside the running one, which hands it every
    /// staged volume and exits (a node plugin upgrade); returns once the new one serves.
    func upgradeServer() async throws {
        let old = server
        server = try Self.launch(hearth, arguments)
        let giveUp = ContinuousClock.now + .seconds(120)
        while old.isRunning && ContinuousClock.now < giveUp { try await Task.sleep(for: .milliseconds(10)) }
        guard !old.isRunning else { throw ValidationError("the old hearth serve did not hand over and exit") }
        await channel.close()
        channel = RPCChannel(endpoint: .unix(path: "\(directory)/csi.sock"))
        try await waitUntilServing()
    }

    /// Stops the server (its daemons commit and unmount) and removes the directory.
    func stop() async {
        await channel.close()
        server.terminate()
        server.waitUntilExit()
        try? FileManager.default.removeItem(atPath: directory)
    }

    func call<Req: SwiftProtobuf.Message, Resp: SwiftProtobuf.Message>(
        _ method: String, _ request: Req, _ type: Resp.Type
    ) async throws -> Resp {
        try await channel.call("/csi.v1.\(method)", request, as: type, timeout: .seconds(600))
    }

    private func waitUntilServing() async throws {
        for _ in 0..<300 {
            if (try? await channel.call("/csi.v1.Identity/Probe", Csi_V1_ProbeRequest(), as: Csi_V1_ProbeResponse.self, timeout: .seconds(1))) != nil {
                return
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw ValidationError("hearth serve did not answer")
    }

    static var mountCapability: Csi_V1_VolumeCapability {
        var capability = Csi_V1_VolumeCapability()
        capability.mount = Csi_V1_VolumeCapability.MountVolume()
        capability.accessMode.mode = .singleNodeWriter
        return capability
    }

    func createVolume(_ name: String, bytes: Int64, from snapshotID: String? = nil) async throws -> Csi_V1_Volume {
        var request = Csi_V1_CreateVolumeRequest()
        request.name = name
        request.capacityRange.requiredBytes = bytes
        request.volumeCapabilities = [Self.mountCapability]
        if let snapshotID { request.volumeContentSource.snapshot.snapshotID = snapshotID }
        return try await call("Controller/CreateVolume", request, Csi_V1_CreateVolumeResponse.self).volume
    }

    /// Stages the volume at `<dir>/staging/<id>` and returns that path.
    func stage(_ volumeID: String) async throws -> String {
        var request = Csi_V1_NodeStageVolumeRequest()
        request.volumeID = volumeID
        request.stagingTargetPath = "\(directory)/staging/\(volumeID)"
        request.volumeCapability = Self.mountCapability
        _ = try await call("Node/NodeStageVolume", request, Csi_V1_NodeStageVolumeResponse.self)
        return request.stagingTargetPath
    }

    func unstage(_ volumeID: String) async throws {
        var request = Csi_V1_NodeUnstageVolumeRequest()
        request.volumeID = volumeID
        request.stagingTargetPath = "\(directory)/staging/\(volumeID)"
        _ = try await call("Node/NodeUnstageVolume", request, Csi_V1_NodeUnstageVolumeResponse.self)
    }
}

/// p50 / p99 / max of samples in microseconds, as milliseconds.
struct LatencySummary {
    var p50: Double, p99: Double, max: Double
    init(_ samples: [Double]) {
        let sorted = samples.sorted()
        let at = { (q: Double) in sorted[min(sorted.count - 1, Int(Double(sorted.count) * q))] / 1000 }
        p50 = at(0.5)
        p99 = at(0.99)
        max = (sorted.last ?? 0) / 1000
    }
}
