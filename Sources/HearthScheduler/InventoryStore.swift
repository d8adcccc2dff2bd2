import HearthInventory
import Synchronization

/// The extender's view of which node caches what: the latest report of every node,
/// forgotten `ttl` after it arrived (soft state: a node that dies or loses its
/// network stops attracting pods after one TTL, and no one has to clean up).
///
/// Built for the scoring hot path: reports are indexed by volume, so scoring a pod
/// touches only the nodes that cache one of its volumes, never the whole cluster.
/// A `Mutex`, not an actor: lookups are short and synchronous, and scoring
/// thousands of nodes must not hop executors.
public final class InventoryStore: Sendable {
    /// A node's entry for one volume, as the extender uses it.
    public struct Entry: Sendable, Hashable {
        public var node: String
        public var cachedBytes: Int64
        public var logicalBytes: Int64
        public var writer: Bool
        public var reportedAt: ContinuousClock.Instant
    }

    /// One volume's entries as of one instant: a view that hides expired ones.
    public struct LiveEntries: Sendable {
        let entries: [String: Entry]
        let cutoff: ContinuousClock.Instant

        /// Upper bound of the live count (expired entries included); sizes work plans.
        public var storedCount: Int { entries.count }

        public subscript(node: String) -> Entry? {
            guard let entry = entries[node], entry.reportedAt > cutoff else { return nil }
            return entry
        }

        public func forEach(_ body: (Entry) -> Void) {
            for entry in entries.values where entry.reportedAt > cutoff { body(entry) }
        }
    }

    private struct State {
        /// node → (time of its report, the volume ids it listed)
        var nodes: [String: (at: ContinuousClock.Instant, volumes: [String])] = [:]
        /// volume id → node → entry
        var byVolume: [String: [String: Entry]] = [:]
        var lastSweep: ContinuousClock.Instant?
    }

    public let ttl: Duration
    private let now: @Sendable () -> ContinuousClock.Instant
    private let state = Mutex(State())

    /// - Parameter now: the clock; tests pass a manual one to expire reports.
    public init(ttl: Duration = .seconds(90), now: @escaping @Sendable () -> ContinuousClock.Instant = { .now }) {
        self.ttl = ttl
        self.now = now
    }

    /// Replaces `report.node`'s previous report. Duplicate volume ids keep the last.
    public func record(_ report: InventoryReport) {
        let at = now()
        state.withLock { state in
            Self.removeNode(report.node, from: &state)
            var volumes: [String] = []
            volumes.reserveCapacity(report.volumes.count)
            for volume in report.volumes {
                let entry = Entry(node: report.node, cachedBytes: max(0, volume.cachedBytes),
                                  logicalBytes: max(0, volume.logicalBytes), writer: volume.writer, reportedAt: at)
                if state.byVolume[volume.volumeID, default: [:]].updateValue(entry, forKey: report.node) == nil {
                    volumes.append(volume.volumeID)
                }
            }
            state.nodes[report.node] = (at, volumes)
        }
        // A sweep walks every node; a quarter TTL between sweeps keeps memory bounded
        // without making each of thousands of reports pay for it.
        let due = state.withLock { state in
            if let last = state.lastSweep, at - last < ttl / 4 { return false }
            state.lastSweep = at
            return true
        }
        if due { sweep() }
    }

    /// The live entries for `volumeID`, keyed by node.
    public func entries(for volumeID: String) -> [String: Entry] {
        let cutoff = now() - ttl
        return state.withLock { state in
            guard let entries = state.byVolume[volumeID] else { return [:] }
            return entries.filter { $0.value.reportedAt > cutoff }
        }
    }

    /// Several volumes' entries in one lock acquisition, without copying (the
    /// scoring path: a volume cached on thousands of nodes must not be re-hashed
    /// per request). Expired entries are still inside; ``LiveEntries`` skips them.
    public func liveEntries(for volumeIDs: [String]) -> [LiveEntries] {
        let cutoff = now() - ttl
        return state.withLock { state in
            volumeIDs.map { LiveEntries(entries: state.byVolume[$0] ?? [:], cutoff: cutoff) }
        }
    }

    /// Nodes with a live report.
    public var liveNodeCount: Int {
        let cutoff = now() - ttl
        return state.withLock { state in state.nodes.values.count { $0.at > cutoff } }
    }

    /// Drops expired reports. Called after every report; lookups never return
    /// expired entries whether or not a sweep ran.
    public func sweep() {
        let cutoff = now() - ttl
        state.withLock { state in
            for (node, entry) in state.nodes where entry.at <= cutoff {
                Self.removeNode(node, from: &state)
            }
        }
    }

    private static func removeNode(_ node: String, from state: inout State) {
        guard let previous = state.nodes.removeValue(forKey: node) else { return }
        for id in previous.volumes {
            state.byVolume[id]?.removeValue(forKey: node)
            if state.byVolume[id]?.isEmpty == true { state.byVolume.removeValue(forKey: id) }
        }
    }
}
