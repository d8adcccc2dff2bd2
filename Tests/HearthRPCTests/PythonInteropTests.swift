import Foundation
import HearthRPC
import XCTest

/// An independent client (Python grpcio) against our server, over both transports.
final class PythonInteropTests: XCTestCase {
    func testGrpcioClientSeesEveryBehaviour() async throws {
        for (name, endpoint) in bothTransports() {
            let server = try EchoServer(endpoints: [endpoint])
            let target: String
            switch server.dialEndpoint {
            case .unix(let path): target = "unix:\(path)"
            case .tcp(let host, let port): target = "\(host):\(port)"
            }
            let result = try await runPython(script: "rpc_checks.py", arguments: [target])
            XCTAssertEqual(result.status, 0, "\(name): grpcio checks failed:\n\(result.output)")
            XCTAssertEqual(result.output.components(separatedBy: "\nok ").count + (result.output.hasPrefix("ok ") ? 0 : -1), 7,
                           "\(name): every check reported:\n\(result.output)")
            // The cancellation check must have reached the running handler.
            try await waitFor { server.observed.cancelledWhileRunning >= 1 }
            await server.server.shutdown(grace: .seconds(1))
        }
    }
}

/// Runs a script from Tests/Interop with the Python that has grpcio
/// (`$HEARTH_PYTHON`, else python3), returning its exit status and output.
func runPython(script: String, arguments: [String]) async throws -> (status: Int32, output: String) {
    let interop = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Interop")
    let python = ProcessInfo.processInfo.environment["HEARTH_PYTHON"] ?? "python3"
    return try await runProcess("/usr/bin/env", [python, interop.appendingPathComponent(script).path] + arguments)
}

/// Runs a program to completion without blocking the cooperative pool.
func runProcess(_ executable: String, _ arguments: [String]) async throws -> (status: Int32, output: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    try process.run()
    let output = await withCheckedContinuation { (c: CheckedContinuation<Data, Never>) in
        DispatchQueue.global().async { c.resume(returning: pipe.fileHandleForReading.readDataToEndOfFile()) }
    }
    await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
        DispatchQueue.global().async {
            process.waitUntilExit()
            c.resume()
        }
    }
    return (process.terminationStatus, String(decoding: output, as: UTF8.self))
}
