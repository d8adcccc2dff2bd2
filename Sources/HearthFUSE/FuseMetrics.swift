import Synchronization

/// Per-operation counters and latency histograms, kept as plain numbers so the node
/// plugin can render them as Prometheus metrics without this module depending on a
/// metrics library.
public final class FuseMetrics: Sendable {
    /// Upper bounds of the latency buckets, in seconds (the last bucket is +Inf).
    public static let bucketBounds: [Double] = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                                               0.025, 0.05, 0.1, 0.25, 1, 5]

    /// One operation's numbers.
    public struct OpStats: Sendable, Codable, Hashable {
        public var count: UInt64 = 0
        public var errors: UInt64 = 0
        public var totalSeconds: Double = 0
        /// Cumulative counts per ``FuseMetrics/bucketBounds`` entry, then +Inf.
        public var buckets: [UInt64] = Array(repeating: 0, count: FuseMetrics.bucketBounds.count + 1)
    }

    private let ops = Mutex<[UInt32: OpStats]>([:])

    public init() {}

    func record(_ opcode: UInt32, nanoseconds: UInt64, failed: Bool) {
        let seconds = Double(nanoseconds) / 1e9
        let bucket = Self.bucketBounds.firstIndex { seconds <= $0 } ?? Self.bucketBounds.count
        ops.withLock { ops in
            var stats = ops[opcode] ?? OpStats()
            stats.count += 1
            if failed { stats.errors += 1 }
            stats.totalSeconds += seconds
            stats.buckets[bucket] += 1
            ops[opcode] = stats
        }
    }

    /// Numbers per operation name (`lookup`, `read`…); histogram buckets are
    /// per-bucket counts (sum them for Prometheus' cumulative form).
    public func snapshot() -> [String: OpStats] {
        ops.withLock { ops in
            var out: [String: OpStats] = [:]
            for (code, stats) in ops {
                out[FuseOpcode(rawValue: code)?.name ?? "op\(code)"] = stats
            }
            return out
        }
    }
}
