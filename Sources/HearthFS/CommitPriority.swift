import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// The scheduling priority of the write-back thread: background while nobody waits
/// for its commit, normal while an fsync, an fsyncdir or the unmount does.
///
/// On a node with few CPUs, an application's small-file burst keeps every CPU busy
/// (the application on one, a FUSE worker on the other). A commit running beside it
/// at the same priority took its CPU in slices of 2–4 ms, and the scheduler queued
/// the FUSE worker the application had just woken behind that slice, even with the
/// other CPU idle (`perf sched timehist`: a worker's scheduling delay of 2.3 ms
/// while CPU 0 idled for 2.3 ms). At nice 10 a woken worker preempts the commit at
/// once, and the commit still gets a tenth of a contended CPU, so it never starves.
///
/// The namespace lock is never held at background priority (``atNormalPriority(_:)``):
/// a commit preempted while holding it would stall every request of the volume.
enum CommitPriority {
    /// nice(2) value of a commit that nobody waits for.
    static let background: Int32 = 10

    /// Whether the thread may lower its nice value again (CAP_SYS_NICE). Without it a
    /// thread once in the background could never run a commit that an fsync waits
    /// for at normal priority, so it stays at normal priority throughout.
    static let available: Bool = {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("CapEff:") }),
              let caps = UInt64(line.dropFirst("CapEff:".count).trimmingCharacters(in: .whitespaces), radix: 16)
        else { return false }
        return caps & (1 << 23) != 0  // CAP_SYS_NICE
    }()

    /// Sets the calling thread's priority for its next commit.
    static func set(waitedFor: Bool) {
        guard available else { return }
        _ = setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, waitedFor ? 0 : background)
    }

    /// Runs `body` at normal priority if the calling thread is in the background.
    static func atNormalPriority<T>(_ body: () throws -> T) rethrows -> T {
        guard available else { return try body() }
        errno = 0
        let nice = getpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0)
        guard errno == 0, nice > 0 else { return try body() }
        _ = setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, 0)
        defer { _ = setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, nice) }
        return try body()
    }
}
