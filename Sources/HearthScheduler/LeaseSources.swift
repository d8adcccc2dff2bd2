import HearthStore
import Synchronization

/// Where the single-writer lease of a volume is held. The extender keeps writers on
/// the holder's node. A protocol because there are two sources of different
/// authority (below) and tests need a third.
public protocol LeaseSource: Sendable {
    /// The node holding `volumeID`'s writer lease; nil when no node holds it (any
    /// node may then take it).
    func writerLeaseHolder(volumeID: String) async throws -> String?
}

/// The authoritative lease: the publication record the CSI controller keeps in the
/// store (`records/publications/<volume>`, written by ControllerPublishVolume with
/// compare-and-swap). CSI node ids are Kubernetes node names (the node plugin runs
/// with `--node-id=$(NODE_NAME)`), so the holder compares directly with candidates.
///
/// Answers are cached for `cacheFor` (2 s): a filter call for a pod with 8 writable
/// volumes must not cost 8 store round trips, and a lease changes only when a pod
/// starts or stops on another node, which takes longer than that anyway.
public final class PublicationLeaseSource: LeaseSource {
    private let publications: Publications
    private let cacheFor: Duration
    private let cache = Mutex([String: (holder: String?, until: ContinuousClock.Instant)]())

    public init(publications: Publications, cacheFor: Duration = .seconds(2)) {
        self.publications = publications
        self.cacheFor = cacheFor
    }

    public func writerLeaseHolder(volumeID: String) async throws -> String? {
        let now = ContinuousClock.now
        if let cached = cache.withLock({ $0[volumeID] }), cached.until > now { return cached.holder }
        let holder = try await publications.lease(volumeID).writer
        cache.withLock { cache in
            if cache.count > 10_000 { cache.removeAll() }  // bounded; refilled on demand
            cache[volumeID] = (holder, now + cacheFor)
        }
        return holder
    }
}

/// The lease as the nodes report it: a node that has the volume staged read-write
/// says `writer: true` in its inventory; when two live reports claim it (a handover
/// in progress) the most recent wins. It shares the inventory's TTL, so a dead
/// holder stops pinning writers after one TTL. Used when the store cannot be read.
public struct InventoryLeaseSource: LeaseSource {
    public let inventory: InventoryStore

    public init(inventory: InventoryStore) { self.inventory = inventory }

    public func writerLeaseHolder(volumeID: String) async throws -> String? {
        inventory.entries(for: volumeID).values.filter(\.writer).max { $0.reportedAt < $1.reportedAt }?.node
    }
}

/// Asks `primary`; only if it fails (store unreachable), `fallback`. A primary
/// answer of "no holder" is final: the authoritative source says the lease is free.
public struct FallbackLeaseSource: LeaseSource {
    public let primary: any LeaseSource
    public let fallback: any LeaseSource

    public init(primary: any LeaseSource, fallback: any LeaseSource) {
        self.primary = primary
        self.fallback = fallback
    }

    public func writerLeaseHolder(volumeID: String) async throws -> String? {
        do {
            return try await primary.writerLeaseHolder(volumeID: volumeID)
        } catch {
            return try await fallback.writerLeaseHolder(volumeID: volumeID)
        }
    }
}
