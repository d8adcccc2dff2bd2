import Foundation

/// Content-addressed objects (chunks, manifests, trees) on top of an ``ObjectStore``,
/// with the integrity rule of the whole store layer enforced in one place:
///
/// every object read is hashed and compared with its name; on a mismatch it is read
/// once more (a torn read or a flaky proxy), and if it still does not match the read
/// fails with ``StoreError/corrupt(key:reason:)``. Corrupt bytes are never returned.
///
/// Writes use create-if-absent, and "already exists" is success: the existing
/// object has the same name, hence the same bytes. Identical content is stored once.
public struct ContentStore: Sendable {
    public let objects: any ObjectStore

    public init(_ objects: any ObjectStore) {
        self.objects = objects
    }

    // MARK: raw objects

    /// Stores `data` under its hash as an object of `kind`; returns the hash.
    @discardableResult
    public func put(_ kind: ObjectKind, _ data: Data) async throws -> ContentHash {
        let hash = ContentHash.of(data)
        try await put(kind, data, hash: hash)
        return hash
    }

    /// Stores bytes whose hash the caller already computed (chunkers hash anyway).
    /// Durable after the next ``ObjectStore/flush()`` (commits flush first).
    public func put(_ kind: ObjectKind, _ data: Data, hash: ContentHash) async throws {
        try await objects.putContent(kind.key(hash), data: data)
    }

    /// Reads and verifies an object.
    public func get(_ kind: ObjectKind, _ hash: ContentHash) async throws -> Data {
        let key = kind.key(hash)
        var data = try await objects.get(key)
        if ContentHash.of(data) == hash { return data }
        data = try await objects.get(key)
        if ContentHash.of(data) == hash { return data }
        throw StoreError.corrupt(key: key, reason: "content does not match its SHA-256 (\(data.count) bytes read)")
    }

    // MARK: typed objects

    /// Stores one chunk of file data; an all-zero chunk becomes a hole and is not stored.
    @discardableResult
    public func putChunk(_ data: Data) async throws -> ContentHash {
        if Self.isAllZero(data) { return .zero }
        return try await put(.chunk, data)
    }

    /// Reads a chunk, verified. A hole yields `length` zero bytes.
    public func chunk(_ hash: ContentHash, length: Int) async throws -> Data {
        if hash.isZero { return Data(count: length) }
        let data = try await get(.chunk, hash)
        guard data.count == length else {
            throw StoreError.corrupt(key: ObjectKind.chunk.key(hash), reason: "chunk has \(data.count) bytes, manifest says \(length)")
        }
        return data
    }

    @discardableResult
    public func putManifest(_ manifest: Manifest) async throws -> ContentHash {
        try await put(.manifest, manifest.encoded())
    }

    public func manifest(_ hash: ContentHash) async throws -> Manifest {
        try Manifest.decode(try await get(.manifest, hash), key: ObjectKind.manifest.key(hash))
    }

    @discardableResult
    public func putTree(_ tree: Tree) async throws -> ContentHash {
        try await put(.tree, tree.encoded())
    }

    public func tree(_ hash: ContentHash) async throws -> Tree {
        try Tree.decode(try await get(.tree, hash), key: ObjectKind.tree.key(hash))
    }

    static func isAllZero(_ data: Data) -> Bool {
        data.withUnsafeBytes { raw in
            var i = 0
            let count = raw.count
            // Word-at-a-time scan: chunks are 1 MiB and most are not zero, so this
            // usually returns within the first word.
            while i + 8 <= count {
                if raw.loadUnaligned(fromByteOffset: i, as: UInt64.self) != 0 { return false }
                i += 8
            }
            while i < count {
                if raw[i] != 0 { return false }
                i += 1
            }
            return true
        }
    }
}
