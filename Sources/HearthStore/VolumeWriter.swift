import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Turns file bytes into stored chunks and a manifest, uploading chunks with bounded
/// parallelism.
///
/// Object stores reward concurrency (each request has tens of milliseconds of
/// latency) but unbounded concurrency turns a large file into unbounded memory, so at
/// most `parallelism` chunks are in flight; reading the next chunk waits for a slot.
public struct FileWriter: Sendable {
    public let content: ContentStore
    public let chunkSize: Int
    public let parallelism: Int

    public init(content: ContentStore, chunkSize: Int = Manifest.defaultChunkSize, parallelism: Int = 8) throws {
        guard Manifest.chunkSizeRange.contains(chunkSize) else {
            throw StoreError.invalidArgument("chunk size \(chunkSize) outside \(Manifest.chunkSizeRange)")
        }
        self.content = content
        self.chunkSize = chunkSize
        self.parallelism = max(1, parallelism)
    }

    /// Stores in-memory bytes as a file.
    public func write(_ data: Data) async throws -> Manifest {
        var offset = 0
        return try await write {
            guard offset < data.count else { return nil }
            let end = min(offset + chunkSize, data.count)
            defer { offset = end }
            return data.subdata(in: offset..<end)
        }
    }

    /// Stores a local file, reading it chunk by chunk (never whole into memory).
    public func write(contentsOf path: String) async throws -> Manifest {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw DirectoryStore.posixError("open \(path)") }
        defer { close(fd) }
        var offset: Int64 = 0
        let chunkSize = self.chunkSize
        return try await write {
            let data = try DirectoryStore.readFully(fd: fd, offset: offset, count: chunkSize, key: path)
            offset += Int64(data.count)
            return data.isEmpty ? nil : data
        }
    }

    /// Stores the chunks `next` returns (each exactly `chunkSize` bytes except the
    /// last; nil or empty at the end) and returns the file's manifest. The manifest
    /// itself is not stored: callers store it with ``ContentStore/putManifest(_:)``
    /// or through ``TreeBuilder``.
    public func write(next: () async throws -> Data?) async throws -> Manifest {
        let content = self.content
        let parallelism = self.parallelism
        let chunkSize = self.chunkSize
        return try await withThrowingTaskGroup(of: (Int, ContentHash).self) { group in
            var hashes: [ContentHash] = []
            var size: Int64 = 0
            var inFlight = 0
            var sawShort = false
            while let data = try await next(), !data.isEmpty {
                guard !sawShort, data.count <= chunkSize else {
                    throw StoreError.invalidArgument("only the last chunk of a file may be shorter than \(chunkSize) bytes")
                }
                sawShort = data.count < chunkSize
                if inFlight >= parallelism, let done = try await group.next() {
                    hashes[done.0] = done.1
                    inFlight -= 1
                }
                let index = hashes.count
                hashes.append(.zero)
                size += Int64(data.count)
                group.addTask { (index, try await content.putChunk(data)) }
                inFlight += 1
            }
            for try await (index, hash) in group { hashes[index] = hash }
            return Manifest(size: size, chunkSize: chunkSize, chunks: hashes)
        }
    }
}

/// Builds a directory hierarchy in memory and writes it bottom-up: manifests and
/// child trees first, each parent after its children, so every tree in the store
/// refers only to objects already stored. The FUSE daemon's write-back uses it to
/// commit a new volume version; commit the returned root with ``VolumeHeads``.
public struct TreeBuilder: Sendable {
    private indirect enum Node: Sendable {
        case leaf(TreeEntry, Manifest?)
        case directory(TreeEntry, TreeBuilder)
    }

    private var nodes: [String: Node] = [:]

    public init() {}

    /// Adds a non-directory entry. For a file pass its `manifest` (stored on write,
    /// and the entry's `child` and `size` are set from it) or set `entry.child` to an
    /// already-stored manifest's hash.
    public mutating func add(_ entry: TreeEntry, manifest: Manifest? = nil) throws {
        try TreeEntry.validateName(entry.name)
        guard entry.kind != .directory else {
            throw StoreError.invalidArgument("use addDirectory for \(entry.name.debugDescription)")
        }
        if entry.kind == .file && manifest == nil && entry.child == nil {
            throw StoreError.invalidArgument("file \(entry.name.debugDescription) needs a manifest")
        }
        nodes[entry.name] = .leaf(entry, manifest)
    }

    /// Adds (or replaces) a subdirectory with the given attributes and contents.
    public mutating func addDirectory(_ attributes: TreeEntry, _ contents: TreeBuilder) throws {
        try TreeEntry.validateName(attributes.name)
        var attributes = attributes
        attributes.kind = .directory
        nodes[attributes.name] = .directory(attributes, contents)
    }

    /// Adds an already-stored subtree by hash (unchanged directories are reused).
    public mutating func addDirectory(_ attributes: TreeEntry, tree: ContentHash) throws {
        try TreeEntry.validateName(attributes.name)
        var attributes = attributes
        attributes.kind = .directory
        attributes.child = tree
        nodes[attributes.name] = .leaf(attributes, nil)
    }

    public mutating func remove(_ name: String) {
        nodes[name] = nil
    }

    /// The total bytes of the files below (for the head's logical size).
    public var logicalBytes: Int64 {
        nodes.values.reduce(0) { sum, node in
            switch node {
            case .leaf(let entry, let manifest): sum + (entry.kind == .file ? (manifest?.size ?? entry.size) : 0)
            case .directory(_, let builder): sum + builder.logicalBytes
            }
        }
    }

    /// Stores manifests and trees bottom-up and returns the root tree's hash.
    public func write(to content: ContentStore) async throws -> ContentHash {
        var entries: [TreeEntry] = []
        entries.reserveCapacity(nodes.count)
        for node in nodes.values {
            switch node {
            case .leaf(var entry, let manifest):
                if let manifest {
                    entry.child = try await content.putManifest(manifest)
                    entry.size = manifest.size
                }
                entries.append(entry)
            case .directory(var entry, let builder):
                entry.child = try await builder.write(to: content)
                entries.append(entry)
            }
        }
        return try await content.putTree(try Tree(entries: entries))
    }
}
