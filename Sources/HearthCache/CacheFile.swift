import CFuse
import Foundation
import HearthStore

#if canImport(Glibc)
import Glibc
#endif

/// The local bytes of one file: a sparse file on the cache disk plus the presence of
/// each chunk, so reads and writes are plain pread/pwrite on a local fd (and, in
/// issue 8, the fd can be handed to the kernel for passthrough).
///
/// Two kinds exist. A **clean** file is keyed by its manifest hash: it is immutable
/// content, shared by every volume on the node, listed in the LRU and persisted with
/// a presence map (`.map`) so it survives daemon restarts. A **working copy** belongs
/// to one open-for-write inode: it also tracks which chunks are dirty (written since
/// the last commit) and is never evicted.
///
/// Concurrency: `fd` and `mapFD` are immutable; `presence`, `dirty` and `size` are
/// guarded by `condition`, which also parks threads waiting for a chunk another thread
/// is fetching, so each chunk is fetched once however many readers want it.
public final class CacheFile: @unchecked Sendable {
    // @unchecked: every mutable field below is read and written only with
    // `condition` locked; the fds are immutable and closed once, in `closeFiles()`.
    public let fd: Int32
    public let chunkSize: Int
    /// Manifest hash for clean files; nil for working copies.
    public let key: ContentHash?
    public let path: String
    let mapFD: Int32
    let condition = NSCondition()
    weak var cache: NodeCache?

    private enum ChunkState: UInt8 { case absent = 0, present = 1, filling = 2 }
    private var presence: [ChunkState]
    private var dirty = Set<Int>()
    private var logicalSize: Int64
    /// Open references (handles, writers); a pinned file is never evicted.
    var pins = 0
    /// Taken over as a working copy: its fd belongs to that one now.
    private var detached = false

    init(path: String, fd: Int32, mapFD: Int32, key: ContentHash?, chunkSize: Int, size: Int64, presence: [UInt8]) {
        self.path = path
        self.fd = fd
        self.mapFD = mapFD
        self.key = key
        self.chunkSize = chunkSize
        self.logicalSize = size
        self.presence = presence.map { $0 == 1 ? .present : .absent }
    }

    public var size: Int64 {
        condition.lock()
        defer { condition.unlock() }
        return logicalSize
    }

    func chunkCount(_ size: Int64) -> Int { Int((size + Int64(chunkSize) - 1) / Int64(chunkSize)) }

    /// Indexes of the chunks `range` touches.
    public func chunks(covering range: Range<Int64>) -> Range<Int> {
        guard range.upperBound > range.lowerBound else { return 0..<0 }
        return Int(range.lowerBound / Int64(chunkSize))..<Int((range.upperBound - 1) / Int64(chunkSize) + 1)
    }

    public func isPresent(_ index: Int) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        return index < presence.count && presence[index] == .present
    }

    /// One byte per chunk: 1 present, 0 not.
    func presenceMap() -> [UInt8] {
        condition.lock()
        defer { condition.unlock() }
        return presence.map { $0 == .present ? 1 : 0 }
    }

    /// Number of chunks present (for the LRU's accounting and passthrough decisions).
    public var presentCount: Int {
        condition.lock()
        defer { condition.unlock() }
        return presence.reduce(0) { $0 + ($1 == .present ? 1 : 0) }
    }

    /// Whether every chunk is local: only then may the kernel do this file's I/O
    /// itself (passthrough), since it cannot ask the daemon for a missing chunk.
    public var isComplete: Bool {
        condition.lock()
        defer { condition.unlock() }
        return presence.allSatisfy { $0 == .present }
    }

    /// Takes note of writes the daemon did not see (the kernel wrote this working
    /// copy directly, in passthrough mode): adopts `newSize` and marks every chunk
    /// dirty, since which ones changed is unknown. Commits then hash each chunk and
    /// upload only those whose content changed.
    public func noteExternalWrites(size newSize: Int64) {
        condition.lock()
        if newSize != logicalSize { setSizeLocked(newSize) }
        for index in 0..<presence.count { dirty.insert(index) }
        condition.unlock()
    }

    /// Adopts a size the kernel gave the file through passthrough writes whose
    /// chunks are not taken yet (they will be, all at once, by
    /// ``noteExternalWrites(size:)``); the daemon's own reads and writes need it now.
    public func noteExternalSize(_ newSize: Int64) {
        condition.lock()
        if newSize != logicalSize { setSizeLocked(newSize) }
        condition.unlock()
    }

    /// Makes every chunk in `indexes` present, calling `fetch` (outside the lock) for
    /// each absent one; concurrent callers wanting the same chunk wait for the first.
    /// Returns how many chunks were fetched (cache misses).
    @discardableResult
    public func ensure(_ indexes: Range<Int>, fetch: (Int) throws -> Data) throws -> Int {
        var fetched = 0
        for index in indexes {
            condition.lock()
            while index < presence.count && presence[index] == .filling { condition.wait() }
            guard index < presence.count, presence[index] == .absent else {
                condition.unlock()
                continue
            }
            presence[index] = .filling
            condition.unlock()
            do {
                let data = try fetch(index)
                try store(data, chunk: index)
                fetched += 1
            } catch {
                condition.lock()
                if index < presence.count { presence[index] = .absent }
                condition.broadcast()
                condition.unlock()
                throw error
            }
        }
        return fetched
    }

    /// Marks chunks about to be overwritten completely as present, waiting for any
    /// fetch in flight on them first (its bytes would otherwise land after ours).
    public func claim(_ indexes: [Int]) {
        guard !indexes.isEmpty else { return }
        condition.lock()
        for index in indexes where index < presence.count {
            while presence[index] == .filling { condition.wait() }
            presence[index] = .present
        }
        condition.unlock()
    }

    /// Starts fetching `indexes` in the background if absent (readahead). Failures are
    /// forgotten: the foreground read fetches the chunk again and reports the error.
    public func prefetch(_ indexes: Range<Int>, fetch: @escaping @Sendable (Int) async throws -> Data) {
        for index in indexes {
            condition.lock()
            guard index < presence.count, presence[index] == .absent else {
                condition.unlock()
                continue
            }
            presence[index] = .filling
            condition.unlock()
            // Pinned while the fetch runs: the fd must stay open (and not be reused)
            // until the bytes are written.
            cache?.retain(self)
            Task.detached { [self] in
                defer { cache?.close(self) }
                do {
                    let data = try await fetch(index)
                    try store(data, chunk: index)
                } catch {
                    abandonFill(index)
                }
            }
        }
    }

    private func abandonFill(_ index: Int) {
        condition.lock()
        if index < presence.count, presence[index] == .filling { presence[index] = .absent }
        condition.broadcast()
        condition.unlock()
    }

    /// Writes a fetched chunk and marks it present (map byte after data, so a crash
    /// in between costs a refetch, never wrong bytes).
    private func store(_ data: Data, chunk index: Int) throws {
        try data.withUnsafeBytes { raw in
            try Self.pwriteAll(fd, raw, offset: Int64(index) * Int64(chunkSize))
        }
        condition.lock()
        let stillWanted = index < presence.count && presence[index] == .filling
        if stillWanted { presence[index] = .present }
        condition.broadcast()
        condition.unlock()
        if stillWanted {
            markPersisted(index, present: true)
            cache?.filled(self, chunk: index, bytes: Int64(data.count))
        }
    }

    func markPersisted(_ index: Int, present: Bool) {
        guard mapFD >= 0 else { return }
        condition.lock()
        let gone = detached
        condition.unlock()
        guard !gone else { return }
        var byte: UInt8 = present ? 1 : 0
        _ = pwrite(mapFD, &byte, 1, off_t(NodeCache.mapHeaderSize + index))
    }

    /// Evicts one chunk of an unpinned clean file: punches the hole, clears the bit.
    func evict(_ index: Int) {
        condition.lock()
        guard index < presence.count, presence[index] == .present else {
            condition.unlock()
            return
        }
        presence[index] = .absent
        condition.unlock()
        markPersisted(index, present: false)
        _ = hearth_punch_hole(fd, Int64(index * chunkSize), Int64(chunkSize))
    }

    // MARK: working copies

    /// Writes application bytes; the caller made the partially covered chunks present.
    public func write(_ data: UnsafeRawBufferPointer, at offset: Int64) throws {
        try Self.pwriteAll(fd, data, offset: offset)
        let touched = chunks(covering: offset..<offset + Int64(data.count))
        condition.lock()
        let end = offset + Int64(data.count)
        if end > logicalSize { setSizeLocked(end) }
        for index in touched {
            presence[index] = .present
            dirty.insert(index)
        }
        condition.unlock()
    }

    /// Changes the size. Growing: the chunk holding the old end must be present
    /// (callers ensure it) and new chunks are zeros, present and dirty. Shrinking:
    /// chunks past the end are dropped and the new last chunk is dirty.
    public func truncate(to newSize: Int64) throws {
        guard ftruncate(fd, off_t(newSize)) == 0 else { throw CacheIOError(errno) }
        condition.lock()
        let old = logicalSize
        setSizeLocked(newSize)
        let from = Int(min(old, newSize) / Int64(chunkSize))
        for index in from..<chunkCount(newSize) {
            if Int64(index) * Int64(chunkSize) >= old { presence[index] = .present }
            dirty.insert(index)
        }
        dirty = dirty.filter { $0 < presence.count }
        condition.unlock()
    }

    private func setSizeLocked(_ newSize: Int64) {
        let count = chunkCount(newSize)
        if count > presence.count {
            // Chunks entirely past the old end hold zeros: present without a fetch.
            presence.append(contentsOf: repeatElement(.present, count: count - presence.count))
        } else if count < presence.count {
            presence.removeLast(presence.count - count)
        }
        logicalSize = newSize
    }

    /// Marks chunks dirty without writing (fallocate, metadata-only growth).
    public func markDirty(_ indexes: Range<Int>) {
        condition.lock()
        for index in indexes where index < presence.count { dirty.insert(index) }
        condition.unlock()
    }

    public var isDirty: Bool {
        condition.lock()
        defer { condition.unlock() }
        return !dirty.isEmpty
    }

    public var dirtyCount: Int {
        condition.lock()
        defer { condition.unlock() }
        return dirty.count
    }

    /// Takes the dirty set and the size at this instant for a commit. Writes after
    /// this re-dirty their chunks, so a commit never loses a later write.
    public func takeDirty() -> (chunks: [Int], size: Int64) {
        condition.lock()
        defer { condition.unlock() }
        let taken = dirty.sorted()
        dirty.removeAll()
        return (taken, logicalSize)
    }

    /// Gives back chunks of a failed commit.
    public func restoreDirty(_ chunks: [Int]) {
        condition.lock()
        for index in chunks where index < presence.count { dirty.insert(index) }
        condition.unlock()
    }

    /// Reads chunk `index` as stored locally (zeros where sparse), skipping the read
    /// entirely for holes (SEEK_DATA), so committing a sparse multi-GiB file is cheap.
    public func readChunk(_ index: Int, size: Int64) throws -> Data {
        let start = Int64(index) * Int64(chunkSize)
        let length = Int(min(Int64(chunkSize), size - start))
        guard length > 0 else { return Data() }
        let data = hearth_seek(fd, start, 1)
        if data < 0 || Int64(data) >= start + Int64(length) { return Data(count: length) }
        var out = Data(count: length)
        let n = out.withUnsafeMutableBytes { pread(fd, $0.baseAddress, length, off_t(start)) }
        guard n >= 0 else { throw CacheIOError(errno) }
        return out
    }

    /// pread at `offset`; the caller made the chunks present.
    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) throws -> Int {
        var done = 0
        while done < buffer.count {
            let n = pread(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset + Int64(done)))
            if n < 0 {
                if errno == EINTR { continue }
                throw CacheIOError(errno)
            }
            if n == 0 { break }
            done += n
        }
        return done
    }

    func closeFiles() {
        condition.lock()
        let gone = detached
        condition.unlock()
        guard !gone else { return }
        Glibc.close(fd)
        if mapFD >= 0 { Glibc.close(mapFD) }
    }

    /// This clean file became a working copy (``NodeCache/takeOver(_:volume:name:)``):
    /// the fd now belongs to the working copy, the map is closed. A reader that still
    /// holds this object reads the same bytes through the same fd; nothing is written
    /// through it any more (it is complete, so nothing is fetched into it).
    func detachForTakeOver() {
        if mapFD >= 0 { Glibc.close(mapFD) }
        condition.lock()
        detached = true
        condition.unlock()
    }

    static func pwriteAll(_ fd: Int32, _ data: UnsafeRawBufferPointer, offset: Int64) throws {
        var done = 0
        while done < data.count {
            let n = pwrite(fd, data.baseAddress! + done, data.count - done, off_t(offset + Int64(done)))
            if n < 0 {
                if errno == EINTR { continue }
                throw CacheIOError(errno)
            }
            done += n
        }
    }
}

/// An errno from a local file operation.
public struct CacheIOError: Error, Sendable, CustomStringConvertible {
    public let code: Int32
    public init(_ code: Int32) { self.code = code }
    public var description: String { String(cString: strerror(code)) }
}
