import Foundation

/// Read-modify-write of one JSON record by compare-and-swap: the single way
/// records change after creation, so two controllers (or a controller and a
/// CLI) can never silently overwrite each other.
struct RecordUpdate<R: Codable & Sendable>: Sendable {
    let objects: any ObjectStore
    let key: String

    /// Applies `change` to the current record (nil when absent) and writes the
    /// result (nil: delete), retrying on a lost race. Returns what was written.
    @discardableResult
    func apply(_ change: @Sendable (R?) throws -> R?) async throws -> R? {
        while true {
            let current: (record: R, etag: String)?
            do {
                let info = try await objects.head(key)
                let data = try await objects.get(key)
                current = (try Records.decode(R.self, data, key: key), info.etag)
            } catch StoreError.notFound {
                current = nil
            }
            let next = try change(current?.record)
            do {
                switch (current, next) {
                case (nil, nil):
                    return nil
                case (nil, let record?):
                    try await objects.put(key, data: try Records.encoder.encode(record), condition: .ifAbsent)
                case (let old?, let record?):
                    try await objects.put(key, data: try Records.encoder.encode(record), condition: .ifMatch(old.etag))
                case (_?, nil):
                    try await objects.delete(key)
                }
                return next
            } catch StoreError.conflict {
                continue
            } catch StoreError.alreadyExists {
                continue
            }
        }
    }

    func read() async throws -> R? {
        do {
            return try Records.decode(R.self, try await objects.get(key), key: key)
        } catch StoreError.notFound {
            return nil
        }
    }
}

extension Catalog {
    /// Changes a volume's parameters (CSI ControllerModifyVolume) by compare-and-swap.
    public func updateParameters(_ id: String, _ change: @escaping @Sendable ([String: String]) throws -> [String: String]) async throws -> VolumeRecord {
        let update = RecordUpdate<VolumeRecord>(objects: objects, key: try Records.volumeKey(id))
        let written = try await update.apply { existing in
            guard var record = existing else { throw StoreError.notFound("volume \(id)") }
            record.parameters = try change(record.parameters)
            return record
        }
        return written!
    }
}
