import Foundation
import Synchronization

/// A secret mounted from a Kubernetes Secret, re-read at most every `refresh` so that
/// rotating the Secret takes effect without a restart (the kubelet updates the file
/// in place) and thousands of inventory reports do not each read the file.
public final class SecretFile: Sendable {
    public let path: String
    private let refresh: Duration
    private let cache = Mutex<(value: String?, at: ContinuousClock.Instant)?>(nil)

    public init(path: String, refresh: Duration = .seconds(10)) {
        self.path = path
        self.refresh = refresh
    }

    /// The trimmed contents; nil when the file is missing, unreadable or empty.
    public func read() -> String? {
        let now = ContinuousClock.now
        if let cached = cache.withLock({ $0 }), now - cached.at < refresh { return cached.value }
        let value = (try? String(contentsOfFile: path, encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let result = value?.isEmpty == false ? value : nil
        cache.withLock { $0 = (result, now) }
        return result
    }
}

/// A readiness check whose result is reused for `interval`, so frequent probes do
/// not each reach the object store.
public final class CachedProbe: Sendable {
    private let interval: Duration
    private let check: @Sendable () async -> String?
    private let last = Mutex<(reason: String?, at: ContinuousClock.Instant)?>(nil)

    /// `check` returns nil when healthy, else the reason.
    public init(interval: Duration = .seconds(10), check: @escaping @Sendable () async -> String?) {
        self.interval = interval
        self.check = check
    }

    public func callAsFunction() async -> String? {
        let now = ContinuousClock.now
        if let cached = last.withLock({ $0 }), now - cached.at < interval { return cached.reason }
        let reason = await check()
        last.withLock { $0 = (reason, now) }
        return reason
    }
}
