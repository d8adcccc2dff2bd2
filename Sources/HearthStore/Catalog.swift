import Foundation

/// Volumes and snapshots as records in the store: what the CSI controller and the
/// CLI call. The store is the only database, so every operation here is built from
/// create-if-absent and compare-and-swap writes and is idempotent:
///
/// - **Create** first claims the name in an index (`index/volume-name/<sha256>`,
///   create-if-absent). The index entry is the intent; the record, written last, is
///   the completion. A crash in between leaves an index naming an id without a
///   record, and the next create with that name finishes the job with that id.
///   Re-creating with the same arguments returns the existing record; different
///   arguments fail with ``StoreError/alreadyExists(_:)`` (CSI `ALREADY_EXISTS`).
/// - **Delete** removes indexes first, then the record, then the head, so a crash
///   leaves at worst a listed volume that a retried delete finishes removing.
///   Deleting an absent id succeeds.
/// - **List** pages by key with opaque tokens (see ``Records``).
public struct Catalog: Sendable {
    public let objects: any ObjectStore
    public let content: ContentStore
    public let heads: VolumeHeads
    /// Record fetches in flight while listing.
    private let listParallelism = 16

    public init(_ objects: any ObjectStore) {
        self.objects = objects
        content = ContentStore(objects)
        heads = VolumeHeads(objects)
    }

    // MARK: volumes

    /// Creates a volume (or returns the one already created under `name`). A new
    /// volume starts at an empty root, or at the root of `source` (copy-on-write: no
    /// data is copied, chunks are shared).
    public func createVolume(name: String, capacityBytes: Int64, parameters: [String: String] = [:],
                             pvc: PVCReference? = nil, source: ContentSource? = nil) async throws -> VolumeRecord {
        guard !name.isEmpty, name.utf8.count <= 1024 else { throw StoreError.invalidArgument("volume name must be 1...1024 bytes") }
        guard capacityBytes >= 0 else { throw StoreError.invalidArgument("capacity must not be negative") }
        let nameKey = Records.volumeNameKey(name)
        let id = try await claim(nameKey, newID: Identifiers.generate("vol"))
        let wanted = VolumeRecord(id: id, name: name, capacityBytes: capacityBytes, parameters: parameters,
                                  pvc: pvc, contentSource: source)
        if let existing = try await volumeIfPresent(id) {
            return try Self.matching(existing, wanted)
        }
        // Finish (or start) creation: head, PVC index, then the record.
        let (root, bytes) = try await initialRoot(for: source)
        do {
            try await heads.create(id, root: root, logicalBytes: bytes)
        } catch StoreError.alreadyExists {}
        if let pvc {
            try await putIndex(try Records.pvcKey(pvc), id: id, overwrite: true)
        }
        do {
            try await objects.put(try Records.volumeKey(id), data: try Records.encoder.encode(wanted), condition: .ifAbsent)
            return wanted
        } catch StoreError.alreadyExists {
            // A concurrent create with the same name won: compare with its record.
            return try Self.matching(try await volume(id), wanted)
        }
    }

    public func volume(_ id: String) async throws -> VolumeRecord {
        guard let record = try await volumeIfPresent(id) else { throw StoreError.notFound("volume \(id)") }
        return record
    }

    public func volume(named name: String) async throws -> VolumeRecord? {
        guard let id = try await index(Records.volumeNameKey(name)) else { return nil }
        return try await volumeIfPresent(id)
    }

    public func volume(pvc: PVCReference) async throws -> VolumeRecord? {
        guard let id = try await index(try Records.pvcKey(pvc)) else { return nil }
        return try await volumeIfPresent(id)
    }

    /// Deletes a volume's record, head and indexes. Its data stays until garbage
    /// collection finds it unreferenced (snapshots of it keep their roots alive).
    public func deleteVolume(_ id: String) async throws {
        guard let record = try await volumeIfPresent(id) else {
            try await objects.delete(try VolumeHeads.key(id))
            return
        }
        let nameKey = Records.volumeNameKey(record.name)
        if try await index(nameKey) == id { try await objects.delete(nameKey) }
        if let pvc = record.pvc, let pvcKey = try? Records.pvcKey(pvc), try await index(pvcKey) == id {
            try await objects.delete(pvcKey)
        }
        try await objects.delete(try Records.volumeKey(id))
        try await objects.delete(try VolumeHeads.key(id))
    }

    /// Changes a volume's capacity (CSI ControllerExpandVolume) by compare-and-swap.
    public func setCapacity(_ id: String, capacityBytes: Int64) async throws -> VolumeRecord {
        let key = try Records.volumeKey(id)
        while true {
            let info = try await objects.head(key)
            var record = try Records.decode(VolumeRecord.self, try await objects.get(key), key: key)
            record.capacityBytes = capacityBytes
            do {
                try await objects.put(key, data: try Records.encoder.encode(record), condition: .ifMatch(info.etag))
                return record
            } catch StoreError.conflict {
                continue  // someone else updated the record; re-read and retry
            }
        }
    }

    public func listVolumes(maxEntries: Int = 0, token: String? = nil) async throws -> RecordPage<VolumeRecord> {
        try await listRecords(prefix: Records.volumePrefix, maxEntries: maxEntries, token: token, VolumeRecord.self) { _ in true }
    }

    // MARK: snapshots

    /// Pins the current root of `sourceVolumeID` under `name` (idempotent by name).
    public func createSnapshot(name: String, sourceVolumeID: String, groupID: String? = nil) async throws -> SnapshotRecord {
        guard !name.isEmpty, name.utf8.count <= 1024 else { throw StoreError.invalidArgument("snapshot name must be 1...1024 bytes") }
        try Identifiers.validate(sourceVolumeID)
        if let groupID { try Identifiers.validate(groupID) }
        let id = try await claim(Records.snapshotNameKey(name), newID: Identifiers.generate("snap"))
        if let existing = try await snapshotIfPresent(id) {
            guard existing.sourceVolumeID == sourceVolumeID else {
                throw StoreError.alreadyExists("snapshot \(name.debugDescription) exists for volume \(existing.sourceVolumeID)")
            }
            return existing
        }
        guard try await volumeIfPresent(sourceVolumeID) != nil else { throw StoreError.notFound("volume \(sourceVolumeID)") }
        let (head, _) = try await heads.read(sourceVolumeID)
        let record = SnapshotRecord(id: id, name: name, sourceVolumeID: sourceVolumeID, root: head.rootHash!,
                                    logicalBytes: head.logicalBytes, groupID: groupID)
        do {
            try await objects.put(try Records.snapshotKey(id), data: try Records.encoder.encode(record), condition: .ifAbsent)
            return record
        } catch StoreError.alreadyExists {
            return try await snapshot(id)
        }
    }

    public func snapshot(_ id: String) async throws -> SnapshotRecord {
        guard let record = try await snapshotIfPresent(id) else { throw StoreError.notFound("snapshot \(id)") }
        return record
    }

    public func snapshot(named name: String) async throws -> SnapshotRecord? {
        guard let id = try await index(Records.snapshotNameKey(name)) else { return nil }
        return try await snapshotIfPresent(id)
    }

    public func deleteSnapshot(_ id: String) async throws {
        guard let record = try await snapshotIfPresent(id) else { return }
        let nameKey = Records.snapshotNameKey(record.name)
        if try await index(nameKey) == id { try await objects.delete(nameKey) }
        try await objects.delete(try Records.snapshotKey(id))
    }

    /// Lists snapshots, optionally only those of one source volume.
    public func listSnapshots(sourceVolumeID: String? = nil, maxEntries: Int = 0,
                              token: String? = nil) async throws -> RecordPage<SnapshotRecord> {
        if let sourceVolumeID { try Identifiers.validate(sourceVolumeID) }
        return try await listRecords(prefix: Records.snapshotPrefix, maxEntries: maxEntries, token: token,
                                     SnapshotRecord.self) { sourceVolumeID == nil || $0.sourceVolumeID == sourceVolumeID }
    }

    // MARK: helpers

    /// Claims `indexKey` for `newID`, or returns the id someone else claimed it for.
    func claim(_ indexKey: String, newID: String) async throws -> String {
        do {
            try await objects.put(indexKey, data: try Records.encoder.encode(IndexEntry(id: newID)), condition: .ifAbsent)
            return newID
        } catch StoreError.alreadyExists {
            guard let id = try await index(indexKey) else {
                // Deleted between our attempt and our read: try once more.
                try await objects.put(indexKey, data: try Records.encoder.encode(IndexEntry(id: newID)), condition: .ifAbsent)
                return newID
            }
            return id
        }
    }

    private func putIndex(_ key: String, id: String, overwrite: Bool) async throws {
        try await objects.put(key, data: try Records.encoder.encode(IndexEntry(id: id)), condition: overwrite ? .none : .ifAbsent)
    }

    func index(_ key: String) async throws -> String? {
        do {
            let entry = try Records.decode(IndexEntry.self, try await objects.get(key), key: key)
            try Identifiers.validate(entry.id)
            return entry.id
        } catch StoreError.notFound {
            return nil
        }
    }

    private func volumeIfPresent(_ id: String) async throws -> VolumeRecord? {
        let key = try Records.volumeKey(id)
        do {
            return try Records.decode(VolumeRecord.self, try await objects.get(key), key: key)
        } catch StoreError.notFound {
            return nil
        }
    }

    private func snapshotIfPresent(_ id: String) async throws -> SnapshotRecord? {
        let key = try Records.snapshotKey(id)
        do {
            return try Records.decode(SnapshotRecord.self, try await objects.get(key), key: key)
        } catch StoreError.notFound {
            return nil
        }
    }

    private func initialRoot(for source: ContentSource?) async throws -> (ContentHash, Int64) {
        switch source {
        case nil:
            return (try await content.putTree(.empty), 0)
        case .snapshot(let id):
            let snapshot = try await snapshot(id)
            guard let root = snapshot.rootHash else { throw StoreError.corrupt(key: try Records.snapshotKey(id), reason: "bad root") }
            return (root, snapshot.logicalBytes)
        case .volume(let id):
            _ = try await volume(id)
            let (head, _) = try await heads.read(id)
            return (head.rootHash!, head.logicalBytes)
        }
    }

    private static func matching(_ existing: VolumeRecord, _ wanted: VolumeRecord) throws -> VolumeRecord {
        guard existing.capacityBytes == wanted.capacityBytes, existing.parameters == wanted.parameters,
              existing.contentSource == wanted.contentSource else {
            throw StoreError.alreadyExists("volume \(wanted.name.debugDescription) exists with different capacity, parameters or source")
        }
        return existing
    }

    private func listRecords<R: Decodable & Sendable>(
        prefix: String, maxEntries: Int, token: String?, _ type: R.Type, include: @escaping @Sendable (R) -> Bool
    ) async throws -> RecordPage<R> {
        guard maxEntries >= 0 else { throw StoreError.invalidArgument("max entries must not be negative") }
        let limit = maxEntries == 0 ? 1000 : min(maxEntries, 1000)
        var after = try token.map { try Records.key(fromToken: $0, prefix: prefix) }
        var records: [R] = []
        while true {
            let page = try await objects.list(prefix: prefix, startAfter: after, continuationToken: nil,
                                              limit: limit - records.count)
            let objects = self.objects
            var fetched = [R?](repeating: nil, count: page.objects.count)
            let keys = Array(page.objects.map(\.key).enumerated())
            try await forEachConcurrently(keys, limit: listParallelism, { index, key -> (Int, R?) in
                do {
                    return (index, try Records.decode(R.self, try await objects.get(key), key: key))
                } catch StoreError.notFound {
                    return (index, nil)  // deleted since the listing
                }
            }, collect: { index, record in fetched[index] = record })
            records += fetched.compactMap { $0 }.filter(include)
            guard let last = page.objects.last?.key, page.nextContinuationToken != nil else {
                return RecordPage(records: records, nextToken: nil)
            }
            after = last
            if records.count >= limit {
                return RecordPage(records: records, nextToken: Records.token(forKey: last))
            }
        }
    }
}
