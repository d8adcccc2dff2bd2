import Foundation

/// What one node caches, as it tells the scheduler extender (`POST /inventory`).
///
/// A report is the node's whole truth at that moment: the extender replaces the
/// node's previous report with it (no deltas to lose or reorder), and forgets it once
/// it is older than the extender's TTL. So a node that disappears stops attracting
/// pods after one TTL, without anyone having to tell the extender.
public struct InventoryReport: Codable, Sendable, Hashable {
    /// The Kubernetes node name (what kube-scheduler calls the node).
    public var node: String
    /// Every volume with bytes in this node's cache. Volumes with nothing cached may
    /// be left out; a writer lease is reported even with zero bytes cached.
    public var volumes: [CachedVolume]

    public init(node: String, volumes: [CachedVolume]) {
        self.node = node
        self.volumes = volumes
    }
}

/// One volume in a node's cache.
public struct CachedVolume: Codable, Sendable, Hashable {
    /// The volume id (`VolumeRecord.id`, the CSI volume handle).
    public var volumeID: String
    /// Bytes of the volume's current data held in this node's cache.
    public var cachedBytes: Int64
    /// The volume's logical size as this node sees it (its current root). Lets the
    /// extender size the denominator of the cached share without reading the store;
    /// 0 when unknown.
    public var logicalBytes: Int64
    /// True when this node has the volume staged read-write, i.e. holds its
    /// single-writer lease. The extender keeps other writers off other nodes.
    public var writer: Bool

    public init(volumeID: String, cachedBytes: Int64, logicalBytes: Int64 = 0, writer: Bool = false) {
        self.volumeID = volumeID
        self.cachedBytes = cachedBytes
        self.logicalBytes = logicalBytes
        self.writer = writer
    }
}

/// The extender's answer to an accepted report: how long the report lives, so a
/// reporter can check that its interval is comfortably shorter.
public struct InventoryAck: Codable, Sendable, Hashable {
    public var node: String
    public var volumes: Int
    public var ttlSeconds: Int

    public init(node: String, volumes: Int, ttlSeconds: Int) {
        self.node = node
        self.volumes = volumes
        self.ttlSeconds = ttlSeconds
    }
}
