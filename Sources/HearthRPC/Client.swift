import CGRPC
import Synchronization

/// Settings for a client channel.
public struct RPCChannelOptions: Sendable {
    /// Largest response accepted; larger ones end the call with RESOURCE_EXHAUSTED.
    public var maxReceiveMessageBytes = 4 * 1024 * 1024
    /// Largest request sent; larger ones fail locally with RESOURCE_EXHAUSTED.
    public var maxSendMessageBytes = 4 * 1024 * 1024
    public init() {}
}

/// A reply to a unary call.
public struct RPCResponse: Sendable {
    public var message: [UInt8]
    public var initialMetadata: RPCMetadata
    public var trailingMetadata: RPCMetadata
}

/// A client connection to one endpoint; safe to share across tasks, which
/// multiplex their calls over it.
public final class RPCChannel: Sendable {
    private let channel: Mutex<CoreHandle?>
    private let queue: CompletionQueue
    public let endpoint: RPCEndpoint

    public init(endpoint: RPCEndpoint, options: RPCChannelOptions = RPCChannelOptions()) {
        GRPCRuntime.ensureInitialised()
        self.endpoint = endpoint
        queue = CompletionQueue(name: "rpc-client")
        let credentials = grpc_insecure_credentials_create()
        defer { grpc_channel_credentials_release(credentials) }
        var args = hearth_channel_args()
        let channelArgs = hearth_channel_args_init(
            &args, Int32(clamping: options.maxReceiveMessageBytes), Int32(clamping: options.maxSendMessageBytes))
        channel = Mutex(CoreHandle(raw: grpc_channel_create(endpoint.coreAddress, credentials, channelArgs)))
    }

    public convenience init(target: String, options: RPCChannelOptions = RPCChannelOptions()) throws {
        self.init(endpoint: try RPCEndpoint(parsing: target), options: options)
    }

    deinit {
        if let c = channel.withLock({ $0 }) { grpc_channel_destroy(c.raw) }
        grpc_completion_queue_shutdown(queue.pointer)
    }

    /// Closes the connection; calls still running end with CANCELLED or UNAVAILABLE.
    public func close() async {
        let c = channel.withLock { c -> CoreHandle? in defer { c = nil }; return c }
        if let c { grpc_channel_destroy(c.raw) }
    }

    /// One unary call. `timeout` becomes the call's deadline, enforced by the
    /// client and sent to the server. A cancelled Task cancels the call.
    /// Throws `RPCError` for every non-OK outcome.
    public func unary(
        _ method: String, _ request: [UInt8], metadata: RPCMetadata = RPCMetadata(),
        timeout: Duration? = nil
    ) async throws -> RPCResponse {
        try metadata.validate()
        let state = ClientCallState()
        return try await withTaskCancellationHandler {
            try await perform(method, request, metadata, timeout, state)
        } onCancel: {
            state.cancel()
        }
    }

    private func perform(
        _ method: String, _ request: [UInt8], _ metadata: RPCMetadata, _ timeout: Duration?,
        _ state: ClientCallState
    ) async throws -> RPCResponse {
        let nanos: Int64 = timeout.map { d in
            let (s, a) = d.components
            return max(0, s.multipliedReportingOverflow(by: 1_000_000_000).partialValue + a / 1_000_000_000)
        } ?? Int64.max
        let buffers = ClientCallBuffers(metadata: metadata, request: request)
        let methodSlice = makeSlice(method)
        defer { grpc_slice_unref(methodSlice) }
        let created: CoreHandle? = channel.withLock { c in
            guard let c else { return nil }
            return CoreHandle(raw: grpc_channel_create_call(
                c.raw, nil, hearth_propagate_defaults(), queue.pointer, methodSlice, nil,
                hearth_deadline_after(nanos), nil))
        }
        guard let call = created?.raw else { throw RPCError(.unavailable, "channel to \(endpoint) is closed") }
        defer {
            state.detach()
            grpc_call_unref(call)
        }
        guard state.attach(call) else { throw RPCError(.cancelled, "call cancelled by the client") }

        let success = await withCheckedContinuation { (done: CheckedContinuation<Bool, Never>) in
            let tag = CompletionTag.retained { done.resume(returning: $0) }
            let started = buffers.start(call, tag: tag)
            if started != GRPC_CALL_OK {
                CompletionTag.discard(tag)
                done.resume(returning: false)
            }
        }
        return try buffers.outcome(batchSucceeded: success)
    }
}

/// Cancellation may arrive before the call exists; this remembers it.
private final class ClientCallState: Sendable {
    // The call is cancelled only under the lock, and `perform` detaches it
    // (under the lock) before its unref, so cancel never touches a freed call.
    private let state = Mutex<(call: CoreHandle?, cancelled: Bool)>((nil, false))

    /// False when the task was cancelled before the call started.
    func attach(_ call: OpaquePointer) -> Bool {
        state.withLock { s in
            if s.cancelled { return false }
            s.call = CoreHandle(raw: call)
            return true
        }
    }

    func cancel() {
        // Under the lock, so `detach` + unref cannot free the call meanwhile.
        state.withLock { s in
            s.cancelled = true
            if let call = s.call { grpc_call_cancel(call.raw, nil) }
        }
    }

    /// Called once the call is finished, so a late cancel never touches a freed call.
    func detach() { state.withLock { $0.call = nil } }
}

/// Everything the core reads or writes during the unary batch. Allocated
/// before the batch starts, freed after its completion event (owned by
/// `perform`'s frame, which awaits that event).
private final class ClientCallBuffers {
    let metadata: CMetadata
    let request: UnsafeMutablePointer<grpc_byte_buffer>
    let initial = UnsafeMutablePointer<grpc_metadata_array>.allocate(capacity: 1)
    let trailing = UnsafeMutablePointer<grpc_metadata_array>.allocate(capacity: 1)
    let response = UnsafeMutablePointer<UnsafeMutablePointer<grpc_byte_buffer>?>.allocate(capacity: 1)
    let status = UnsafeMutablePointer<grpc_status_code>.allocate(capacity: 1)
    let details = UnsafeMutablePointer<grpc_slice>.allocate(capacity: 1)

    init(metadata: RPCMetadata, request: [UInt8]) {
        self.metadata = CMetadata(metadata)
        self.request = makeByteBuffer(request)
        grpc_metadata_array_init(initial)
        grpc_metadata_array_init(trailing)
        response.initialize(to: nil)
        status.initialize(to: GRPC_STATUS_UNKNOWN)
        details.initialize(to: grpc_empty_slice())
    }

    func start(_ call: OpaquePointer, tag: UnsafeMutableRawPointer) -> grpc_call_error {
        hearth_start_client_unary(
            call, metadata.pointer, metadata.count, request, initial, response, trailing, status,
            details, tag)
    }

    func outcome(batchSucceeded: Bool) throws -> RPCResponse {
        guard batchSucceeded else { throw RPCError(.internal, "the call's batch failed to complete") }
        let code = RPCCode(wire: Int(status.pointee.rawValue))
        let trailingMetadata = RPCMetadata(trailing)
        guard code == .ok else {
            throw RPCError(code, sliceString(details), trailingMetadata: trailingMetadata)
        }
        guard let buffer = response.pointee else {
            throw RPCError(.internal, "server answered OK without a message")
        }
        guard let message = readByteBuffer(buffer) else {
            throw RPCError(.internal, "response message could not be read")
        }
        return RPCResponse(message: message, initialMetadata: RPCMetadata(initial), trailingMetadata: trailingMetadata)
    }

    deinit {
        grpc_byte_buffer_destroy(request)
        if let r = response.pointee { grpc_byte_buffer_destroy(r) }
        grpc_metadata_array_destroy(initial)
        grpc_metadata_array_destroy(trailing)
        grpc_slice_unref(details.pointee)
        initial.deallocate(); trailing.deallocate(); response.deallocate()
        status.deallocate(); details.deallocate()
    }
}
