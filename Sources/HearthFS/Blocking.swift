import Foundation
import HearthCache
import HearthFUSE
import HearthStore

#if canImport(Glibc)
import Glibc
#endif

/// Runs async store code from a FUSE worker thread and waits for it.
///
/// FUSE workers are plain threads, so blocking them is fine; the async work runs on
/// the cooperative pool, which never waits on anything here (on 2 cores that pool has
/// 2 threads, and a semaphore wait on one of them could deadlock the daemon). Never
/// call this from async code.
func blocking<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) throws -> T {
    FuseWorkerThread.willWait()
    let box = BlockingResult<T>()
    Task.detached {
        do {
            box.finish(.success(try await body()))
        } catch {
            box.finish(.failure(error))
        }
    }
    return try box.wait().get()
}

/// One result handed from a task to a waiting thread.
private final class BlockingResult<T: Sendable>: @unchecked Sendable {
    // @unchecked: `result` is written once and read once, both under `condition`.
    private let condition = NSCondition()
    private var result: Result<T, any Error>?

    func finish(_ value: Result<T, any Error>) {
        condition.lock()
        result = value
        condition.signal()
        condition.unlock()
    }

    func wait() -> Result<T, any Error> {
        condition.lock()
        defer { condition.unlock() }
        while result == nil { condition.wait() }
        return result!
    }
}

/// The one mapping from lower-layer errors to errno.
func fuseError(_ error: any Error) -> FuseError {
    switch error {
    case let error as FuseError: return error
    case let error as CacheIOError: return FuseError(errno: error.code)
    case StoreError.notFound, StoreError.corrupt: return .io
    case StoreError.invalidArgument: return .invalid
    default: return .io
    }
}

/// Current time in nanoseconds since the epoch.
func nowNs() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
}

/// Debug tracing to stderr when HEARTH_TRACE is set (commit decisions, data-path state).
let traceEnabled = ProcessInfo.processInfo.environment["HEARTH_TRACE"] != nil

func trace(_ message: @autoclosure () -> String) {
    guard traceEnabled else { return }
    FileHandle.standardError.write(Data("TRACE \(message())\n".utf8))
}
