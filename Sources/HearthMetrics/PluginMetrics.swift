import HearthRPC
import Prometheus

/// Prometheus metrics of the CSI plugins (`hearth controller`, `node`,
/// `serve`): every gRPC method's calls by status code and its latency, plus
/// whatever a role adds at scrape time (the node: its volumes' daemons).
///
/// Owns its registry (no global bootstrap), so tests and several servers in
/// one process never share counters.
public final class PluginMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry
    private let extra: @Sendable () async -> String
    private static let buckets: [Duration] = [
        .microseconds(250), .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10),
        .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250), .seconds(1),
        .seconds(5), .seconds(30),
    ]

    /// - Parameter extra: more Prometheus text appended to every scrape, for
    ///   values read at scrape time rather than counted as they happen.
    public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry(),
                extra: @escaping @Sendable () async -> String = { "" }) {
        self.registry = registry
        self.extra = extra
    }

    /// The same routes, each call counted and timed by method and outcome.
    public func instrument(_ routes: RPCRoutes) -> RPCRoutes {
        var instrumented = RPCRoutes()
        for (method, handler) in routes.handlers {
            let calls = { @Sendable [registry] (code: String) in
                registry.makeCounter(
                    descriptor: MetricNameDescriptor(namespace: "hearth", subsystem: "grpc", metricName: "calls",
                                                     unitName: "total", helpText: "gRPC calls served, by method and status code."),
                    labels: [("method", method), ("code", code)])
            }
            let latency = registry.makeDurationHistogram(
                descriptor: MetricNameDescriptor(namespace: "hearth", subsystem: "grpc", metricName: "call_duration",
                                                 unitName: "seconds", helpText: "Time to answer a gRPC call, by method."),
                labels: [("method", method)], buckets: Self.buckets)
            instrumented.raw(method) { request in
                let started = ContinuousClock.now
                do {
                    let response = try await handler(request)
                    latency.record(ContinuousClock.now - started)
                    calls("OK").increment()
                    return response
                } catch {
                    latency.record(ContinuousClock.now - started)
                    calls((error as? RPCError).map { "\($0.code)" } ?? "UNKNOWN").increment()
                    throw error
                }
            }
        }
        return instrumented
    }

    /// The Prometheus text exposition.
    public func render() async -> [UInt8] {
        registry.emitToBuffer() + Array(await extra().utf8)
    }
}

/// Prometheus text for values sampled at scrape time (the registry's
/// counters only count up from zero inside this process).
public struct PrometheusText: Sendable {
    private var text = ""
    public init() {}

    /// One metric family: its HELP and TYPE lines, then a sample per label set.
    public mutating func family(_ name: String, type: String, help: String, _ samples: [([(String, String)], Double)]) {
        guard !samples.isEmpty else { return }
        text += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
        for (labels, value) in samples {
            let rendered = labels.map { "\($0.0)=\"\(Self.escape($0.1))\"" }.joined(separator: ",")
            text += labels.isEmpty ? "\(name) \(Self.number(value))\n" : "\(name){\(rendered)} \(Self.number(value))\n"
        }
    }

    /// A histogram family: cumulative `_bucket` samples (labels include `le`),
    /// then `_sum` and `_count` per label set.
    public mutating func histogram(_ name: String, help: String, buckets: [([(String, String)], Double)],
                                   sums: [([(String, String)], Double)], counts: [([(String, String)], Double)]) {
        guard !buckets.isEmpty else { return }
        text += "# HELP \(name) \(help)\n# TYPE \(name) histogram\n"
        for (suffix, samples) in [("_bucket", buckets), ("_sum", sums), ("_count", counts)] {
            for (labels, value) in samples {
                let rendered = labels.map { "\($0.0)=\"\(Self.escape($0.1))\"" }.joined(separator: ",")
                text += "\(name)\(suffix){\(rendered)} \(Self.number(value))\n"
            }
        }
    }

    public var rendered: String { text }

    static func escape(_ value: String) -> String {
        value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
            .replacingOccurrences(of: "\n", with: "\\n")
    }

    static func number(_ value: Double) -> String {
        value == value.rounded() && abs(value) < 1e15 ? String(Int64(value)) : String(value)
    }
}
