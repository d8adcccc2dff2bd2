import CFuse
import Foundation
import HearthStore
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The node's cache of file bytes: one directory and one byte limit shared by every
/// volume daemon on the node.
///
/// Layout under `directory`:
/// - `objects/<manifest-hash>` — sparse file with the bytes of an immutable file
///   version, `objects/<manifest-hash>.map` — a 16-byte header (chunk size, size) and
///   one presence byte per chunk. Content-addressed, so it is valid forever, shared
///   between volumes and clones, and reused by a restarted daemon (peers that wipe the
///   cache on mount are a top user complaint).
/// - `work/<volume>/<name>` — working copies of files being written (dirty data),
///   never evicted.
///
/// Eviction is LRU by chunk over clean files that no daemon on the node has open
/// (open files hold a shared flock; eviction skips files it cannot lock
/// exclusively), so no hole is punched under a reader or a passthrough open; it runs when the
/// bytes present exceed `limitBytes` and goes down to 90% of it. Dirty data and open
/// files are never evicted, so the cache may exceed its limit while they need it.
public final class NodeCache: Sendable {
    static let mapHeaderSize = 16

    public let directory: String
    public let limitBytes: Int64
    public let stats = CacheStats()

    private struct ChunkKey: Hashable {
        var file: ContentHash
        var index: Int32
    }

    private struct LRU {
        var clock: UInt64 = 0
        /// Chunk → (bytes, last use).
        var chunks: [ChunkKey: (bytes: Int64, lastUse: UInt64)] = [:]
        var used: Int64 = 0
        var workingBytes: Int64 = 0
        /// Working copies not yet closed or adopted: one descriptor each.
        var workingCopies = 0
        /// Clean files currently open somewhere (pinned).
        var open: [ContentHash: CacheFile] = [:]
    }

    private let state = Mutex(LRU())
    /// Dropped working copies kept for reuse (see ``SpareWorkingCopies``).
    private let spares: SpareWorkingCopies
    /// This process's share of descriptors for working copies and spares.
    public let descriptors: DescriptorBudget

    /// Opens (creating) the cache directory and indexes what a previous daemon left.
    public init(directory: String, limitBytes: Int64, descriptors: DescriptorBudget = .current) throws {
        self.directory = directory
        self.limitBytes = limitBytes
        self.descriptors = descriptors
        spares = SpareWorkingCopies(openLimit: descriptors.openSpares)
        for sub in ["objects", "work"] {
            try FileManager.default.createDirectory(atPath: directory + "/" + sub, withIntermediateDirectories: true)
        }
        try scan()
    }

    private func objectPath(_ key: ContentHash) -> String { directory + "/objects/" + key.hex }

    /// Rebuilds the LRU from the presence maps on disk, oldest files first.
    private func scan() throws {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory + "/objects")) ?? []
        var found: [(ContentHash, Int, [UInt8], Int64, Double)] = []
        for name in names where name.hasSuffix(".map") {
            guard let key = ContentHash(hex: name.dropLast(4)) else { continue }
            let path = directory + "/objects/" + name
            guard let data = FileManager.default.contents(atPath: path), data.count >= Self.mapHeaderSize else { continue }
            let chunkSize = Int(data.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) })
            let size = data.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 8, as: Int64.self) }
            let mtime = ((try? FileManager.default.attributesOfItem(atPath: path)[.modificationDate]) as? Date)?.timeIntervalSince1970 ?? 0
            found.append((key, chunkSize, Array(data.dropFirst(Self.mapHeaderSize)), size, mtime))
        }
        found.sort { $0.4 < $1.4 }
        state.withLock { lru in
            for (key, chunkSize, map, size, _) in found {
                for (index, byte) in map.enumerated() where byte == 1 {
                    let bytes = min(Int64(chunkSize), size - Int64(index) * Int64(chunkSize))
                    lru.clock += 1
                    lru.chunks[ChunkKey(file: key, index: Int32(index))] = (bytes, lru.clock)
                    lru.used += bytes
                }
            }
        }
        stats.setUsed(state.withLock { $0.used })
    }

    /// Opens the clean cache file of a file version (pinned until ``close(_:)``).
    public func openClean(_ key: ContentHash, manifest: Manifest) throws -> CacheFile {
        try state.withLock { lru in
            if let file = lru.open[key] {
                file.pins += 1
                return file
            }
            let path = objectPath(key)
            let fd = try Self.openLocked(path)
            let mapFD = open(path + ".map", O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
            guard mapFD >= 0 else {
                Glibc.close(fd)
                throw CacheIOError(errno)
            }
            let count = Manifest.chunkCount(size: manifest.size, chunkSize: manifest.chunkSize)
            var header = [UInt8](repeating: 0, count: Self.mapHeaderSize)
            var map = [UInt8](repeating: 0, count: count)
            var st = stat()
            fstat(mapFD, &st)
            if Int(st.st_size) == Self.mapHeaderSize + count {
                _ = pread(mapFD, &header, Self.mapHeaderSize, 0)
                _ = pread(mapFD, &map, count, off_t(Self.mapHeaderSize))
            }
            let chunkSize = header.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }
            if chunkSize != UInt32(manifest.chunkSize) {
                // New or unreadable map: start empty.
                map = [UInt8](repeating: 0, count: count)
                var fresh = ReplyBytes()
                fresh.u32(UInt32(manifest.chunkSize)); fresh.u32(0); fresh.u64(UInt64(manifest.size))
                fresh.bytes += map
                _ = ftruncate(mapFD, 0)
                _ = fresh.bytes.withUnsafeBytes { pwrite(mapFD, $0.baseAddress, $0.count, 0) }
                _ = ftruncate(fd, 0)
            }
            _ = ftruncate(fd, off_t(manifest.size))
            let file = CacheFile(path: path, fd: fd, mapFD: mapFD, key: key, chunkSize: manifest.chunkSize,
                                 size: manifest.size, presence: map)
            file.cache = self
            file.pins = 1
            lru.open[key] = file
            return file
        }
    }

    /// Opens (creating) a clean cache file with a shared lock held. The cache
    /// directory is shared by every daemon on the node: the lock keeps another
    /// daemon's eviction from punching holes in a file this one reads (or the kernel
    /// reads for it, in passthrough), and ``takeOver(_:volume:name:)`` from renaming it
    /// away. A file taken over between our open and our lock is no longer at `path`
    /// (the taker holds the exclusive lock until it renamed): then open again.
    private static func openLocked(_ path: String) throws -> Int32 {
        while true {
            let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
            guard fd >= 0 else { throw CacheIOError(errno) }
            _ = flock(fd, LOCK_SH)
            var held = stat(), named = stat()
            if fstat(fd, &held) == 0, stat(path, &named) == 0, held.st_ino == named.st_ino, held.st_dev == named.st_dev {
                return fd
            }
            Glibc.close(fd)
        }
    }

    /// Turns the complete clean cache file of a version into a file's working copy
    /// by rename, instead of copying it at the first write (ext4 has no reflink: the
    /// copy cost ~0.3 s per 512 MiB at every write open of a cached file). Allowed
    /// only when nobody else reads that version on the node: this daemon holds it
    /// once (`clean`'s single pin, which this call consumes) and no other daemon
    /// holds its shared lock (converting ours to exclusive fails otherwise, as
    /// eviction's exclusive lock does). The version stays in the store
    /// (content-addressed), so a later reader of it fetches it again. The fd moves
    /// to the working copy unchanged; nil, and nothing changed, when not allowed.
    public func takeOver(_ clean: CacheFile, volume: String, name: String) -> CacheFile? {
        guard let key = clean.key, clean.isComplete else { return nil }
        let dir = directory + "/work/" + volume
        let path = dir + "/" + name
        let taken: Bool = state.withLock { lru in
            guard clean.pins == 1, lru.open[key] === clean else { return false }
            guard flock(clean.fd, LOCK_EX | LOCK_NB) == 0 else {
                // A failed conversion has dropped our shared lock (flock(2) converts
                // by unlock + lock): take it again. Eviction elsewhere cannot slip in
                // meanwhile, since the holder that made us fail still holds its lock.
                _ = flock(clean.fd, LOCK_SH)
                return false
            }
            let source = objectPath(key)
            // Map first: a crash in between leaves a data file without a map, which
            // nobody trusts (scan skips it, openClean starts it empty).
            unlink(source + ".map")
            var moved = rename(source, path) == 0
            if !moved && errno == ENOENT {
                try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
                moved = rename(source, path) == 0
            }
            // Unlocked either way: a daemon waiting for its shared lock on this inode
            // now finds it gone from `objects/` and opens a fresh file (openLocked).
            _ = flock(clean.fd, moved ? LOCK_UN : LOCK_SH)
            guard moved else {
                // The map is gone: the file is no longer trusted as a clean copy, but
                // this daemon's pin keeps serving it until closed; a later open starts
                // it over.
                return false
            }
            lru.open[key] = nil
            for index in 0..<clean.chunkCount(clean.size) {
                if let entry = lru.chunks.removeValue(forKey: ChunkKey(file: key, index: Int32(index))) { lru.used -= entry.bytes }
            }
            clean.pins = 0
            clean.detachForTakeOver()
            lru.workingBytes += Int64(clean.chunkCount(clean.size)) * Int64(clean.chunkSize)
            lru.workingCopies += 1
            return true
        }
        guard taken else { return nil }
        stats.setUsed(usedBytes)
        stats.setDirty(state.withLock { $0.workingBytes })
        let count = clean.chunkCount(clean.size)
        let file = CacheFile(path: path, fd: clean.fd, mapFD: -1, key: nil, chunkSize: clean.chunkSize, size: clean.size,
                             presence: [UInt8](repeating: 1, count: count))
        file.cache = self
        file.pins = 1
        return file
    }

    /// Working copies open now (each holds a descriptor until retired).
    public var workingCopiesOpen: Int { state.withLock { $0.workingCopies } }

    /// Pins an already open file once more (a background fetch or a commit in flight).
    public func retain(_ file: CacheFile) {
        state.withLock { _ in file.pins += 1 }
    }

    /// Unpins a file; the last close closes its fds and makes its chunks evictable.
    public func close(_ file: CacheFile) {
        var dropWorkingCopy = false
        let evictNow: Bool = state.withLock { lru in
            file.pins -= 1
            guard file.pins == 0 else { return false }
            if let key = file.key {
                lru.open[key] = nil
                file.closeFiles()
            } else {
                lru.workingBytes -= Int64(file.presentCount) * Int64(file.chunkSize)
                lru.workingCopies -= 1
                dropWorkingCopy = true
            }
            return lru.used + lru.workingBytes > limitBytes
        }
        if dropWorkingCopy {
            // Unpinned and unreachable: its truncate and rename need not hold up
            // every other cache operation.
            spares.park(path: file.path, fd: file.fd)
            file.closeFiles()
        }
        stats.setDirty(state.withLock { $0.workingBytes })
        if evictNow { evictIfNeeded() }
    }

    /// Creates a working copy for a file being written. `base`'s present chunks are
    /// copied in the kernel (copy_file_range, free on reflink filesystems); absent ones
    /// are fetched from the store on demand by the caller.
    public func makeWorkingCopy(volume: String, name: String, size: Int64, chunkSize: Int,
                                base: CacheFile?) throws -> CacheFile {
        // Out of budget: the caller commits (retiring closed files' copies) and asks
        // again, rather than taking the descriptors that commit needs.
        guard workingCopiesOpen < descriptors.workingCopies else { throw CacheIOError(EMFILE) }
        let dir = directory + "/work/" + volume
        var path = dir + "/" + name
        var fd: Int32
        if let spare = spares.take(in: dir) {
            // An emptied working copy of this volume: used under its own (unique)
            // name, already open when it was kept open. Reopened without O_TRUNC:
            // spares are empty, and on ext4 a truncate to zero, even of an empty
            // file, makes the last writer's close(2) flush the file (see
            // `SpareWorkingCopies.park`). Nor O_CREAT, which takes the directory's
            // lock exclusively and so waits for a commit parking spares in it; a
            // spare gone meanwhile is made anew below.
            path = spare.path
            fd = spare.fd ?? open(path, O_RDWR | O_CLOEXEC)
        } else {
            fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        }
        if fd < 0 && errno == ENOENT {
            // First working copy of this volume: the directory is made once, not
            // checked on every create (a metadata-heavy workload makes thousands).
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        }
        guard fd >= 0 else { throw CacheIOError(errno) }
        if size > 0 { _ = ftruncate(fd, off_t(size)) }
        let count = Int((size + Int64(chunkSize) - 1) / Int64(chunkSize))
        var map = [UInt8](repeating: 0, count: count)
        if let base, base.chunkSize == chunkSize {
            for index in 0..<count where base.isPresent(index) {
                let from = Int64(index * chunkSize)
                let length = Int(min(Int64(chunkSize), size - from))
                if hearth_copy_range(base.fd, from, fd, from, length) == length { map[index] = 1 }
            }
        }
        return workingCopy(path: path, fd: fd, chunkSize: chunkSize, size: size, presence: map)
    }

    /// Reopens a working copy a previous daemon of this volume left (a takeover after
    /// a crash): its chunks are present where the file has data (SEEK_DATA: written or
    /// fetched chunks were stored with pwrite, never left as holes) and wherever the
    /// committed version had no bytes (`committedSize`), so a hole there reads as the
    /// zeros it is. Nil if the file is gone (retired into the cache after a commit).
    public func reopenWorkingCopy(path: String, chunkSize: Int, committedSize: Int64) -> CacheFile? {
        let fd = open(path, O_RDWR | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            Glibc.close(fd)
            return nil
        }
        let size = Int64(st.st_size)
        let count = Int((size + Int64(chunkSize) - 1) / Int64(chunkSize))
        var map = [UInt8](repeating: 0, count: count)
        for index in 0..<count {
            let start = Int64(index) * Int64(chunkSize)
            if start >= committedSize {
                map[index] = 1
                continue
            }
            let data = hearth_seek(fd, start, 1)
            if data >= 0 && Int64(data) < start + Int64(chunkSize) { map[index] = 1 }
        }
        return workingCopy(path: path, fd: fd, chunkSize: chunkSize, size: size, presence: map)
    }

    /// A working copy's CacheFile, pinned once, its present bytes counted as dirty.
    private func workingCopy(path: String, fd: Int32, chunkSize: Int, size: Int64, presence map: [UInt8]) -> CacheFile {
        let file = CacheFile(path: path, fd: fd, mapFD: -1, key: nil, chunkSize: chunkSize, size: size, presence: map)
        file.cache = self
        file.pins = 1
        let present = Int64(map.reduce(0) { $0 + Int($1) }) * Int64(chunkSize)
        state.withLock { lru in
            lru.workingBytes += present
            lru.workingCopies += 1
        }
        return file
    }

    /// Turns a fully committed working copy into the clean cache file of the version it
    /// now equals (a rename, no copy), so the bytes just written stay cached.
    public func adopt(_ work: CacheFile, as key: ContentHash, manifest: Manifest) {
        let over: Bool = state.withLock { lru in
            work.pins -= 1
            guard work.pins == 0 else { return false }
            let presence = work.presenceMap()
            lru.workingBytes -= Int64(presence.reduce(0) { $0 + Int($1) }) * Int64(work.chunkSize)
            lru.workingCopies -= 1
            let path = objectPath(key)
            guard lru.open[key] == nil, !FileManager.default.fileExists(atPath: path + ".map"),
                  work.chunkSize == manifest.chunkSize, presence.count == manifest.chunks.count else {
                work.closeFiles()
                unlink(work.path)
                return false
            }
            var header = ReplyBytes()
            header.u32(UInt32(manifest.chunkSize)); header.u32(0); header.u64(UInt64(manifest.size))
            header.bytes += presence
            let mapFD = open(path + ".map.tmp", O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
            if mapFD >= 0 {
                _ = header.bytes.withUnsafeBytes { pwrite(mapFD, $0.baseAddress, $0.count, 0) }
                Glibc.close(mapFD)
            }
            work.closeFiles()
            guard mapFD >= 0, rename(work.path, path) == 0, rename(path + ".map.tmp", path + ".map") == 0 else {
                unlink(work.path)
                return false
            }
            for (index, byte) in presence.enumerated() where byte == 1 {
                let bytes = min(Int64(manifest.chunkSize), manifest.size - Int64(index) * Int64(manifest.chunkSize))
                lru.clock += 1
                lru.chunks[ChunkKey(file: key, index: Int32(index))] = (bytes, lru.clock)
                lru.used += bytes
            }
            return lru.used + lru.workingBytes > limitBytes
        }
        stats.setUsed(usedBytes)
        stats.setDirty(state.withLock { $0.workingBytes })
        if over { evictIfNeeded() }
    }

    /// Removes the spares a dead daemon of `volume` left (a takeover, which keeps the
    /// working copies; a fresh start clears them all): every spare there but this
    /// daemon's own and the `adopted` paths, working copies the journal names (a
    /// spare becomes a working copy under its own name).
    public func removeLeftoverSpares(volume: String, adopted: Set<String>) {
        let dir = directory + "/work/" + volume
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: dir) else { return }
        for name in names where name.hasPrefix(SpareWorkingCopies.namePrefix) && !spares.isOwn(name) {
            let path = dir + "/" + name
            if !adopted.contains(path) { unlink(path) }
        }
    }

    /// Removes a volume's leftover working copies (a fresh start, not a takeover).
    public func clearWorkingCopies(volume: String) {
        spares.forget(directory: directory + "/work/" + volume)
        try? FileManager.default.removeItem(atPath: directory + "/work/" + volume)
    }

    /// A chunk became present: account for it and evict if over the limit.
    func filled(_ file: CacheFile, chunk index: Int, bytes: Int64) {
        stats.add(downloaded: bytes)
        let over: Bool = state.withLock { lru in
            if let key = file.key {
                lru.clock += 1
                let chunkKey = ChunkKey(file: key, index: Int32(index))
                if lru.chunks[chunkKey] == nil { lru.used += bytes }
                lru.chunks[chunkKey] = (bytes, lru.clock)
            } else {
                lru.workingBytes += bytes
            }
            return lru.used + lru.workingBytes > limitBytes
        }
        if over { evictIfNeeded() }
    }

    /// Records a read hit on a chunk (moves it to the young end of the LRU).
    public func touch(_ file: CacheFile, chunks: Range<Int>) {
        guard let key = file.key else { return }
        state.withLock { lru in
            lru.clock += 1
            for index in chunks {
                let chunkKey = ChunkKey(file: key, index: Int32(index))
                if let entry = lru.chunks[chunkKey] { lru.chunks[chunkKey] = (entry.bytes, lru.clock) }
            }
        }
    }

    /// Accounts for working-copy growth by writes (for the limit and the dirty gauge).
    public func workingCopyGrew(by bytes: Int64) {
        let over = state.withLock { lru in
            lru.workingBytes += bytes
            return lru.used + lru.workingBytes > limitBytes
        }
        stats.setDirty(state.withLock { $0.workingBytes })
        if over { evictIfNeeded() }
    }

    /// Evicts least recently used chunks of unopened clean files down to 90% of the
    /// limit. Runs under the cache lock so an `openClean` never sees a half-evicted map.
    public func evictIfNeeded() {
        let evicted: Int = state.withLock { lru in
            let target = limitBytes / 10 * 9
            guard lru.used + lru.workingBytes > target else { return 0 }
            let candidates = lru.chunks.filter { lru.open[$0.key.file] == nil }.sorted { $0.value.lastUse < $1.value.lastUse }
            var count = 0
            var byFile: [ContentHash: [Int]] = [:]
            // Files this process does not have open may be open in another daemon
            // (shared lock, see openClean): those are skipped, never punched.
            var locked: [ContentHash: Int32] = [:]
            var busy = Set<ContentHash>()
            defer { for fd in locked.values where fd >= 0 { Glibc.close(fd) } }
            for (key, value) in candidates {
                if lru.used + lru.workingBytes <= target { break }
                if busy.contains(key.file) { continue }
                if locked[key.file] == nil {
                    let fd = open(objectPath(key.file), O_RDWR | O_CLOEXEC)
                    if fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) != 0 {
                        Glibc.close(fd)
                        busy.insert(key.file)
                        continue
                    }
                    locked[key.file] = fd
                }
                byFile[key.file, default: []].append(Int(key.index))
                lru.chunks[key] = nil
                lru.used -= value.bytes
                count += 1
            }
            for (file, indexes) in byFile {
                let path = objectPath(file)
                let fd = locked[file] ?? -1
                // Gone from objects/ (taken over as a working copy by another daemon,
                // see takeOver): only the accounting goes; the map and the name may
                // already belong to a fresh copy that someone else has open.
                guard fd >= 0 else { continue }
                let mapFD = open(path + ".map", O_RDWR | O_CLOEXEC)
                for index in indexes {
                    var zero: UInt8 = 0
                    if mapFD >= 0 { _ = pwrite(mapFD, &zero, 1, off_t(Self.mapHeaderSize + index)) }
                    if fd >= 0 {
                        let chunkSize = Self.chunkSize(mapFD: mapFD)
                        _ = hearth_punch_hole(fd, Int64(index * chunkSize), Int64(chunkSize))
                    }
                }
                if mapFD >= 0 { Glibc.close(mapFD) }
                if !lru.chunks.keys.contains(where: { $0.file == file }) {
                    unlink(path)
                    unlink(path + ".map")
                }
            }
            return count
        }
        if evicted > 0 { stats.add(evictions: UInt64(evicted)) }
        stats.setUsed(state.withLock { $0.used })
    }

    private static func chunkSize(mapFD: Int32) -> Int {
        var value: UInt32 = 0
        guard mapFD >= 0, pread(mapFD, &value, 4, 0) == 4, value > 0 else { return Manifest.defaultChunkSize }
        return Int(value)
    }

    /// Bytes of clean data present.
    public var usedBytes: Int64 { state.withLock { $0.used } }
}

/// Little-endian bytes for the map header.
struct ReplyBytes {
    var bytes: [UInt8] = []
    mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
}

/// Cache and transfer counters for the node plugin's `/metrics`.
public final class CacheStats: Sendable {
    public struct Snapshot: Sendable, Codable, Hashable {
        public var hits: UInt64 = 0
        public var misses: UInt64 = 0
        public var evictions: UInt64 = 0
        public var bytesDownloaded: UInt64 = 0
        public var bytesUploaded: UInt64 = 0
        public var usedBytes: Int64 = 0
        public var dirtyBytes: Int64 = 0
    }

    private let values = Mutex(Snapshot())

    public init() {}

    public var snapshot: Snapshot { values.withLock { $0 } }

    public func add(hits: UInt64 = 0, misses: UInt64 = 0, evictions: UInt64 = 0, downloaded: Int64 = 0, uploaded: Int64 = 0) {
        values.withLock {
            $0.hits += hits
            $0.misses += misses
            $0.evictions += evictions
            $0.bytesDownloaded += UInt64(max(0, downloaded))
            $0.bytesUploaded += UInt64(max(0, uploaded))
        }
    }

    func setUsed(_ bytes: Int64) { values.withLock { $0.usedBytes = bytes } }
    func setDirty(_ bytes: Int64) { values.withLock { $0.dirtyBytes = bytes } }
}
