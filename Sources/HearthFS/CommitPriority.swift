import CFuse
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The scheduling priority of a volume's write-back thread: background while nobody
/// waits for its commit, normal while an fsync, an fsyncdir or the unmount does.
///
/// On a node with few CPUs, an application's small-file burst keeps every CPU busy
/// (the application on one, a FUSE worker on the other). A commit running beside it
/// at the same priority took its CPU in slices of 2–4 ms, and the scheduler queued
/// the FUSE worker the application had just woken behind that slice, even with the
/// other CPU idle (`perf sched timehist`: a worker's scheduling delay of 2.3 ms
/// while CPU 0 idled for 2.3 ms). At nice 10 a woken worker preempts the commit at
/// once, and the commit still gets a tenth of a contended CPU, so it never starves.
///
/// The commit's long holds of the namespace lock (taking the dirty files, installing
/// manifests and snapshotting trees, trimming memory) run at normal priority
/// (``atNormalPriority(_:)``): a commit preempted while holding it would stall every
/// request of the volume. Its other holds last microseconds. An
/// fsync that arrives during a background commit raises it (``raise()``): the fsync
/// waits for the commit after it, and that one cannot start before this one ends.
final class CommitPriority: Sendable {
    /// nice(2) value of a commit that nobody waits for.
    static let background: Int32 = 10

    /// Whether the process may lower a thread's nice value again (CAP_SYS_NICE).
    /// Without it a thread once in the background could never run a commit that an
    /// fsync waits for at normal priority, so it stays at normal priority throughout.
    static let available: Bool = {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("CapEff:") }),
              let caps = UInt64(line.dropFirst("CapEff:".count).trimmingCharacters(in: .whitespaces), radix: 16)
        else { return false }
        return caps & (1 << 23) != 0  // CAP_SYS_NICE
    }()

    /// The committing thread's id; 0 until it runs ``adopt()``.
    private let thread = Atomic<Int32>(0)
    /// The nice value it should have outside lock holds.
    private let wanted = Atomic<Int32>(0)

    /// Called by the write-back thread when it starts.
    func adopt() {
        thread.store(hearth_gettid(), ordering: .relaxed)
    }

    /// Sets the committing thread's priority for the commit it is about to run.
    func beginCommit(waitedFor: Bool) {
        wanted.store(waitedFor ? 0 : Self.background, ordering: .relaxed)
        settle()
    }

    /// Raises a commit under way to normal priority (an fsync now waits for it).
    func raise() {
        wanted.store(0, ordering: .relaxed)
        let tid = thread.load(ordering: .relaxed)
        guard Self.available, tid != 0 else { return }
        Self.setNice(of: tid, 0)
    }

    /// Runs `body` at normal priority, then goes back to the wanted one. A no-op on
    /// any thread but the committing one, which is the only one ever lowered.
    func atNormalPriority<T>(_ body: () throws -> T) rethrows -> T {
        guard Self.available, wanted.load(ordering: .relaxed) != 0,
              hearth_gettid() == thread.load(ordering: .relaxed) else { return try body() }
        Self.setNice(of: 0, 0)
        defer { settle() }
        return try body()
    }

    /// Applies the wanted value to the calling (committing) thread. Read again after
    /// setting: a ``raise()`` in between would otherwise be undone.
    private func settle() {
        guard Self.available else { return }
        var value = wanted.load(ordering: .relaxed)
        while true {
            Self.setNice(of: 0, value)
            let now = wanted.load(ordering: .relaxed)
            if now == value { return }
            value = now
        }
    }

    /// setpriority(2) for one thread (`tid`; 0: the calling thread).
    private static func setNice(of tid: Int32, _ value: Int32) {
        _ = setpriority(__priority_which_t(PRIO_PROCESS.rawValue), id_t(tid), value)
    }
}
