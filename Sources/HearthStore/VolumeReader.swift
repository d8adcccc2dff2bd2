import Foundation

/// Reads one volume version (a root tree hash): resolve paths, list directories,
/// read file ranges fetching only the chunks a read needs.
///
/// Every object is verified by ``ContentStore`` as it is fetched, so a reader never
/// returns bytes that do not match the hashes the tree names.
public struct VolumeReader: Sendable {
    public let content: ContentStore
    public let root: ContentHash
    /// Chunk fetches in flight for one read.
    public let parallelism: Int

    public init(content: ContentStore, root: ContentHash, parallelism: Int = 8) {
        self.content = content
        self.root = root
        self.parallelism = max(1, parallelism)
    }

    /// Splits `/a/b/c` (or `a/b/c`) into validated names; `/` is the root.
    public static func components(_ path: String) throws -> [String] {
        let names = path.split(separator: "/").map(String.init)
        for name in names { try TreeEntry.validateName(name) }
        return names
    }

    /// The entry at `path`, or nil if the root itself was asked for.
    /// Throws ``StoreError/notFound(_:)`` when a component is missing or not a directory.
    public func resolve(_ path: String) async throws -> TreeEntry? {
        let names = try Self.components(path)
        var tree = try await content.tree(root)
        var entry: TreeEntry? = nil
        for (i, name) in names.enumerated() {
            guard let found = tree.entry(named: name) else { throw StoreError.notFound(path) }
            entry = found
            if i < names.count - 1 {
                guard found.kind == .directory, let child = found.child else { throw StoreError.notFound(path) }
                tree = try await content.tree(child)
            }
        }
        return entry
    }

    /// Entries of the directory at `path`.
    public func list(_ path: String) async throws -> [TreeEntry] {
        guard let entry = try await resolve(path) else { return try await content.tree(root).entries }
        guard entry.kind == .directory, let child = entry.child else {
            throw StoreError.invalidArgument("\(path) is not a directory")
        }
        return try await content.tree(child).entries
    }

    /// The manifest of the file at `path`.
    public func manifest(_ path: String) async throws -> Manifest {
        guard let entry = try await resolve(path), entry.kind == .file, let child = entry.child else {
            throw StoreError.invalidArgument("\(path) is not a regular file")
        }
        return try await content.manifest(child)
    }

    /// Reads `range` of the file at `path` (clipped to its size).
    public func read(_ path: String, range: Range<Int64>? = nil) async throws -> Data {
        let manifest = try await manifest(path)
        return try await read(manifest, range: range ?? 0..<manifest.size)
    }

    /// Reads `range` of a file given its manifest: fetches exactly the overlapping
    /// chunks, in parallel, and assembles the requested bytes.
    public func read(_ manifest: Manifest, range: Range<Int64>) async throws -> Data {
        let lower = max(0, range.lowerBound)
        let upper = min(range.upperBound, manifest.size)
        guard upper > lower else { return Data() }
        var out = Data()
        out.reserveCapacity(Int(upper - lower))
        try await forEachChunk(of: manifest, range: lower..<upper) { offset, chunk in
            let chunkEnd = offset + Int64(chunk.count)
            let from = Int(max(lower, offset) - offset)
            let to = Int(min(upper, chunkEnd) - offset)
            out.append(chunk[chunk.startIndex + from..<chunk.startIndex + to])
        }
        return out
    }

    /// Calls `body` with each chunk overlapping `range`, in file order, while up to
    /// `parallelism` later chunks are already being fetched (read-ahead for
    /// sequential consumers such as copying a file out).
    public func forEachChunk(of manifest: Manifest, range: Range<Int64>? = nil,
                             _ body: (_ offset: Int64, _ chunk: Data) async throws -> Void) async throws {
        let indexes = manifest.chunkIndexes(covering: range ?? 0..<manifest.size)
        guard !indexes.isEmpty else { return }
        let content = self.content
        try await withThrowingTaskGroup(of: (Int, Data).self) { group in
            var next = indexes.lowerBound
            var ready: [Int: Data] = [:]
            func launch() {
                let index = next
                next += 1
                let hash = manifest.chunks[index]
                let length = manifest.length(ofChunk: index)
                group.addTask { (index, try await content.chunk(hash, length: length)) }
            }
            while next < indexes.upperBound && next - indexes.lowerBound < parallelism { launch() }
            for index in indexes {
                while ready[index] == nil {
                    guard let done = try await group.next() else {
                        throw StoreError.protocolError("chunk fetch for index \(index) vanished")
                    }
                    ready[done.0] = done.1
                }
                let data = ready.removeValue(forKey: index)!
                if next < indexes.upperBound { launch() }
                try await body(Int64(index) * Int64(manifest.chunkSize), data)
            }
        }
    }
}

/// A volume's current version: the record that names its root tree.
///
/// Stored as JSON at `volumes/<id>/head` and only ever replaced by compare-and-swap,
/// so two writers can never silently overwrite each other: the loser gets
/// ``StoreError/conflict(_:)`` and must rebase on the new head.
public struct VolumeHead: Codable, Sendable, Hashable {
    public var root: String
    /// Increments by one on every commit.
    public var generation: UInt64
    public var committedAt: Date
    /// Sum of file sizes in this version (what a snapshot of it reports).
    public var logicalBytes: Int64

    public init(root: ContentHash, generation: UInt64, committedAt: Date = Date(), logicalBytes: Int64) {
        self.root = root.hex
        self.generation = generation
        self.committedAt = committedAt.wholeSeconds
        self.logicalBytes = logicalBytes
    }

    public var rootHash: ContentHash? { ContentHash(hex: root) }
}

/// Reads and commits volume heads.
public struct VolumeHeads: Sendable {
    public let objects: any ObjectStore

    public init(_ objects: any ObjectStore) {
        self.objects = objects
    }

    public static func key(_ volumeID: String) throws -> String {
        try Identifiers.validate(volumeID)
        return "volumes/\(volumeID)/head"
    }

    /// The head and its entity tag (pass the tag to ``commit(_:root:logicalBytes:expected:)``).
    public func read(_ volumeID: String) async throws -> (head: VolumeHead, etag: String) {
        let key = try Self.key(volumeID)
        // Read the tag first: if the object changes in between, the tag is stale and
        // the commit fails safely with a conflict instead of overwriting.
        let info = try await objects.head(key)
        let data = try await objects.get(key)
        guard let head = try? Records.decoder.decode(VolumeHead.self, from: data), head.rootHash != nil else {
            throw StoreError.corrupt(key: key, reason: "not a volume head")
        }
        return (head, info.etag)
    }

    /// Creates the first head of a new volume (generation 1); `alreadyExists` if any.
    @discardableResult
    public func create(_ volumeID: String, root: ContentHash, logicalBytes: Int64) async throws -> String {
        let head = VolumeHead(root: root, generation: 1, logicalBytes: logicalBytes)
        try await objects.flush()  // everything the root names is durable before it is named
        return try await objects.put(try Self.key(volumeID), data: try Records.encoder.encode(head), condition: .ifAbsent)
    }

    /// Replaces the head read as `expected` with a new root, or throws
    /// ``StoreError/conflict(_:)`` if someone else committed in between.
    @discardableResult
    public func commit(_ volumeID: String, root: ContentHash, logicalBytes: Int64,
                       expected: (head: VolumeHead, etag: String)) async throws -> (head: VolumeHead, etag: String) {
        let head = VolumeHead(root: root, generation: expected.head.generation + 1, logicalBytes: logicalBytes)
        try await objects.flush()  // everything the root names is durable before it is named
        let etag = try await objects.put(try Self.key(volumeID), data: try Records.encoder.encode(head),
                                         condition: .ifMatch(expected.etag))
        return (head, etag)
    }
}
