import Foundation

/// The one interface every Hearth component uses to reach durable storage.
///
/// Hearth needs very little from a storage engine: whole and ranged reads, atomic
/// create-if-absent and compare-and-swap writes, deletes and ordered listings. Those
/// are exactly what S3-compatible engines offer (conditional `PUT`, `ListObjectsV2`),
/// and what a POSIX directory can offer with `O_EXCL`, `link(2)` and `rename(2)`.
/// Keeping the interface this small lets the data model, the records and the garbage
/// collector run unchanged on both backends, and lets tests swap backends freely.
///
/// Keys are `/`-separated relative paths made of `[A-Za-z0-9._/-]`; every backend
/// validates them with ``ObjectKey/validate(_:)`` so no key can escape the store.
public protocol ObjectStore: Sendable {
    /// Reads a whole object. Throws ``StoreError/notFound(_:)`` when absent.
    func get(_ key: String) async throws -> Data

    /// Reads `range` (byte offsets, upper bound exclusive) of an object. A range
    /// reaching past the end is clipped to the object's size, as HTTP ranges are.
    func get(_ key: String, range: Range<Int64>) async throws -> Data

    /// Size, entity tag and modification time of an object, without its bytes.
    func head(_ key: String) async throws -> ObjectInfo

    /// Writes an object atomically (readers see the old or the new bytes, never a
    /// mix) and durably (acknowledged only once the bytes survive a crash).
    ///
    /// - Returns: the new entity tag, usable in a later ``WriteCondition/ifMatch(_:)``.
    /// - Throws: ``StoreError/alreadyExists(_:)`` when `condition` is `.ifAbsent` and
    ///   the key exists; ``StoreError/conflict(_:)`` when `.ifMatch` does not match.
    @discardableResult
    func put(_ key: String, data: Data, condition: WriteCondition) async throws -> String

    /// Stores a content-addressed object: create-if-absent where "already exists" is
    /// success (same name, same bytes). Unlike ``put(_:data:condition:)`` its
    /// durability may be deferred until the next ``flush()``, so a writer uploading a
    /// thousand chunks pays for one flush instead of a thousand (the directory
    /// backend's fsyncs). The object is readable by this store instance at once.
    /// ``VolumeHeads`` flushes before every commit, so no head ever names an object
    /// that is not durable.
    func putContent(_ key: String, data: Data) async throws

    /// Stores many content-addressed objects, each as ``putContent(_:data:)`` would.
    /// A commit of a burst of small files has two objects per file (chunk and
    /// manifest); one call for a batch of them lets a backend pay its per-call
    /// cost once (the directory backend's hop to an I/O thread and back).
    func putContents(_ objects: [ContentObject]) async throws

    /// Makes every earlier ``putContent(_:data:)`` durable and visible to all.
    func flush() async throws

    /// Makes an existing object's modification time now: a writer that reuses
    /// an old content object (dedup) freshens it, so a collection whose grace
    /// cutoff came before cannot take it. Throws ``StoreError/notFound(_:)``
    /// when it is gone (then the writer stores it again).
    func freshen(_ key: String) async throws

    /// See the default implementation; backends override it to close the window.
    func deleteIfStale(_ key: String, cutoff: Date) async throws -> Bool

    /// Deletes an object. Deleting an absent key succeeds (S3 semantics), so
    /// retried deletes and concurrent garbage collectors are harmless.
    func delete(_ key: String) async throws

    /// Lists keys beginning with `prefix` in byte order, at most `limit` per page.
    /// The first page starts strictly after `startAfter` (a key) when given; later
    /// pages continue from the previous page's ``ObjectListing/nextContinuationToken``.
    func list(prefix: String, startAfter: String?, continuationToken: String?, limit: Int) async throws -> ObjectListing
}

extension ObjectStore {
    /// Backends whose writes are durable on return (S3) just create-if-absent;
    /// an object that exists already (same name, same bytes) is freshened when
    /// it is older than ``freshenAfter``, so the collector leaves it alone.
    public func putContent(_ key: String, data: Data) async throws {
        do {
            try await put(key, data: data, condition: .ifAbsent)
        } catch StoreError.alreadyExists {
            do {
                if try await head(key).lastModified < Date().addingTimeInterval(-ObjectStoreTiming.freshenAfter) {
                    try await freshen(key)
                }
            } catch StoreError.notFound {
                try await put(key, data: data, condition: .ifAbsent)  // collected meanwhile: store it again
            }
        }
    }

    /// Up to 8 objects in flight, as the write-back's own chunk uploads.
    public func putContents(_ objects: [ContentObject]) async throws {
        try await forEachConcurrently(objects, limit: 8, { object in
            try await putContent(object.key, data: object.data)
        }, collect: { _ in })
    }

    /// Rewrites the object with its own bytes: for content objects the same
    /// bytes under the same name, with a new modification time.
    public func freshen(_ key: String) async throws {
        try await put(key, data: try await get(key), condition: .none)
    }

    public func flush() async throws {}

    /// Deletes `key` only if nothing wrote or freshened it after `cutoff`;
    /// returns whether it did. The collector's sweep deletes through this, so a
    /// writer that reused an old unreachable chunk (and freshened it) between
    /// the sweep's listing and its delete keeps it. Backends with an atomic
    /// rename close the remaining window between the check and the delete
    /// (``DirectoryStore``); S3 has only this check, a window of one request.
    public func deleteIfStale(_ key: String, cutoff: Date) async throws -> Bool {
        try await headThenDelete(key, cutoff: cutoff)
    }

    func headThenDelete(_ key: String, cutoff: Date) async throws -> Bool {
        let info: ObjectInfo
        do { info = try await head(key) } catch StoreError.notFound { return false }
        guard info.lastModified <= cutoff else { return false }
        try await delete(key)
        return true
    }

    /// Lists every key under `prefix`, following pages. For bounded prefixes only
    /// (records, tests); the garbage collector pages explicitly.
    public func listAll(prefix: String, pageSize: Int = 1000) async throws -> [ObjectInfo] {
        var result: [ObjectInfo] = []
        var token: String? = nil
        repeat {
            let page = try await list(prefix: prefix, startAfter: nil, continuationToken: token, limit: pageSize)
            result.append(contentsOf: page.objects)
            token = page.nextContinuationToken
        } while token != nil
        return result
    }

    /// Whether a key exists (a `head` that maps not-found to `false`).
    public func exists(_ key: String) async throws -> Bool {
        do {
            _ = try await head(key)
            return true
        } catch StoreError.notFound {
            return false
        }
    }
}

/// The precondition attached to a write; the only concurrency control Hearth uses.
public enum WriteCondition: Sendable, Hashable {
    /// Unconditional overwrite.
    case none
    /// Create only: fails with ``StoreError/alreadyExists(_:)`` if the key exists
    /// (S3 `If-None-Match: *`, `O_EXCL` + `link(2)` on a directory).
    case ifAbsent
    /// Compare-and-swap: succeeds only if the current entity tag equals the given one
    /// (S3 `If-Match`); otherwise ``StoreError/conflict(_:)``.
    case ifMatch(String)
}

/// Metadata of one stored object.
public struct ObjectInfo: Sendable, Hashable {
    public var key: String
    public var size: Int64
    /// Opaque; changes on every write of the key.
    public var etag: String
    public var lastModified: Date

    public init(key: String, size: Int64, etag: String, lastModified: Date) {
        self.key = key
        self.size = size
        self.etag = etag
        self.lastModified = lastModified
    }
}

/// One page of a listing.
public struct ObjectListing: Sendable {
    public var objects: [ObjectInfo]
    /// Opaque, backend-specific; nil on the last page.
    public var nextContinuationToken: String?

    public init(objects: [ObjectInfo], nextContinuationToken: String?) {
        self.objects = objects
        self.nextContinuationToken = nextContinuationToken
    }
}

/// Every failure the store layer reports. One enum so that callers (CSI, FUSE) map
/// errors to gRPC codes and errno values in one place each.
public enum StoreError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The key (or record) does not exist.
    case notFound(String)
    /// A create-if-absent write found the key already present.
    case alreadyExists(String)
    /// A compare-and-swap lost: someone else wrote the key since it was read.
    case conflict(String)
    /// The server refused our credentials or signature; carries its message.
    case authentication(String)
    /// A caller-supplied value (id, key, token, range) is malformed.
    case invalidArgument(String)
    /// Stored bytes do not match their content hash or cannot be decoded.
    case corrupt(key: String, reason: String)
    /// The backend kept failing until the retry budget was spent.
    case unavailable(String)
    /// The backend answered something this client does not understand.
    case protocolError(String)
    /// A local I/O failure (directory backend) with its errno description.
    case io(String)

    public var description: String {
        switch self {
        case .notFound(let what): "not found: \(what)"
        case .alreadyExists(let what): "already exists: \(what)"
        case .conflict(let what): "conflict: \(what) was changed by another writer"
        case .authentication(let message): "authentication failed: \(message)"
        case .invalidArgument(let message): "invalid argument: \(message)"
        case .corrupt(let key, let reason): "corrupt object \(key): \(reason)"
        case .unavailable(let message): "store unavailable: \(message)"
        case .protocolError(let message): "unexpected response from store: \(message)"
        case .io(let message): "I/O error: \(message)"
        }
    }
}

/// The single validator for object keys, so no backend has to reason about paths.
public enum ObjectKey {
    /// Rejects keys that could escape the store root or confuse a backend: empty
    /// keys, absolute paths, `.`/`..` components, empty components and characters
    /// outside `[A-Za-z0-9._-/]`.
    public static func validate(_ key: String) throws {
        guard !key.isEmpty, key.utf8.count <= 1024 else {
            throw StoreError.invalidArgument("object key must be 1...1024 bytes")
        }
        for byte in key.utf8 {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "."), UInt8(ascii: "_"),
                UInt8(ascii: "-"), UInt8(ascii: "/"):
                continue
            default:
                throw StoreError.invalidArgument("object key \(key.debugDescription) has a forbidden character")
            }
        }
        for component in key.split(separator: "/", omittingEmptySubsequences: false) {
            if component.isEmpty || component == "." || component == ".." {
                throw StoreError.invalidArgument("object key \(key.debugDescription) has an empty or dot component")
            }
        }
    }

    /// Prefixes may be empty or end in `/`; they follow the key alphabet.
    public static func validatePrefix(_ prefix: String) throws {
        if prefix.isEmpty { return }
        let trimmed = prefix.hasSuffix("/") ? String(prefix.dropLast()) : prefix
        try validate(trimmed.isEmpty ? "x" : trimmed)
    }
}

/// How old a reused content object must be before a writer freshens it: far
/// below any sensible collection grace (hours), far above a commit's length,
/// so a busy writer does not freshen the same chunk again and again.
public enum ObjectStoreTiming {
    public static let freshenAfter: TimeInterval = 600
}
