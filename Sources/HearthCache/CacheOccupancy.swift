import Foundation
import HearthStore

#if canImport(Glibc)
import Glibc
#endif

/// How much of a volume's data a node cache holds: what `hearth node` reports to
/// the scheduler extender.
///
/// The cache is content-addressed and shared, so "a volume's bytes in the cache" is
/// not something the cache tracks. It is defined here as: the bytes of the files in
/// the volume's current version (its committed root) whose chunks are present in
/// the cache, plus the volume's uncommitted working copies (bytes that exist only
/// on this node). A chunk shared with a clone counts for both volumes, which is
/// right: either would read it locally. Bytes of a version the volume no longer
/// points at do not count: a pod would not read them.
///
/// Computed from the cache directory and the store alone, so it needs no help from
/// the volume's daemon, works for volumes that are no longer staged (their bytes
/// stay cached until evicted), and survives node plugin and daemon restarts. Trees
/// are content-addressed, so each is fetched from the store once and remembered:
/// measuring an unchanged volume again reads only presence maps.
public actor CacheOccupancy {
    public struct Measurement: Sendable, Hashable {
        public var volumeID: String
        /// Sum of file sizes in the volume's current version (the store's figure).
        public var logicalBytes: Int64
        /// Committed bytes present in the cache plus uncommitted working-copy bytes.
        public var cachedBytes: Int64
        /// The uncommitted part of `cachedBytes`.
        public var dirtyBytes: Int64
    }

    /// A tree reduced to what measuring needs: its files' manifests and sizes, and
    /// its subdirectories.
    private struct TreeFiles {
        var files: [(manifest: ContentHash, size: Int64)]
        var subtrees: [ContentHash]
    }

    public let directory: String
    private let content: ContentStore
    private let heads: VolumeHeads
    private var trees: [ContentHash: TreeFiles] = [:]
    private var rememberedFiles = 0
    /// Bounds the memory the tree memo may take (~40 bytes per file).
    private let maxRememberedFiles: Int

    /// - Parameter directory: the node cache directory (`--cache-dir` of the daemons).
    public init(directory: String, objects: any ObjectStore, maxRememberedFiles: Int = 2_000_000) {
        self.directory = directory
        content = ContentStore(objects)
        heads = VolumeHeads(objects)
        self.maxRememberedFiles = maxRememberedFiles
    }

    /// Measures one volume. Throws ``StoreError/notFound(_:)`` when the volume has
    /// no head any more (deleted): the caller stops reporting it.
    public func measure(_ volumeID: String) async throws -> Measurement {
        let head = try await heads.read(volumeID).head
        var cached: Int64 = 0
        for manifest in try await manifests(of: volumeID, head: head) {
            cached += Self.presentBytes(directory: directory, manifest: manifest)
        }
        let dirty = Self.workingCopyBytes(directory: directory, volumeID: volumeID)
        return Measurement(volumeID: volumeID, logicalBytes: head.logicalBytes, cachedBytes: cached + dirty, dirtyBytes: dirty)
    }

    /// The distinct non-empty file versions of the volume's committed tree.
    func manifests(of volumeID: String, head known: VolumeHead? = nil) async throws -> [ContentHash] {
        let head: VolumeHead
        if let known { head = known } else { head = try await heads.read(volumeID).head }
        guard let root = head.rootHash else { throw StoreError.corrupt(key: try VolumeHeads.key(volumeID), reason: "bad root") }
        var seen = Set<ContentHash>()
        var result: [ContentHash] = []
        var pending = [root]
        var visited = Set<ContentHash>()
        while let tree = pending.popLast() {
            guard visited.insert(tree).inserted else { continue }
            let files = try await filesOf(tree)
            pending += files.subtrees
            for file in files.files where file.size > 0 && seen.insert(file.manifest).inserted {
                result.append(file.manifest)
            }
        }
        return result
    }

    private func filesOf(_ hash: ContentHash) async throws -> TreeFiles {
        if let known = trees[hash] { return known }
        let tree = try await content.tree(hash)
        var result = TreeFiles(files: [], subtrees: [])
        for entry in tree.entries {
            guard let child = entry.child else { continue }
            if entry.kind == .directory { result.subtrees.append(child) }
            if entry.kind == .file { result.files.append((child, entry.size)) }
        }
        if rememberedFiles + result.files.count > maxRememberedFiles {
            trees.removeAll(keepingCapacity: false)  // rare; the next pass refetches
            rememberedFiles = 0
        }
        trees[hash] = result
        rememberedFiles += result.files.count + 1
        return result
    }

    /// Bytes of the file version `manifest` present in the cache at `directory`, from
    /// its presence map (``NodeCache``'s layout: a 16-byte header holding the chunk
    /// size and the file size, then one byte per chunk, 1 when present).
    public static func presentBytes(directory: String, manifest: ContentHash) -> Int64 {
        let fd = open(directory + "/objects/" + manifest.hex + ".map", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return 0 }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, Int(st.st_size) > NodeCache.mapHeaderSize else { return 0 }
        var map = [UInt8](repeating: 0, count: Int(st.st_size))
        let count = map.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
        guard count == map.count else { return 0 }
        let chunkSize = Int64(map.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }.littleEndian)
        let size = map.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 8, as: Int64.self) }.littleEndian
        guard chunkSize > 0, size > 0 else { return 0 }
        var bytes: Int64 = 0
        for index in NodeCache.mapHeaderSize..<map.count where map[index] == 1 {
            let start = Int64(index - NodeCache.mapHeaderSize) * chunkSize
            guard start < size else { break }
            bytes += min(chunkSize, size - start)
        }
        return bytes
    }

    /// Bytes allocated by the volume's working copies (`work/<volume>/`): sparse
    /// files, so blocks on disk rather than apparent sizes.
    public static func workingCopyBytes(directory: String, volumeID: String) -> Int64 {
        let path = directory + "/work/" + volumeID
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: path) else { return 0 }
        var total: Int64 = 0
        for name in names {
            var st = stat()
            guard lstat(path + "/" + name, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { continue }
            total += min(Int64(st.st_blocks) * 512, Int64(st.st_size))
        }
        return total
    }
}
