import Prometheus

/// The extender's Prometheus metrics: requests by verb and status, latency by verb,
/// the scores it gave, nodes it filtered out and why, and the inventory it holds.
///
/// Owns its own registry (no global `MetricsSystem` bootstrap), so tests and several
/// servers in one process never share counters.
public final class SchedulerMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry
    private let scores: [Counter]
    private let inventoryNodes: Gauge
    private let latencyBuckets: [Duration] = [
        .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2),
        .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100),
        .milliseconds(250), .seconds(1),
    ]

    public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.registry = registry
        scores = (0...Scoring.maxScore).map {
            registry.makeCounter(descriptor: Self.name("scores", "total", "Node scores given by prioritize, by score."),
                                 labels: [("score", String($0))])
        }
        inventoryNodes = registry.makeGauge(
            descriptor: Self.name("inventory_nodes", "", "Nodes with a live (unexpired) inventory report."))
    }

    private static func name(_ metric: String, _ unit: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(namespace: "hearth", subsystem: "scheduler", metricName: metric, unitName: unit, helpText: help)
    }

    /// One HTTP request served. `verb`: filter, prioritize, inventory, metrics, healthz, readyz.
    public func request(_ verb: String, status: Int, duration: Duration) {
        registry.makeCounter(descriptor: Self.name("requests", "total", "HTTP requests served, by verb and status code."),
                             labels: [("verb", verb), ("code", String(status))]).increment()
        registry.makeDurationHistogram(
            descriptor: Self.name("request_duration", "seconds", "Time from request received to response ready, by verb."),
            labels: [("verb", verb)], buckets: latencyBuckets
        ).recordNanoseconds(duration.nanoseconds)
    }

    /// The scores of one prioritize answer, tallied first so 5,000 nodes cost 11 increments.
    public func scoresGiven(_ priorities: [HostPriority]) {
        var tally = [Int](repeating: 0, count: scores.count)
        for priority in priorities where (0...Scoring.maxScore).contains(priority.score) { tally[Int(priority.score)] += 1 }
        for (score, count) in tally.enumerated() where count > 0 { scores[score].increment(by: Int64(count)) }
    }

    /// Nodes a filter answer dropped; `reason`: locality, lease, annotation.
    public func filtered(_ reason: String, count: Int) {
        guard count > 0 else { return }
        registry.makeCounter(descriptor: Self.name("filtered_nodes", "total", "Nodes dropped by filter, by reason."),
                             labels: [("reason", reason)]).increment(by: Int64(count))
    }

    /// Claims whose volume could not be resolved (store or API server errors).
    public func resolveFailed() {
        registry.makeCounter(descriptor: Self.name(
            "resolve_errors", "total", "Claims that could not be mapped to volumes; scored as non-Hearth.")).increment()
    }

    /// Inventory reports, by result: accepted, unauthorized, forbidden, invalid.
    public func inventoryReport(_ result: String) {
        registry.makeCounter(descriptor: Self.name("inventory_reports", "total", "Inventory reports received, by result."),
                             labels: [("result", result)]).increment()
    }

    /// The Prometheus text exposition, refreshing gauges first.
    public func render(inventory: InventoryStore) -> [UInt8] {
        inventoryNodes.set(Int64(inventory.liveNodeCount))
        return registry.emitToBuffer()
    }
}

extension Duration {
    var nanoseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }
}
