import CGRPC
import Synchronization

/// One incoming call, from the core's notification to the final unref.
///
/// Life: the server asks the core for a call (`callSlot`, `details`,
/// `requestMetadata` filled in by the core) → `begin` receives the request →
/// a close watcher starts (so cancellation and deadline reach the handler
/// while it runs) and the handler runs in its own Task → `respond` sends
/// metadata, message and status in one batch → once both the close watcher
/// and the response batch completed, the call is unref'd and freed.
final class ServerCall: @unchecked Sendable {
    // Why unchecked: the raw buffers are written by the core before the tag
    // that announces them fires, and read only after; every mutable Swift
    // field is behind `state`.
    private let server: RPCServer
    let callSlot = UnsafeMutablePointer<OpaquePointer?>.allocate(capacity: 1)
    let details = UnsafeMutablePointer<grpc_call_details>.allocate(capacity: 1)
    let requestMetadata = UnsafeMutablePointer<grpc_metadata_array>.allocate(capacity: 1)
    private let received = UnsafeMutablePointer<UnsafeMutablePointer<grpc_byte_buffer>?>.allocate(capacity: 1)
    private let cancelledFlag = UnsafeMutablePointer<Int32>.allocate(capacity: 1)

    private struct State {
        var handler: Task<Void, Never>?
        var cancelled = false
        var closed = false
        var responded = false
        var released = false
    }
    private let state = Mutex(State())

    init(server: RPCServer) {
        self.server = server
        callSlot.initialize(to: nil)
        grpc_call_details_init(details)
        grpc_metadata_array_init(requestMetadata)
        received.initialize(to: nil)
        cancelledFlag.initialize(to: 0)
    }

    /// For a request the core never filled (server shutting down).
    func abandon() { freeBuffers() }

    /// The core's call; set before `begin` and valid until `finishIfDone` unrefs it.
    private var call: OpaquePointer { callSlot.pointee! }

    func begin() {
        guard callSlot.pointee != nil else { freeBuffers(); return }
        let tag = CompletionTag.retained { [self] ok in didReceive(ok) }
        if hearth_start_server_receive(call, received, tag) != GRPC_CALL_OK {
            CompletionTag.discard(tag)
            didReceive(false)
        }
    }

    private func didReceive(_ ok: Bool) {
        let closeTag = CompletionTag.retained { [self] _ in didClose() }
        if hearth_start_server_watch_close(call, cancelledFlag, closeTag) != GRPC_CALL_OK {
            CompletionTag.discard(closeTag)
            state.withLock { $0.closed = true }
        }
        let method = sliceString(hearth_call_details_method(details))
        guard ok, let buffer = received.pointee else {
            respond(.failure(RPCError(.cancelled, "call ended before its request arrived")))
            return
        }
        let message = readByteBuffer(buffer)
        grpc_byte_buffer_destroy(buffer)
        received.pointee = nil
        guard let message else {
            respond(.failure(RPCError(.invalidArgument, "request message could not be read")))
            return
        }
        guard let handler = server.handler(for: method) else {
            respond(.failure(RPCError(.unimplemented, "unknown method \(method)")))
            return
        }
        let nanos = hearth_nanos_until(hearth_call_details_deadline(details))
        let request = RPCServerRequest(
            method: method, message: message, metadata: RPCMetadata(requestMetadata),
            deadline: nanos == Int64.max ? nil : ContinuousClock.now + .nanoseconds(nanos),
            peer: peer())
        let task = Task { [self] in
            let outcome: Result<RPCServerResponse, any Error>
            do { outcome = .success(try await handler(request)) } catch { outcome = .failure(error) }
            respond(outcome)
        }
        let cancelNow = state.withLock { s -> Bool in
            s.handler = task
            return s.cancelled
        }
        if cancelNow { task.cancel() }
    }

    private func peer() -> String {
        guard let raw = grpc_call_get_peer(call) else { return "" }
        defer { gpr_free(raw) }
        return String(cString: raw)
    }

    private func didClose() {
        let cancelled = cancelledFlag.pointee != 0
        let task = state.withLock { s -> Task<Void, Never>? in
            s.closed = true
            if cancelled { s.cancelled = true }
            return cancelled ? s.handler : nil
        }
        task?.cancel()
        finishIfDone()
    }

    /// Shutdown ran out of grace: the handler should stop.
    func cancelHandler() {
        state.withLock { s -> Task<Void, Never>? in
            s.cancelled = true
            return s.handler
        }?.cancel()
    }

    private func respond(_ outcome: Result<RPCServerResponse, any Error>) {
        let answer = ServerAnswer(outcome, maxMessageBytes: server.maxSendMessageBytes)
        let tag = CompletionTag.retained { [self] _ in
            withExtendedLifetime(answer) {}
            didRespond()
        }
        let started = hearth_start_server_respond(
            call, answer.initial.pointer, answer.initial.count, answer.message,
            answer.trailing.pointer, answer.trailing.count, answer.status, answer.details, tag)
        if started != GRPC_CALL_OK {
            CompletionTag.discard(tag)
            server.logger.warning("cannot send the response: \(String(cString: grpc_call_error_to_string(started)))")
            didRespond()
        }
    }

    private func didRespond() {
        state.withLock { $0.responded = true }
        finishIfDone()
    }

    private func finishIfDone() {
        let release = state.withLock { s -> Bool in
            guard s.closed, s.responded, !s.released else { return false }
            s.released = true
            s.handler = nil
            return true
        }
        guard release else { return }
        if let call = callSlot.pointee { grpc_call_unref(call) }
        freeBuffers()
        server.finished(self)
    }

    private func freeBuffers() {
        if let buffer = received.pointee { grpc_byte_buffer_destroy(buffer) }
        grpc_call_details_destroy(details)
        grpc_metadata_array_destroy(requestMetadata)
        callSlot.deallocate()
        details.deallocate()
        requestMetadata.deallocate()
        received.deallocate()
        cancelledFlag.deallocate()
    }
}

/// The status, message and metadata of one response, laid out for the core.
/// Kept alive by the send batch's tag until the batch completes.
private final class ServerAnswer: @unchecked Sendable {
    // Why unchecked: immutable after init; the core reads it during the batch,
    // and it is freed when the completion tag (its only other owner) is released.
    let initial: CMetadata
    let trailing: CMetadata
    let message: UnsafeMutablePointer<grpc_byte_buffer>?
    let status: grpc_status_code
    let details: UnsafeMutablePointer<grpc_slice>

    init(_ outcome: Result<RPCServerResponse, any Error>, maxMessageBytes: Int) {
        var code = RPCCode.ok
        var text = ""
        var body: [UInt8]? = nil
        var initialMetadata = RPCMetadata()
        var trailingMetadata = RPCMetadata()
        switch outcome {
        case .success(let response):
            if response.message.count > maxMessageBytes {
                code = .resourceExhausted
                text = "response of \(response.message.count) bytes exceeds the server's limit of \(maxMessageBytes)"
            } else {
                body = response.message
                initialMetadata = response.initialMetadata
                trailingMetadata = response.trailingMetadata
            }
        case .failure(let error as RPCError):
            code = error.code == .ok ? .unknown : error.code
            text = error.message
            trailingMetadata = error.trailingMetadata
        case .failure(is CancellationError):
            code = .cancelled
            text = "the call was cancelled"
        case .failure(let error):
            code = .unknown
            text = "\(error)"
        }
        do {
            try initialMetadata.validate()
            try trailingMetadata.validate()
        } catch {
            code = .internal
            text = "server produced invalid metadata: \(error.message)"
            body = nil
            initialMetadata = RPCMetadata()
            trailingMetadata = RPCMetadata()
        }
        initial = CMetadata(initialMetadata)
        trailing = CMetadata(trailingMetadata)
        message = body.map(makeByteBuffer)
        status = grpc_status_code(rawValue: Int32(code.rawValue))
        details = UnsafeMutablePointer<grpc_slice>.allocate(capacity: 1)
        details.initialize(to: makeSlice(text))
    }

    deinit {
        if let message { grpc_byte_buffer_destroy(message) }
        grpc_slice_unref(details.pointee)
        details.deallocate()
    }
}
