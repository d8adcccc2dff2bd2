import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Whose turn it is to read /dev/fuse (leader/follower).
///
/// One worker at a time reads (and polls) the device; the others sleep here. Were
/// they all in read(2), the kernel would wake one of them for every request (the
/// device's wait queue knows nothing of a poller), only for it to find the request
/// taken and sleep again: two context switches per request for nothing, which on
/// this 2-vCPU VM cost a quarter of a metadata storm's time (docs/fuse.md).
///
/// The reader keeps its turn while it serves requests that need nothing slow, and
/// hands it on before one that waits (a data operation, the store, a commit; see
/// ``FuseWorkerThread/willWait()``), so a slow request never holds up the others.
final class ReadTurn: @unchecked Sendable {
    // @unchecked: every stored var is read and written only with `condition` locked.
    private let condition = NSCondition()
    private var taken = false
    private var waiting = 0
    private var closed = false

    /// Sleeps until the turn is free and takes it; false once the session stopped.
    func take() -> Bool {
        condition.lock()
        defer { condition.unlock() }
        waiting += 1
        while taken && !closed { condition.wait() }
        waiting -= 1
        guard !closed else { return false }
        taken = true
        return true
    }

    /// Gives the turn up. Returns whether a sleeping worker will take it; when none
    /// is waiting the caller may add a worker (the pool grows when all are busy).
    func handOn() -> Bool {
        condition.lock()
        defer { condition.unlock() }
        taken = false
        guard waiting > 0 else { return false }
        condition.signal()
        return true
    }

    /// The connection is gone: every waiting worker returns from ``take()``.
    func close() {
        condition.lock()
        closed = true
        condition.broadcast()
        condition.unlock()
    }
}

/// What a /dev/fuse worker thread knows about itself, found by handler code through
/// a thread-specific key (handlers are called on the worker's own thread).
final class WorkerContext {
    unowned let session: FuseSession
    /// Whether this thread holds the session's read turn. Only its own thread
    /// touches it.
    var hasTurn = false

    init(session: FuseSession) { self.session = session }
}

/// The key under which a worker thread keeps its ``WorkerContext``.
let workerContextKey: pthread_key_t = {
    var key = pthread_key_t()
    precondition(pthread_key_create(&key, nil) == 0, "no thread-specific key left")
    return key
}()

/// Lets filesystem code say that the current FUSE request is about to wait.
public enum FuseWorkerThread {
    /// Call before waiting on something slow (the object store, a commit, a disk
    /// read): if the calling thread holds the read turn of a /dev/fuse session,
    /// another worker takes over reading requests meanwhile. A no-op on any other
    /// thread (io_uring queue threads, the cooperative pool).
    public static func willWait() {
        guard let raw = pthread_getspecific(workerContextKey) else { return }
        let context = Unmanaged<WorkerContext>.fromOpaque(raw).takeUnretainedValue()
        guard context.hasTurn else { return }
        context.hasTurn = false
        context.session.handOnReadTurn()
    }
}
