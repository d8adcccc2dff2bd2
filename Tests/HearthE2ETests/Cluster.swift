import CSIProto
import Foundation
import HearthMounts
import HearthRPC
import HearthTestSupport
import SwiftProtobuf
import XCTest

/// Hearth's roles as Kubernetes runs them, without Kubernetes: `hearth
/// controller` and `hearth node` as real processes on unix sockets, the node
/// starting real FUSE daemons; the test plays kubelet and the sidecars.
struct E2EError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

final class LocalCluster {
    let directory: String
    let kubelet: String
    var processes: [Process] = []
    let controller: RPCChannel
    /// The node plugin's socket; replaced with the plugin by ``replaceNode()``.
    private(set) var node: RPCChannel
    let nodeID = "e2e-node"
    /// How `hearth node` is started (again, for an upgrade).
    let nodeCommand: [String]
    let environment: [String: String]
    /// The running `hearth node`.
    private(set) var nodeProcess: Process

    /// `storeArguments`: how both roles open the store (`--store ...`).
    /// `commitPort`: the node serves its commit endpoint there (snapshots commit first).
    /// `nodeArguments`: more flags for `hearth node` (e.g. inventory reporting);
    /// `controllerArguments`: more flags for `hearth controller`.
    init(storeArguments: [String], environment: [String: String] = [:], commitPort: Int? = nil,
         nodeArguments: [String] = [], controllerArguments: [String] = []) async throws {
        directory = FileManager.default.temporaryDirectory.path + "/hearth-e2e-\(UUID().uuidString.prefix(8))"
        kubelet = directory + "/kubelet"
        try FileManager.default.createDirectory(atPath: kubelet, withIntermediateDirectories: true)
        let controllerSocket = directory + "/controller.sock"
        let nodeSocket = directory + "/node.sock"
        processes.append(try Self.start(
            ["controller", "--endpoint", "unix://\(controllerSocket)", "--log-level", "warning"] + storeArguments
                + controllerArguments,
            log: directory + "/controller.log", environment: environment))
        nodeCommand = ["node", "--endpoint", "unix://\(nodeSocket)", "--node-id", nodeID, "--data-dir", directory + "/data",
                       "--allowed-path", kubelet, "--cache-size", "256MiB", "--max-volumes", "8", "--log-level", "warning"]
            + (commitPort.map { ["--control-listen", "127.0.0.1:\($0)"] } ?? []) + nodeArguments + storeArguments
        self.environment = environment
        nodeProcess = try Self.start(nodeCommand, log: directory + "/node.log", environment: environment)
        processes.append(nodeProcess)
        controller = RPCChannel(endpoint: .unix(path: controllerSocket))
        node = RPCChannel(endpoint: .unix(path: nodeSocket))
        try await waitForSocket(controllerSocket)
        try await waitForSocket(nodeSocket)
    }

    /// The `hearth` binary built beside the test bundle.
    static var hearthBinary: String {
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("hearth").path
    }

    /// A new `hearth node` with the same flags, as a DaemonSet rolling update
    /// starts one beside the running pod: it takes the volumes over, the old one
    /// exits. Returns both processes once the new one answers on the socket.
    func replaceNode() async throws -> (old: Process, new: Process) {
        let old = nodeProcess
        let new = try Self.start(nodeCommand, log: directory + "/node-\(processes.count).log", environment: environment)
        processes.append(new)
        nodeProcess = new
        let giveUp = ContinuousClock.now + .seconds(60)
        while old.isRunning && ContinuousClock.now < giveUp { try await Task.sleep(for: .milliseconds(20)) }
        guard !old.isRunning else { throw E2EError("the old node plugin did not exit after the handover:\n\(logs())") }
        await node.close()
        guard case .unix(let path) = node.endpoint else { throw E2EError("node endpoint is not a unix socket") }
        node = RPCChannel(endpoint: .unix(path: path))
        try await waitForSocket(path)
        return (old, new)
    }

    static func start(_ arguments: [String], log: String, environment: [String: String]) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: hearthBinary)
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
        FileManager.default.createFile(atPath: log, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
        return process
    }

    func waitForSocket(_ path: String) async throws {
        let giveUp = ContinuousClock.now + .seconds(30)
        while ContinuousClock.now < giveUp {
            if FileManager.default.fileExists(atPath: path) {
                let probe = RPCChannel(endpoint: .unix(path: path))
                defer { Task { await probe.close() } }
                if (try? await probe.call("/csi.v1.Identity/Probe", Csi_V1_ProbeRequest(), as: Csi_V1_ProbeResponse.self, timeout: .seconds(2))) != nil {
                    return
                }
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw E2EError("the server at \(path) did not answer within 30 s:\n\(logs())")
    }

    func stop() async {
        await controller.close()
        await node.close()
        for process in processes { terminateAndWait(process) }
        // A failed run can leave mounts behind: detach them, deepest first.
        let table = ProcFile.read("/proc/self/mountinfo") ?? ""
        var leftovers: [String] = []
        for line in table.split(separator: "\n") {
            let fields = line.split(separator: " ")
            guard fields.count > 4 else { continue }
            let point = String(fields[4])
            if point.hasPrefix(directory + "/") { leftovers.append(point) }
        }
        for path in leftovers.sorted(by: { $0.count > $1.count }) { umount2(path, Int32(MNT_DETACH)) }
        try? FileManager.default.removeItem(atPath: directory)
    }

    func logs() -> String {
        (["controller.log", "node.log"] + (2..<max(2, processes.count)).map { "node-\($0).log" }).map { name in
            let text = (try? String(contentsOfFile: directory + "/" + name, encoding: .utf8)) ?? ""
            return "--- \(name)\n\(text.suffix(3000))"
        }.joined(separator: "\n")
    }

    func controllerCall<Req: SwiftProtobuf.Message, Resp: SwiftProtobuf.Message>(_ method: String, _ request: Req, as: Resp.Type = Resp.self) async throws -> Resp {
        try await controller.call("/csi.v1.Controller/\(method)", request, as: Resp.self, timeout: .seconds(60))
    }

    func nodeCall<Req: SwiftProtobuf.Message, Resp: SwiftProtobuf.Message>(_ method: String, _ request: Req, as: Resp.Type = Resp.self) async throws -> Resp {
        try await node.call("/csi.v1.Node/\(method)", request, as: Resp.self, timeout: .seconds(60))
    }
}

/// A filesystem volume's capability in `mode`, as kubelet and the sidecars send it.
func mountCapability(_ mode: Csi_V1_VolumeCapability.AccessMode.Mode = .singleNodeWriter) -> Csi_V1_VolumeCapability {
    var capability = Csi_V1_VolumeCapability()
    capability.mount = Csi_V1_VolumeCapability.MountVolume()
    capability.accessMode.mode = mode
    return capability
}

/// A fresh directory-store location for one test's cluster.
func temporaryStoreArguments() -> [String] {
    ["--store", "file://" + FileManager.default.temporaryDirectory.path + "/hearth-e2e-store-\(UUID().uuidString.prefix(8))"]
}

extension LocalCluster {
    /// Starts a cluster, runs `scenario` on it, reports a failure with the
    /// processes' logs, and stops it whatever happened.
    static func run(storeArguments: [String] = temporaryStoreArguments(), environment: [String: String] = [:],
                    commitPort: Int? = nil, nodeArguments: [String] = [], controllerArguments: [String] = [],
                    file: StaticString = #filePath, line: UInt = #line,
                    _ scenario: (LocalCluster) async throws -> Void) async throws {
        let cluster = try await LocalCluster(storeArguments: storeArguments, environment: environment, commitPort: commitPort,
                                             nodeArguments: nodeArguments, controllerArguments: controllerArguments)
        do {
            try await scenario(cluster)
        } catch {
            XCTFail("\(error)\n\(cluster.logs())", file: file, line: line)
        }
        await cluster.stop()
    }

    /// CreateVolume as external-provisioner sends it.
    func createVolume(_ name: String, bytes: Int64 = 64 << 20, parameters: [String: String] = [:],
                      secrets: [String: String] = [:], capability: Csi_V1_VolumeCapability = mountCapability()) async throws -> Csi_V1_Volume {
        var request = Csi_V1_CreateVolumeRequest()
        request.name = name
        request.capacityRange.requiredBytes = bytes
        request.volumeCapabilities = [capability]
        request.parameters = parameters
        request.secrets = secrets
        return try await controllerCall("CreateVolume", request, as: Csi_V1_CreateVolumeResponse.self).volume
    }

    /// NodeUnstageVolume as kubelet sends it.
    func unstage(_ volumeID: String, _ staging: String) async throws {
        var request = Csi_V1_NodeUnstageVolumeRequest()
        request.volumeID = volumeID
        request.stagingTargetPath = staging
        _ = try await nodeCall("NodeUnstageVolume", request, as: Csi_V1_NodeUnstageVolumeResponse.self)
    }
}

/// SIGTERM, then waits for the exit (SIGKILL after `seconds`, see ``waitForExit(_:by:)``).
/// True when it exited on its own.
@discardableResult
func terminateAndWait(_ process: Process, seconds: TimeInterval = 60) -> Bool {
    guard process.isRunning else { return true }
    process.terminate()
    return waitForExit(process, by: Date().addingTimeInterval(seconds))
}
