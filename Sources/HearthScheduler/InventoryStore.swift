import HearthInventory
import Synchronization

/// The extender's view of which node caches what: the latest report of every node,
/// forgotten `ttl` after it arrived (soft state: a node that dies or loses its
/// network stops attracting pods after one TTL, and no one has to clean up).
///
/// Built for the scoring hot path (kube-scheduler gives an extender milliseconds for
/// 5,000 nodes), so everything a prioritize call needs is prepared when reports
/// arrive, not per request:
/// - node names are interned to small integer ids once per report, so summing a
///   pod's volumes per node touches integer-keyed entries, never node strings;
/// - each volume keeps its entries by node id and its size (the largest logical or
///   cached figure any live report gives), recomputed only after it changed;
/// - expiry is a sweep that runs only when the oldest report can have expired, so a
///   lookup never filters entries by time and every stored entry is live.
/// A `Mutex`, not an actor: lookups are short and synchronous, and scoring thousands
/// of nodes must not hop executors.
public final class InventoryStore: Sendable {
    /// A node's entry for one volume, as the extender uses it.
    public struct Entry: Sendable, Hashable {
        public var node: String
        public var cachedBytes: Int64
        public var logicalBytes: Int64
        public var writer: Bool
        public var reportedAt: ContinuousClock.Instant
    }

    /// One volume's cached bytes on a list of candidate nodes.
    public struct Locality: Sendable, Hashable {
        /// The volumes' sizes summed (each at least its store size, see ``locality(of:on:)``).
        public var totalBytes: Int64
        /// Bytes cached per candidate, by the candidate's index; each volume's
        /// contribution clamped to the volume's size.
        public var cachedBytes: [Int64]
    }

    /// A node's entry without the parts shared by the whole report (name, time).
    private struct Slot {
        var cachedBytes: Int64
        var logicalBytes: Int64
        var writer: Bool
    }

    private struct Volume {
        var entries: [Int32: Slot] = [:]
        /// max(logical, cached) over `entries`; nil after a change (recomputed lazily).
        var maxBytes: Int64? = 0

        mutating func size() -> Int64 {
            if let maxBytes { return maxBytes }
            var size: Int64 = 0
            for slot in entries.values { size = max(size, slot.logicalBytes, slot.cachedBytes) }
            maxBytes = size
            return size
        }
    }

    private struct Node {
        var name: String
        var reportedAt: ContinuousClock.Instant
        var volumes: [String]
    }

    private struct State {
        var ids: [String: Int32] = [:]
        /// By id; nil for a free id.
        var nodes: [Node?] = []
        var freeIDs: [Int32] = []
        var volumes: [String: Volume] = [:]
        /// No live report is older than this (a lower bound; exact after a sweep).
        var oldest: ContinuousClock.Instant?
        var liveNodes = 0
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
            Self.expire(before: at - ttl, in: &state)
            let id = Self.remove(report.node, from: &state) ?? Self.allocate(report.node, in: &state)
            var listed: [String] = []
            listed.reserveCapacity(report.volumes.count)
            for volume in report.volumes {
                let slot = Slot(cachedBytes: max(0, volume.cachedBytes), logicalBytes: max(0, volume.logicalBytes),
                                writer: volume.writer)
                let previous = state.volumes[volume.volumeID, default: Volume()].entries.updateValue(slot, forKey: id)
                state.volumes[volume.volumeID]?.maxBytes = nil
                if previous == nil { listed.append(volume.volumeID) }
            }
            state.nodes[Int(id)] = Node(name: report.node, reportedAt: at, volumes: listed)
            state.liveNodes += 1
            state.oldest = min(state.oldest ?? at, at)
        }
    }

    /// The live entries for `volumeID`, keyed by node.
    public func entries(for volumeID: String) -> [String: Entry] {
        let cutoff = now() - ttl
        return state.withLock { state in
            Self.expire(before: cutoff, in: &state)
            guard let volume = state.volumes[volumeID] else { return [:] }
            var result: [String: Entry] = [:]
            for (id, slot) in volume.entries {
                guard let node = state.nodes[Int(id)] else { continue }
                result[node.name] = Entry(node: node.name, cachedBytes: slot.cachedBytes, logicalBytes: slot.logicalBytes,
                                          writer: slot.writer, reportedAt: node.reportedAt)
            }
            return result
        }
    }

    /// How much of `volumes` each of `candidates` caches, in one lock acquisition.
    ///
    /// A volume's size is the largest of `storeBytes` (the store's figure, when
    /// known) and every live report's logical and cached bytes: a node may hold data
    /// not yet committed, and no node can cache more than the volume holds, so a
    /// share never exceeds 100% and a stale store size never inflates one.
    /// Cost: one hash of each candidate's name plus one pass over the volumes'
    /// entries, whatever the number of volumes.
    public func locality(of volumes: [(id: String, storeBytes: Int64?)], on candidates: [String]) -> Locality {
        let cutoff = now() - ttl
        return state.withLock { state in
            Self.expire(before: cutoff, in: &state)
            var total: Int64 = 0
            var perNode: [Int64]? = nil
            for (id, storeBytes) in volumes {
                guard state.volumes[id] != nil else {
                    total += max(0, storeBytes ?? 0)
                    continue
                }
                let size = max(storeBytes ?? 0, state.volumes[id]!.size())
                total += size
                if perNode == nil { perNode = [Int64](repeating: 0, count: state.nodes.count) }
                for (node, slot) in state.volumes[id]!.entries where slot.cachedBytes > 0 {
                    perNode![Int(node)] += min(slot.cachedBytes, size)
                }
            }
            guard let perNode else { return Locality(totalBytes: total, cachedBytes: [Int64](repeating: 0, count: candidates.count)) }
            let ids = state.ids
            return Locality(totalBytes: total, cachedBytes: candidates.map { name in
                ids[name].map { perNode[Int($0)] } ?? 0
            })
        }
    }

    /// Nodes with a live report.
    public var liveNodeCount: Int {
        let cutoff = now() - ttl
        return state.withLock { state in
            Self.expire(before: cutoff, in: &state)
            return state.liveNodes
        }
    }

    /// Drops expired reports now. Never needed for correctness (every lookup expires
    /// what it must first); kept for callers that want memory back at a given time.
    public func sweep() {
        let cutoff = now() - ttl
        state.withLock { state in Self.expire(before: cutoff, in: &state) }
    }

    /// Removes every report made at or before `cutoff`. O(1) unless one can have
    /// expired (the oldest report's bound has passed); then one pass over the nodes.
    private static func expire(before cutoff: ContinuousClock.Instant, in state: inout State) {
        guard let oldest = state.oldest, oldest <= cutoff else { return }
        var newOldest: ContinuousClock.Instant?
        for index in state.nodes.indices {
            guard let node = state.nodes[index] else { continue }
            if node.reportedAt <= cutoff {
                _ = remove(node.name, from: &state)
                state.nodes[index] = nil
                state.ids[node.name] = nil
                state.freeIDs.append(Int32(index))
            } else {
                newOldest = min(newOldest ?? node.reportedAt, node.reportedAt)
            }
        }
        state.oldest = newOldest
    }

    /// Removes `name`'s entries, keeping its id (returned) for a report that follows.
    private static func remove(_ name: String, from state: inout State) -> Int32? {
        guard let id = state.ids[name], let node = state.nodes[Int(id)] else { return nil }
        for volumeID in node.volumes {
            state.volumes[volumeID]?.entries[id] = nil
            state.volumes[volumeID]?.maxBytes = nil
            if state.volumes[volumeID]?.entries.isEmpty == true { state.volumes[volumeID] = nil }
        }
        state.nodes[Int(id)]?.volumes = []
        state.liveNodes -= 1
        return id
    }

    private static func allocate(_ name: String, in state: inout State) -> Int32 {
        let id: Int32
        if let free = state.freeIDs.popLast() {
            id = free
        } else {
            id = Int32(state.nodes.count)
            state.nodes.append(nil)
        }
        state.ids[name] = id
        return id
    }
}
