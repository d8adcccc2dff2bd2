import Foundation
import HearthRPC
import Logging
import Synchronization
import XCTest

/// A bytes-level test service covering every behaviour the RPC layer promises.
/// The Python interop client (Tests/Interop/rpc_checks.py) calls the same methods.
///
/// - `/test.Echo/Echo`: returns the request; request metadata comes back as
///   initial metadata, plus `trailer-echo` / `trailer-bin` trailing metadata.
/// - `/test.Echo/Sleep`: sleeps the milliseconds given as text, honouring cancellation.
/// - `/test.Echo/Deadline`: answers the milliseconds left before the deadline (or "none").
/// - `/test.Echo/Fail`: throws the status code given in `x-code` with message `x-message`.
/// - `/test.Echo/Big`: answers as many bytes as the request's text asks.
final class EchoServer: Sendable {
    let server: RPCServer
    let observed = Observations()

    final class Observations: Sendable {
        private let state = Mutex((cancelledWhileRunning: 0, started: 0, finished: 0))
        func started() { state.withLock { $0.started += 1 } }
        func finished() { state.withLock { $0.finished += 1 } }
        func cancelled() { state.withLock { $0.cancelledWhileRunning += 1 } }
        var cancelledWhileRunning: Int { state.withLock { $0.cancelledWhileRunning } }
        var running: Int { state.withLock { $0.started - $0.finished } }
    }

    init(endpoints: [RPCEndpoint], options: RPCServerOptions = RPCServerOptions()) throws {
        let observed = self.observed
        var routes = RPCRoutes()
        routes.raw("/test.Echo/Echo") { call in
            var trailing = RPCMetadata()
            trailing.add("trailer-echo", "done")
            trailing.add("trailer-bin", bytes: [0, 1, 2, 255, 254])
            return RPCServerResponse(call.message, initialMetadata: call.metadata, trailingMetadata: trailing)
        }
        routes.raw("/test.Echo/Sleep") { call in
            observed.started()
            defer { observed.finished() }
            let millis = Int(String(decoding: call.message, as: UTF8.self)) ?? 0
            do {
                try await Task.sleep(for: .milliseconds(millis))
            } catch {
                observed.cancelled()
                throw error
            }
            return RPCServerResponse(Array("slept \(millis)".utf8))
        }
        routes.raw("/test.Echo/Deadline") { call in
            guard let left = call.timeRemaining else { return RPCServerResponse(Array("none".utf8)) }
            let millis = left.components.seconds * 1000 + left.components.attoseconds / 1_000_000_000_000_000
            return RPCServerResponse(Array("\(millis)".utf8))
        }
        routes.raw("/test.Echo/Fail") { call in
            let code = RPCCode(wire: Int(call.metadata["x-code"] ?? "") ?? 2)
            var trailing = RPCMetadata()
            trailing.add("failure-detail-bin", bytes: [9, 8, 7])
            throw RPCError(code, call.metadata["x-message"] ?? "failed on purpose", trailingMetadata: trailing)
        }
        routes.raw("/test.Echo/Big") { call in
            let count = Int(String(decoding: call.message, as: UTF8.self)) ?? 0
            return RPCServerResponse([UInt8](repeating: 0x5a, count: count))
        }
        var logger = Logger(label: "test.rpc")
        logger.logLevel = .warning
        server = try RPCServer(endpoints: endpoints, handlers: routes.handlers, options: options, logger: logger)
    }

    /// The endpoint a client should dial (TCP port 0 resolved to the bound port).
    var dialEndpoint: RPCEndpoint {
        switch server.endpoints[0] {
        case .unix: server.endpoints[0]
        case .tcp(let host, _): .tcp(host: host, port: server.boundPorts[0])
        }
    }
}

/// A fresh, short socket path (sun_path holds 108 bytes).
func temporarySocketPath(_ name: String = "rpc") -> String {
    let dir = FileManager.default.temporaryDirectory.path
    return "\(dir)/hearth-\(name)-\(UUID().uuidString.prefix(8)).sock"
}

/// Both transports every behaviour is checked over.
func bothTransports() -> [(name: String, endpoint: RPCEndpoint)] {
    [("unix", .unix(path: temporarySocketPath())), ("tcp", .tcp(host: "127.0.0.1", port: 0))]
}

extension XCTestCase {
    /// Asserts that `body` throws an RPCError with `code`; returns it.
    @discardableResult
    func assertRPCError<T>(
        _ code: RPCCode, file: StaticString = #filePath, line: UInt = #line, _ body: () async throws -> T
    ) async -> RPCError? {
        do {
            _ = try await body()
            XCTFail("expected \(code), got success", file: file, line: line)
        } catch let error as RPCError {
            XCTAssertEqual(error.code, code, "message: \(error.message)", file: file, line: line)
            return error
        } catch {
            XCTFail("expected RPCError \(code), got \(error)", file: file, line: line)
        }
        return nil
    }
}
