import Foundation
import Synchronization

/// The pause an application sees while its daemon or node plugin is replaced: the
/// longest statfs on the mount (statfs always reaches the daemon), probed every
/// millisecond while it runs.
public final class StatfsProbe: Sendable {
    private let longest = Mutex<Double>(0)
    private let running = Atomic<Bool>(true)
    private let done = Atomic<Bool>(false)

    public init(_ path: String) {
        let thread = Thread { [self] in
            var fs = statvfs()
            while running.load(ordering: .acquiring) {
                let start = DispatchTime.now().uptimeNanoseconds
                _ = statvfs(path, &fs)
                let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
                longest.withLock { $0 = max($0, seconds) }
                usleep(1000)
            }
            done.store(true, ordering: .releasing)
        }
        thread.start()
    }

    /// Stops probing; the longest statfs in seconds.
    public func stop() -> Double {
        running.store(false, ordering: .releasing)
        while !done.load(ordering: .acquiring) { usleep(1000) }
        return longest.withLock { $0 }
    }
}
