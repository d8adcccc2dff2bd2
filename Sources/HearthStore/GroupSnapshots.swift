import Foundation

/// Snapshots of several volumes taken together (CSI group snapshots): one
/// record naming its member snapshots, each of which carries the group id.
public struct GroupSnapshotRecord: Codable, Sendable, Hashable {
    public var id: String
    public var name: String
    public var sourceVolumeIDs: [String]
    public var snapshotIDs: [String]
    public var createdAt: Date

    public init(id: String, name: String, sourceVolumeIDs: [String], snapshotIDs: [String], createdAt: Date = Date()) {
        self.id = id
        self.name = name
        self.sourceVolumeIDs = sourceVolumeIDs
        self.snapshotIDs = snapshotIDs
        self.createdAt = createdAt.wholeSeconds
    }
}

extension Catalog {
    static func groupKey(_ id: String) throws -> String {
        try Identifiers.validate(id)
        return "records/groups/\(id)"
    }

    static func groupNameKey(_ name: String) -> String {
        "index/group-name/" + ContentHash.of(Data(name.utf8)).hex
    }

    /// Pins the current roots of `volumeIDs` as one group (idempotent by name:
    /// the same name with other volumes is ``StoreError/alreadyExists(_:)``).
    /// Heads are read together after the caller has had every volume committed,
    /// so the group holds one commit per volume from the same moment.
    public func createGroupSnapshot(name: String, volumeIDs: [String]) async throws -> GroupSnapshotRecord {
        guard !name.isEmpty, name.utf8.count <= 1024 else { throw StoreError.invalidArgument("group snapshot name must be 1...1024 bytes") }
        guard !volumeIDs.isEmpty else { throw StoreError.invalidArgument("a group snapshot needs source volumes") }
        for id in volumeIDs { try Identifiers.validate(id) }
        let sources = volumeIDs.sorted()
        let id = try await claim(Self.groupNameKey(name), newID: Identifiers.generate("group"))
        let update = RecordUpdate<GroupSnapshotRecord>(objects: objects, key: try Self.groupKey(id))
        if let existing = try await update.read() {
            guard existing.sourceVolumeIDs == sources else {
                throw StoreError.alreadyExists("group snapshot \(name.debugDescription) exists for volumes \(existing.sourceVolumeIDs)")
            }
            return existing
        }
        for volumeID in sources { _ = try await volume(volumeID) }
        // Member names derive from the group's id: a retried create finds them again.
        var snapshotIDs: [String] = []
        for volumeID in sources {
            snapshotIDs.append(try await createSnapshot(name: "\(id)/\(volumeID)", sourceVolumeID: volumeID, groupID: id).id)
        }
        let record = GroupSnapshotRecord(id: id, name: name, sourceVolumeIDs: sources, snapshotIDs: snapshotIDs)
        return try await update.apply { existing in existing ?? record } ?? record
    }

    public func groupSnapshot(_ id: String) async throws -> GroupSnapshotRecord {
        guard let record = try await RecordUpdate<GroupSnapshotRecord>(objects: objects, key: try Self.groupKey(id)).read() else {
            throw StoreError.notFound("group snapshot \(id)")
        }
        return record
    }

    public func groupSnapshot(named name: String) async throws -> GroupSnapshotRecord? {
        guard let id = try await index(Self.groupNameKey(name)) else { return nil }
        return try? await groupSnapshot(id)
    }

    /// Deletes the group and its member snapshots (absent: nothing to do).
    public func deleteGroupSnapshot(_ id: String) async throws {
        let update = RecordUpdate<GroupSnapshotRecord>(objects: objects, key: try Self.groupKey(id))
        guard let record = try await update.read() else { return }
        for snapshotID in record.snapshotIDs { try await deleteSnapshot(snapshotID) }
        if try await index(Self.groupNameKey(record.name)) == id { try await objects.delete(Self.groupNameKey(record.name)) }
        try await update.apply { _ in nil }
    }
}
