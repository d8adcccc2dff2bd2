import CGRPC
import Foundation
import HearthMounts
import Synchronization

/// What the core hands back when a batch completes: a retained Swift object
/// whose pointer travelled through C as the batch's tag.
final class CompletionTag: Sendable {
    let body: @Sendable (Bool) -> Void

    private init(_ body: @escaping @Sendable (Bool) -> Void) { self.body = body }

    /// A +1 pointer for the core. Exactly one of `fire` (on the event) or
    /// `discard` (when the batch failed to start) balances it.
    static func retained(_ body: @escaping @Sendable (Bool) -> Void) -> UnsafeMutableRawPointer {
        Unmanaged.passRetained(CompletionTag(body)).toOpaque()
    }

    static func fire(_ raw: UnsafeMutableRawPointer, success: Bool) {
        Unmanaged<CompletionTag>.fromOpaque(raw).takeRetainedValue().body(success)
    }

    static func discard(_ raw: UnsafeMutableRawPointer) {
        Unmanaged<CompletionTag>.fromOpaque(raw).release()
    }
}

/// A grpc completion queue drained by dedicated threads. Tag callbacks run on
/// those threads and must be short: resume a continuation, start a batch.
final class CompletionQueue: @unchecked Sendable {
    // Why unchecked: `pointer` is immutable; grpc_completion_queue_next and
    // _shutdown are thread-safe, and the queue is destroyed only by the last
    // polling thread after the core reported GRPC_QUEUE_SHUTDOWN.
    let pointer: OpaquePointer
    private let pollersLeft: Mutex<Int>
    private let drained = OneShotEvent()

    init(name: String, pollers: Int = 1) {
        GRPCRuntime.ensureInitialised()
        pointer = grpc_completion_queue_create_for_next(nil)
        let count = max(1, pollers)
        pollersLeft = Mutex(count)
        for index in 0..<count {
            let label = "\(name)-cq\(index)"
            let thread = Thread { [self] in
                nameCurrentThread(label)
                self.poll()
            }
            thread.start()
        }
    }

    private func poll() {
        while true {
            let event = grpc_completion_queue_next(pointer, hearth_infinite_future(), nil)
            switch event.type {
            case GRPC_OP_COMPLETE:
                if let tag = event.tag { CompletionTag.fire(tag, success: event.success != 0) }
            case GRPC_QUEUE_SHUTDOWN:
                let last = pollersLeft.withLock { left -> Bool in
                    left -= 1
                    return left == 0
                }
                if last {
                    grpc_completion_queue_destroy(pointer)
                    drained.signal()
                }
                return
            default:
                continue
            }
        }
    }

    /// Stops the queue once every pending event has been delivered.
    func shutdown() async {
        grpc_completion_queue_shutdown(pointer)
        await drained.wait()
    }
}

/// Signalled once; any number of tasks wait for it, with or without a bound.
final class OneShotEvent: Sendable {
    private struct State {
        var signalled = false
        var waiters: [UInt64: CheckedContinuation<Bool, Never>] = [:]
        var nextID: UInt64 = 0
    }
    private let state = Mutex(State())

    var isSignalled: Bool { state.withLock { $0.signalled } }

    func signal() {
        let waiters = state.withLock { s -> [CheckedContinuation<Bool, Never>] in
            guard !s.signalled else { return [] }
            s.signalled = true
            defer { s.waiters = [:] }
            return Array(s.waiters.values)
        }
        for w in waiters { w.resume(returning: true) }
    }

    func wait() async {
        _ = await wait(timeout: nil)
    }

    /// Waits at most `timeout` (forever when nil); true when the event came.
    @discardableResult
    func wait(timeout: Duration?) async -> Bool {
        let id = state.withLock { s -> UInt64 in s.nextID += 1; return s.nextID }
        return await withCheckedContinuation { (c: CheckedContinuation<Bool, Never>) in
            let now = state.withLock { s -> Bool in
                if s.signalled { return true }
                s.waiters[id] = c
                return false
            }
            if now { c.resume(returning: true); return }
            guard let timeout else { return }
            Task { [self] in
                try? await Task.sleep(for: timeout)
                let expired = state.withLock { $0.waiters.removeValue(forKey: id) }
                expired?.resume(returning: false)
            }
        }
    }
}
