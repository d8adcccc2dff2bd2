import Foundation
import HearthCSI
import HearthMetrics

/// What a node's /metrics shows beside its gRPC calls: each staged volume's
/// daemon (from the supervisor) and its FUSE and cache counters (asked over
/// the daemon's control socket), sampled at scrape time.
enum NodeMetrics {
    static func sampler(_ node: NodeService) -> @Sendable () async -> String {
        {
            let states = node.daemonStates.sorted { $0.volumeID < $1.volumeID }
            var text = PrometheusText()
            text.family("hearth_node_volumes_staged", type: "gauge", help: "Volumes staged on this node (one FUSE daemon each).",
                        [([], Double(states.count))])
            text.family("hearth_node_daemon_up", type: "gauge", help: "Whether the volume's FUSE daemon is running (1) or down (0).",
                        states.map { ([("volume", $0.volumeID)], $0.running ? 1 : 0) })
            text.family("hearth_node_daemon_restarts_total", type: "counter",
                        help: "Times the volume's FUSE daemon died and was started again.",
                        states.map { ([("volume", $0.volumeID)], Double($0.restarts)) })
            // All daemons at once: a scrape waits for the slowest (1 s at most), not their sum.
            let reports = await withTaskGroup(of: (String, DaemonStatsReport)?.self) { group in
                for state in states where state.running {
                    group.addTask {
                        guard let bytes = await node.daemonStats(state.volumeID),
                              let report = try? JSONDecoder().decode(DaemonStatsReport.self, from: Data(bytes)) else { return nil }
                        return (state.volumeID, report)
                    }
                }
                var all: [(volume: String, report: DaemonStatsReport)] = []
                for await case let (volume, report)? in group { all.append((volume, report)) }
                return all.sorted { $0.volume < $1.volume }
            }
            DaemonStatsReport.render(reports, into: &text)
            return text.rendered
        }
    }
}
