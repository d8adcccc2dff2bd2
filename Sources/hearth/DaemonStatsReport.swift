import Foundation
import HearthCache
import HearthFUSE
import HearthMetrics

/// A daemon's counters as its control socket answers them: FUSE operations
/// (count, errors, latency histogram) and its node-cache counters. The node
/// plugin renders them on its /metrics with a `volume` label.
struct DaemonStatsReport: Codable {
    var ops: [String: FuseMetrics.OpStats]
    var cache: CacheStats.Snapshot

    init(session: FuseSession, cache: NodeCache) {
        ops = session.metrics.snapshot()
        self.cache = cache.stats.snapshot
    }

    var json: [UInt8] { (try? Array(JSONEncoder().encode(self))) ?? [] }

    /// Prometheus families for these reports, keyed by volume id.
    static func render(_ reports: [(volume: String, report: DaemonStatsReport)], into text: inout PrometheusText) {
        func perOp(_ value: (FuseMetrics.OpStats) -> Double) -> [([(String, String)], Double)] {
            reports.flatMap { volume, report in
                report.ops.sorted { $0.key < $1.key }.map { ([("volume", volume), ("op", $0.key)], value($0.value)) }
            }
        }
        text.family("hearth_fuse_operations_total", type: "counter", help: "FUSE requests answered, by volume and operation.",
                    perOp { Double($0.count) })
        text.family("hearth_fuse_operation_errors_total", type: "counter", help: "FUSE requests answered with an error.",
                    perOp { Double($0.errors) })
        var histogram: [([(String, String)], Double)] = []
        for (volume, report) in reports {
            for (op, stats) in report.ops.sorted(by: { $0.key < $1.key }) {
                var cumulative: UInt64 = 0
                for (index, count) in stats.buckets.enumerated() {
                    cumulative += count
                    let bound = index < FuseMetrics.bucketBounds.count ? String(FuseMetrics.bucketBounds[index]) : "+Inf"
                    histogram.append(([("volume", volume), ("op", op), ("le", bound)], Double(cumulative)))
                }
            }
        }
        text.histogram("hearth_fuse_operation_duration_seconds", help: "Time to answer a FUSE request.", buckets: histogram,
                       sums: perOp { $0.totalSeconds }, counts: perOp { Double($0.count) })
        let caches = reports.map { ($0.volume, $0.report.cache) }
        for (name, type, help, value) in [
            ("hearth_cache_hits_total", "counter", "Reads served from the node cache.", { (c: CacheStats.Snapshot) in Double(c.hits) }),
            ("hearth_cache_misses_total", "counter", "Reads that fetched from the store.", { Double($0.misses) }),
            ("hearth_cache_evictions_total", "counter", "Chunks evicted from the node cache.", { Double($0.evictions) }),
            ("hearth_store_downloaded_bytes_total", "counter", "Bytes fetched from the store.", { Double($0.bytesDownloaded) }),
            ("hearth_store_uploaded_bytes_total", "counter", "Bytes uploaded to the store.", { Double($0.bytesUploaded) }),
            ("hearth_cache_used_bytes", "gauge", "Clean bytes present in the node cache, as this daemon counts them.", { Double($0.usedBytes) }),
            ("hearth_cache_dirty_bytes", "gauge", "Bytes written and not yet committed.", { Double($0.dirtyBytes) }),
        ] as [(String, String, String, (CacheStats.Snapshot) -> Double)] {
            text.family(name, type: type, help: help, caches.map { ([("volume", $0.0)], value($0.1)) })
        }
    }
}
