import Foundation

/// Which nodes a volume is published to (CSI ControllerPublishVolume), kept as
/// a single-writer lease: at most one node writes, any number read.
public struct PublicationRecord: Codable, Sendable, Hashable {
    public var volumeID: String
    /// The node holding the write lease.
    public var writer: String?
    /// Nodes holding read-only publications, sorted.
    public var readers: [String]

    public init(volumeID: String, writer: String? = nil, readers: [String] = []) {
        self.volumeID = volumeID
        self.writer = writer
        self.readers = readers
    }

    /// Every node the volume is published to, sorted, without repeats.
    public var nodes: [String] { Array(Set(readers + (writer.map { [$0] } ?? []))).sorted() }
}

/// How a node asks for a volume.
public struct PublishRequest: Sendable, Hashable {
    public var volumeID: String
    public var nodeID: String
    /// Writers take the lease; readers do not.
    public var writer: Bool
    /// Single-node access modes: no other node may have the volume at all.
    public var singleNode: Bool
    /// The node's attach limit (0: none).
    public var maxVolumesOnNode: Int

    public init(volumeID: String, nodeID: String, writer: Bool, singleNode: Bool, maxVolumesOnNode: Int) {
        self.volumeID = volumeID
        self.nodeID = nodeID
        self.writer = writer
        self.singleNode = singleNode
        self.maxVolumesOnNode = maxVolumesOnNode
    }
}

public enum PublishError: Error, Sendable, Equatable {
    /// Another node holds the write lease (or the volume, for single-node modes).
    case heldElsewhere(String)
    /// This node already has the volume, published differently.
    case incompatible(String)
    /// The node is at its attach limit.
    case nodeFull(String)
}

/// Leases and the per-node attachment index behind ControllerPublish/Unpublish.
///
/// Layout: `records/publications/<volume>` (the lease, changed only by
/// compare-and-swap) and `records/attachments/<node>/<volume>` (one marker per
/// attachment, to count a node's volumes without scanning every lease). A
/// marker is written before the lease and removed after it, so a crash in
/// between over-counts (safe) and never under-counts.
public struct Publications: Sendable {
    public let objects: any ObjectStore

    public init(_ objects: any ObjectStore) { self.objects = objects }

    static func leaseKey(_ volumeID: String) throws -> String {
        try Identifiers.validate(volumeID)
        return "records/publications/\(volumeID)"
    }

    static func attachmentPrefix(_ nodeID: String) throws -> String {
        try NodeRegistry.validateNodeID(nodeID)
        return "records/attachments/\(NodeRegistry.keySafe(nodeID))/"
    }

    public func lease(_ volumeID: String) async throws -> PublicationRecord {
        try await RecordUpdate<PublicationRecord>(objects: objects, key: try Self.leaseKey(volumeID)).read()
            ?? PublicationRecord(volumeID: volumeID)
    }

    /// Publishes (idempotently: the same request again succeeds).
    public func publish(_ request: PublishRequest) async throws -> PublicationRecord {
        let current = try await lease(request.volumeID)
        if let problem = Self.conflict(current, request) { throw problem }
        let marker = try Self.attachmentPrefix(request.nodeID) + request.volumeID
        if !current.nodes.contains(request.nodeID) {
            if request.maxVolumesOnNode > 0 {
                let attached = try await objects.listAll(prefix: try Self.attachmentPrefix(request.nodeID))
                    .filter { $0.key != marker }.count
                guard attached < request.maxVolumesOnNode else {
                    throw PublishError.nodeFull("node \(request.nodeID) already has \(attached) of its \(request.maxVolumesOnNode) volumes")
                }
            }
            _ = try await objects.put(marker, data: Data("{}".utf8), condition: .none)
        }
        let update = RecordUpdate<PublicationRecord>(objects: objects, key: try Self.leaseKey(request.volumeID))
        let written = try await update.apply { existing in
            var record = existing ?? PublicationRecord(volumeID: request.volumeID)
            if let problem = Self.conflict(record, request) { throw problem }
            if request.writer {
                record.writer = request.nodeID
            } else if !record.readers.contains(request.nodeID) {
                record.readers = (record.readers + [request.nodeID]).sorted()
            }
            return record
        }
        return written ?? PublicationRecord(volumeID: request.volumeID)
    }

    /// Why `request` cannot be granted against `lease`, or nil.
    static func conflict(_ lease: PublicationRecord, _ request: PublishRequest) -> PublishError? {
        let node = request.nodeID
        if lease.writer == node && !request.writer || lease.readers.contains(node) && request.writer {
            return .incompatible("volume \(request.volumeID) is already published to \(node) \(request.writer ? "read-only" : "read-write")")
        }
        if request.writer, let holder = lease.writer, holder != node {
            return .heldElsewhere("volume \(request.volumeID) is published read-write to node \(holder); one writer at a time")
        }
        if request.singleNode, let other = lease.nodes.first(where: { $0 != node }) {
            return .heldElsewhere("volume \(request.volumeID) has a single-node access mode and is published to node \(other)")
        }
        return nil
    }

    /// Unpublishes from one node, or from every node when `nodeID` is nil.
    public func unpublish(volumeID: String, nodeID: String?) async throws {
        let update = RecordUpdate<PublicationRecord>(objects: objects, key: try Self.leaseKey(volumeID))
        let before = try await lease(volumeID)
        try await update.apply { existing in
            guard var record = existing else { return nil }
            if let nodeID {
                if record.writer == nodeID { record.writer = nil }
                record.readers.removeAll { $0 == nodeID }
            } else {
                record.writer = nil
                record.readers = []
            }
            return record.nodes.isEmpty ? nil : record
        }
        for node in before.nodes where nodeID == nil || node == nodeID {
            try await objects.delete(try Self.attachmentPrefix(node) + volumeID)
        }
    }

    /// Volumes published to `nodeID`.
    public func volumes(on nodeID: String) async throws -> [String] {
        let prefix = try Self.attachmentPrefix(nodeID)
        return try await objects.listAll(prefix: prefix).map { String($0.key.dropFirst(prefix.count)) }
    }
}
