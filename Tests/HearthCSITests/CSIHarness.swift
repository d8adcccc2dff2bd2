import CSIProto
import Foundation
import HearthCSI
import HearthRPC
import HearthStore
import Logging
import SwiftProtobuf
import XCTest

/// A controller over a fresh directory store, served on a real unix socket
/// and reached through our gRPC client.
final class ControllerHarness: Sendable {
    let directory: String
    let store: DirectoryStore
    let server: RPCServer
    let channel: RPCChannel
    let socket: String

    init(settings: ControllerService.Settings = ControllerService.Settings()) throws {
        directory = FileManager.default.temporaryDirectory.path + "/hearth-csi-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        store = try DirectoryStore(root: URL(fileURLWithPath: directory + "/store"))
        var logger = Logger(label: "test.controller")
        logger.logLevel = .warning
        var routes = IdentityService(roles: [.controller]).routes
        routes.merge(ControllerService(store: store, settings: settings, logger: logger).routes)
        socket = directory + "/csi.sock"
        server = try RPCServer(endpoints: [.unix(path: socket)], handlers: routes.handlers, logger: logger)
        channel = RPCChannel(endpoint: .unix(path: socket))
    }

    func close() async {
        await channel.close()
        await server.shutdown(grace: .seconds(1))
        try? FileManager.default.removeItem(atPath: directory)
    }

    func controller<Req: SwiftProtobuf.Message, Resp: SwiftProtobuf.Message>(
        _ method: String, _ request: Req, as: Resp.Type = Resp.self
    ) async throws -> Resp {
        try await channel.call("/csi.v1.Controller/\(method)", request, as: Resp.self, timeout: .seconds(30))
    }

    /// A node as `hearth node` registers itself.
    func registerNode(_ id: String, maxVolumes: Int = 16) async throws {
        try await NodeRegistry(store).register(NodeRecord(id: id, maxVolumes: maxVolumes))
    }
}

func capability(_ mode: Csi_V1_VolumeCapability.AccessMode.Mode, block: Bool = false) -> Csi_V1_VolumeCapability {
    var c = Csi_V1_VolumeCapability()
    if block { c.block = Csi_V1_VolumeCapability.BlockVolume() } else { c.mount = Csi_V1_VolumeCapability.MountVolume() }
    c.accessMode.mode = mode
    return c
}

func createRequest(
    _ name: String, bytes: Int64 = 1 << 20, mode: Csi_V1_VolumeCapability.AccessMode.Mode = .singleNodeWriter,
    parameters: [String: String] = [:]
) -> Csi_V1_CreateVolumeRequest {
    var r = Csi_V1_CreateVolumeRequest()
    r.name = name
    r.capacityRange.requiredBytes = bytes
    r.volumeCapabilities = [capability(mode)]
    r.parameters = parameters
    return r
}

extension XCTestCase {
    /// Asserts the call fails with `code`; returns the message.
    @discardableResult
    func expectCode<T>(_ code: RPCCode, file: StaticString = #filePath, line: UInt = #line, _ body: () async throws -> T) async -> String {
        do {
            _ = try await body()
            XCTFail("expected \(code), the call succeeded", file: file, line: line)
        } catch let error as RPCError {
            XCTAssertEqual(error.code, code, error.message, file: file, line: line)
            return error.message
        } catch {
            XCTFail("expected \(code), got \(error)", file: file, line: line)
        }
        return ""
    }
}
