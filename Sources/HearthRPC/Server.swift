import CGRPC
import Foundation
import Logging
import Synchronization

/// What a handler receives: the request bytes and everything known about the call.
public struct RPCServerRequest: Sendable {
    public var method: String
    public var message: [UInt8]
    public var metadata: RPCMetadata
    /// When the client's deadline passes (nil: none). The call is cancelled
    /// then, and so is the handler's Task.
    public var deadline: ContinuousClock.Instant?
    public var peer: String

    public var timeRemaining: Duration? { deadline.map { $0 - .now } }
}

/// What a handler answers with (errors are thrown as `RPCError`).
public struct RPCServerResponse: Sendable {
    public var message: [UInt8]
    public var initialMetadata: RPCMetadata
    public var trailingMetadata: RPCMetadata

    public init(_ message: [UInt8], initialMetadata: RPCMetadata = RPCMetadata(), trailingMetadata: RPCMetadata = RPCMetadata()) {
        self.message = message
        self.initialMetadata = initialMetadata
        self.trailingMetadata = trailingMetadata
    }
}

/// A unary method's implementation. Runs in its own Task, which is cancelled
/// when the client cancels, the deadline passes or shutdown runs out of grace.
public typealias RPCHandler = @Sendable (RPCServerRequest) async throws -> RPCServerResponse

public struct RPCServerOptions: Sendable {
    public var maxReceiveMessageBytes = 4 * 1024 * 1024
    public var maxSendMessageBytes = 4 * 1024 * 1024
    /// Permissions given to unix socket files (CSI sockets are for kubelet only).
    public var socketMode: mode_t = 0o600
    /// Calls the server is ready to accept at once before the core queues them.
    public var pendingCallRequests = 32
    /// Threads draining the completion queue.
    public var pollers = 2
    public init() {}
}

/// A gRPC server over the C core serving unary methods by full name
/// (`/package.Service/Method`). Unknown methods answer UNIMPLEMENTED.
public final class RPCServer: Sendable {
    /// Destroyed once, at the end of `shutdown`.
    private let server: CoreHandle
    private let queue: CompletionQueue
    private let handlers: [String: RPCHandler]
    let logger: Logger
    let maxSendMessageBytes: Int
    /// The ports bound, in `endpoints` order (for `host:0` to learn its port).
    public let boundPorts: [Int]
    public let endpoints: [RPCEndpoint]
    private let state = Mutex(ServerState())
    private let stopped = OneShotEvent()

    private struct ServerState {
        var shuttingDown = false
        var calls: [ObjectIdentifier: ServerCall] = [:]
        var callsDrained: OneShotEvent?
    }

    /// Binds every endpoint (a stale unix socket is removed first, a live one
    /// is an error) and starts serving.
    public init(
        endpoints: [RPCEndpoint], handlers: [String: RPCHandler], options: RPCServerOptions = RPCServerOptions(),
        logger: Logger = Logger(label: "hearth.rpc")
    ) throws {
        GRPCRuntime.ensureInitialised()
        self.handlers = handlers
        self.logger = logger
        self.maxSendMessageBytes = options.maxSendMessageBytes
        self.endpoints = endpoints
        var args = hearth_channel_args()
        let channelArgs = hearth_channel_args_init(
            &args, Int32(clamping: options.maxReceiveMessageBytes), Int32(clamping: options.maxSendMessageBytes))
        let raw = grpc_server_create(channelArgs, nil)!
        queue = CompletionQueue(name: "rpc-server", pollers: options.pollers)
        grpc_server_register_completion_queue(raw, queue.pointer, nil)
        var ports: [Int] = []
        do {
            for endpoint in endpoints {
                if case .unix(let path) = endpoint { try UnixSocketFile.removeIfStale(path) }
                let credentials = grpc_insecure_server_credentials_create()
                let port = grpc_server_add_http2_port(raw, endpoint.coreAddress, credentials)
                grpc_server_credentials_release(credentials)
                guard port > 0 else { throw RPCError(.unavailable, "cannot listen on \(endpoint)") }
                if case .unix(let path) = endpoint { try UnixSocketFile.setMode(path, options.socketMode) }
                ports.append(Int(port))
            }
        } catch {
            grpc_server_destroy(raw)
            grpc_completion_queue_shutdown(queue.pointer)
            throw error
        }
        boundPorts = ports
        server = CoreHandle(raw: raw)
        grpc_server_start(raw)
        for _ in 0..<max(1, options.pendingCallRequests) { requestCall() }
        logger.info("gRPC server listening", metadata: ["endpoints": "\(endpoints.map(\.description))"])
    }

    /// Asks the core for the next incoming call.
    private func requestCall() {
        let call = ServerCall(server: self)
        let tag = CompletionTag.retained { [self] success in
            guard success else { call.abandon(); return }
            if !state.withLock({ $0.shuttingDown }) { requestCall() }
            track(call)
            call.begin()
        }
        let result = grpc_server_request_call(
            server.raw, call.callSlot, call.details, call.requestMetadata, queue.pointer, queue.pointer, tag)
        if result != GRPC_CALL_OK {
            CompletionTag.discard(tag)
            call.abandon()
            logger.error("grpc_server_request_call failed: \(String(cString: grpc_call_error_to_string(result)))")
        }
    }

    func handler(for method: String) -> RPCHandler? { handlers[method] }

    private func track(_ call: ServerCall) {
        state.withLock { $0.calls[ObjectIdentifier(call)] = call }
    }

    func finished(_ call: ServerCall) {
        let drained = state.withLock { s -> OneShotEvent? in
            s.calls[ObjectIdentifier(call)] = nil
            return s.calls.isEmpty ? s.callsDrained : nil
        }
        drained?.signal()
    }

    /// Stops accepting calls, lets calls in flight finish for up to `grace`,
    /// then cancels the rest (their handlers' Tasks too) and releases everything.
    public func shutdown(grace: Duration) async {
        let first = state.withLock { s -> Bool in
            defer { s.shuttingDown = true }
            return !s.shuttingDown
        }
        guard first else { await stopped.wait(); return }
        let notified = OneShotEvent()
        let tag = CompletionTag.retained { _ in notified.signal() }
        grpc_server_shutdown_and_notify(server.raw, queue.pointer, tag)
        let drained = OneShotEvent()
        let idle = state.withLock { s -> Bool in
            s.callsDrained = drained
            return s.calls.isEmpty
        }
        if idle { drained.signal() }
        let giveUp = ContinuousClock.now + grace
        let notifiedInTime = await notified.wait(timeout: grace)
        let drainedInTime = await drained.wait(timeout: max(.zero, giveUp - .now))
        let calm = notifiedInTime && drainedInTime
        if !calm {
            logger.warning("shutdown grace ran out; cancelling calls in flight")
            grpc_server_cancel_all_calls(server.raw)
            for call in state.withLock({ Array($0.calls.values) }) { call.cancelHandler() }
        }
        await notified.wait()
        await drained.wait()
        grpc_server_destroy(server.raw)
        await queue.shutdown()
        for case .unix(let path) in endpoints { unlink(path) }
        stopped.signal()
        logger.info("gRPC server stopped")
    }

    /// Returns once the server has shut down.
    public func waitUntilStopped() async {
        await stopped.wait()
    }
}
