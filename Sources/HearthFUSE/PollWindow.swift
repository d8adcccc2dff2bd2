import Synchronization

/// How long the reader polls before it sleeps, adapted as guest haltpoll adapts its
/// own window (drivers/cpuidle/governors/haltpoll.c): a request that came while
/// polling, or soon enough after that a longer window would have caught it, doubles
/// the window, up to the limit (`--poll-window`); a wait longer than the limit halves
/// it. A caller whose requests come further apart than the limit (one every
/// millisecond, say) thus stops costing a CPU within a few requests, and a burst of
/// requests grows the window back in a few more.
public struct PollWindowRule: Sendable {
    /// `--poll-window`; 0 turns polling off.
    public let limitNs: UInt64
    /// The smallest window a grown window starts from.
    public static let floorNs: UInt64 = 10_000

    public init(limitNs: UInt64) { self.limitNs = limitNs }

    /// The next window, given the current one and how long the reader was idle
    /// (from its reply to the next request, polling and sleeping together).
    public func next(after window: UInt64, idleNs: UInt64) -> UInt64 {
        guard limitNs > 0 else { return 0 }
        if idleNs <= limitNs { return min(limitNs, max(window * 2, Self.floorNs)) }
        return window / 2 < Self.floorNs ? 0 : window / 2
    }
}

/// The session's current window (only the reader holding the turn uses it).
final class PollWindow: Sendable {
    let rule: PollWindowRule
    private let current: Atomic<UInt64>

    init(limitNs: UInt64) {
        rule = PollWindowRule(limitNs: limitNs)
        current = Atomic(limitNs)
    }

    var nanoseconds: UInt64 { current.load(ordering: .relaxed) }

    func record(idleNs: UInt64) {
        current.store(rule.next(after: nanoseconds, idleNs: idleNs), ordering: .relaxed)
    }
}
