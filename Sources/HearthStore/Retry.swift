import Foundation

/// How hard a backend tries before reporting ``StoreError/unavailable(_:)``.
///
/// Object stores fail transiently all the time (5xx, `SlowDown`, dropped
/// connections). Retrying is right for those, but an unbounded retry turns an outage
/// into a hang of every FUSE request and CSI call, so the budget bounds both the
/// number of attempts and the total time, and the final error names the last cause.
public struct RetryPolicy: Sendable, Hashable {
    /// Attempts including the first one.
    public var maxAttempts: Int
    /// No new attempt starts after this much time since the first.
    public var maxTotal: Duration
    /// First backoff; doubles each attempt (full jitter: a random delay in 0...cap).
    public var baseDelay: Duration
    /// Upper bound for one backoff.
    public var maxDelay: Duration
    /// Per-request deadline, and the longest a response may stall between bytes.
    public var requestTimeout: Duration

    public init(maxAttempts: Int = 6, maxTotal: Duration = .seconds(60), baseDelay: Duration = .milliseconds(100),
                maxDelay: Duration = .seconds(5), requestTimeout: Duration = .seconds(30)) {
        self.maxAttempts = maxAttempts
        self.maxTotal = maxTotal
        self.baseDelay = baseDelay
        self.maxDelay = maxDelay
        self.requestTimeout = requestTimeout
    }

    public static let `default` = RetryPolicy()

    /// Delay before attempt `attempt + 1` (attempt counts from 1): full jitter over an
    /// exponentially growing cap, so many clients retrying at once spread out.
    func delay(afterAttempt attempt: Int) -> Duration {
        let cap = min(maxDelay, baseDelay * (1 << min(attempt - 1, 20)))
        let capNanos = max(cap.components.seconds * 1_000_000_000 + cap.components.attoseconds / 1_000_000_000, 1)
        return .nanoseconds(Int64.random(in: 0...capNanos))
    }
}

/// Classifies a failure for the retry loop.
enum RetryDecision: Sendable {
    /// Transient: try again; the description becomes the last cause if the budget runs out.
    case retry(String)
    /// Permanent: give up now with this error.
    case fail(any Error)
}

/// The one retry loop of the store layer. `classify` decides per error; retries stop
/// when the policy's attempts or total time are spent, and the caller then gets
/// ``StoreError/unavailable(_:)`` naming the attempt count and the last cause.
func withRetries<T: Sendable>(
    _ policy: RetryPolicy,
    operation: String,
    classify: (any Error) -> RetryDecision,
    _ body: () async throws -> T
) async throws -> T {
    let clock = ContinuousClock()
    let start = clock.now
    var attempt = 0
    while true {
        attempt += 1
        let cause: String
        do {
            return try await body()
        } catch is CancellationError {
            throw CancellationError()
        } catch {
            switch classify(error) {
            case .fail(let error): throw error
            case .retry(let description): cause = description
            }
        }
        let elapsed = clock.now - start
        let delay = policy.delay(afterAttempt: attempt)
        if attempt >= policy.maxAttempts || elapsed + delay >= policy.maxTotal {
            throw StoreError.unavailable(
                "\(operation) failed after \(attempt) attempt(s) in \(secondsText(elapsed)); last error: \(cause)")
        }
        try await Task.sleep(for: delay)
    }
}

/// "1.25s": durations in error messages people read.
func secondsText(_ duration: Duration) -> String {
    let (seconds, attoseconds) = duration.components
    return String(format: "%.2fs", Double(seconds) + Double(attoseconds) / 1e18)
}
