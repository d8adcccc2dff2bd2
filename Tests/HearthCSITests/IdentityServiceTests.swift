import CSIProto
import Foundation
import HearthCSI
import HearthRPC
import XCTest

/// CSI Identity over a real socket, through our client and through grpcio
/// with stubs generated from proto/csi.proto (an implementation that is not ours).
final class IdentityServiceTests: XCTestCase {
    func startServer(_ identity: IdentityService) throws -> (RPCServer, String) {
        let path = FileManager.default.temporaryDirectory.path + "/hearth-id-\(UUID().uuidString.prefix(8)).sock"
        let server = try RPCServer(endpoints: [.unix(path: path)], handlers: identity.routes.handlers)
        return (server, path)
    }

    func testGetPluginInfoNamesTheDriverAndVersion() async throws {
        let (server, path) = try startServer(IdentityService(roles: [.controller, .node]))
        let channel = RPCChannel(endpoint: .unix(path: path))
        let info = try await channel.call(
            "/csi.v1.Identity/GetPluginInfo", Csi_V1_GetPluginInfoRequest(), as: Csi_V1_GetPluginInfoResponse.self)
        XCTAssertEqual(info.name, "hearth.csi.dev")
        XCTAssertEqual(info.vendorVersion, HearthVersion.current)
        XCTAssertFalse(info.manifest["grpc-core", default: ""].isEmpty)
        await channel.close()
        await server.shutdown(grace: .seconds(1))
    }

    func testCapabilitiesFollowTheRoles() async throws {
        func services(_ roles: IdentityService.Roles) async throws -> Set<Int> {
            let (server, path) = try startServer(IdentityService(roles: roles))
            let channel = RPCChannel(endpoint: .unix(path: path))
            let caps = try await channel.call(
                "/csi.v1.Identity/GetPluginCapabilities", Csi_V1_GetPluginCapabilitiesRequest(),
                as: Csi_V1_GetPluginCapabilitiesResponse.self)
            await channel.close()
            await server.shutdown(grace: .seconds(1))
            return Set(caps.capabilities.compactMap {
                if case .service(let s)? = $0.type { return s.type.rawValue }
                if case .volumeExpansion(let e)? = $0.type { return 100 + e.type.rawValue }
                return nil
            })
        }
        let controller = try await services([.controller, .groupController])
        XCTAssertEqual(controller, [1, 2, 3, 101])  // controller, topology, group controller, online expansion
        let node = try await services([.node])
        XCTAssertEqual(node, [2], "a node-only plugin must not claim the controller service")
    }

    func testProbeReportsReadinessAndFailures() async throws {
        struct StoreDown: Error {}
        for expected in [true, false] {
            let (server, path) = try startServer(IdentityService(roles: [.node], readiness: { expected }))
            let channel = RPCChannel(endpoint: .unix(path: path))
            let probe = try await channel.call("/csi.v1.Identity/Probe", Csi_V1_ProbeRequest(), as: Csi_V1_ProbeResponse.self)
            XCTAssertTrue(probe.hasReady)
            XCTAssertEqual(probe.ready.value, expected)
            await channel.close()
            await server.shutdown(grace: .seconds(1))
        }
        let (server, path) = try startServer(IdentityService(roles: [.node], readiness: { throw StoreDown() }))
        let channel = RPCChannel(endpoint: .unix(path: path))
        do {
            _ = try await channel.call("/csi.v1.Identity/Probe", Csi_V1_ProbeRequest(), as: Csi_V1_ProbeResponse.self)
            XCTFail("probe must fail when readiness throws")
        } catch let error as RPCError {
            XCTAssertEqual(error.code, .failedPrecondition)
        }
        await channel.close()
        await server.shutdown(grace: .seconds(1))
    }

    func testGrpcioClientWithGeneratedStubs() async throws {
        let (server, path) = try startServer(IdentityService(roles: [.controller]))
        let result = try await runPythonCheck("identity_checks.py", ["unix:\(path)"])
        XCTAssertEqual(result.status, 0, result.output)
        XCTAssertTrue(result.output.contains("ok identity"), result.output)
        let malformed = try await runPythonCheck("malformed_checks.py", ["unix:\(path)", "/csi.v1.Identity/GetPluginInfo"])
        XCTAssertEqual(malformed.status, 0, malformed.output)
        await server.shutdown(grace: .seconds(1))
    }
}

/// Runs a script from Tests/Interop with the Python that has grpcio.
func runPythonCheck(_ script: String, _ arguments: [String]) async throws -> (status: Int32, output: String) {
    let interop = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Interop")
    let python = ProcessInfo.processInfo.environment["HEARTH_PYTHON"] ?? "python3"
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = [python, interop.appendingPathComponent(script).path] + arguments
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    try process.run()
    let output = await withCheckedContinuation { (c: CheckedContinuation<Data, Never>) in
        DispatchQueue.global().async { c.resume(returning: pipe.fileHandleForReading.readDataToEndOfFile()) }
    }
    await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
        DispatchQueue.global().async { process.waitUntilExit(); c.resume() }
    }
    return (process.terminationStatus, String(decoding: output, as: UTF8.self))
}
