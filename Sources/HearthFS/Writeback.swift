import Foundation
import HearthCache
import HearthFUSE
import HearthMounts
import HearthStore

/// Streams a volume's changes to the store: dirty chunks are uploaded, then the
/// trees from every change up to the root, then the volume head is replaced by
/// compare-and-swap. One commit runs at a time, on this object's own thread.
///
/// A commit takes each dirty file's dirty chunk set at one instant; writes after
/// that re-dirty their chunks for the next commit, so nothing is lost and nothing
/// blocks writers while uploads run. ``commitAndWait()`` (fsync) returns once a
/// commit that *started after the call* is durable, so every write acknowledged
/// before the fsync is in the store.
final class Writeback: @unchecked Sendable {
    // @unchecked: the counters below are guarded by `condition`; `fs` is weakly
    // referenced and itself thread-safe.
    private weak var fs: VolumeFileSystem?
    private let condition = NSCondition()
    private var requested: UInt64 = 0
    private var completed: UInt64 = 0
    private var lastError: (UInt64, any Error)?
    private var stopping = false
    private var running = false
    private var thread: Thread?
    /// How long the committer sleeps between commits; changed on SIGHUP.
    private var interval: Duration
    /// fsync/fsyncdir callers waiting for a commit (they are never delayed).
    private var waiters = 0
    /// A close asked for its commit without the coalescing window (descriptors).
    private var urgent = false
    private var lastCommitEnd = Date.distantPast
    /// The write-back thread's priority, background unless a commit is waited for.
    let priority = CommitPriority()
    /// Commits asked for by close(2) start at most this often: a burst of closes
    /// (untar, a build, a metadata benchmark) becomes one commit per window instead
    /// of one per file, each re-serialising the directory.
    static let closeCoalescing: TimeInterval = 0.2

    init(fs: VolumeFileSystem) {
        self.fs = fs
        interval = fs.config.commitInterval
    }

    /// A new commit interval, used from the committer's next wait.
    func setInterval(_ interval: Duration) {
        condition.lock()
        self.interval = interval
        condition.broadcast()
        condition.unlock()
    }

    func start() {
        condition.lock()
        defer { condition.unlock() }
        guard !running else { return }
        running = true
        let thread = Thread { [self] in
            nameCurrentThread("hearth-commit")
            priority.adopt()
            loop()
        }
        self.thread = thread
        thread.start()
    }

    /// Asks for a commit soon (close of a dirty file) without waiting.
    ///
    /// Wakes the committer only when no commit is pending yet: once one is, the
    /// committer is coalescing (it wakes at the end of the window) or committing (it
    /// looks again afterwards). A burst of closes would otherwise wake it once per
    /// file, a context switch each on the cores the closing application needs.
    /// `urgent` (working copies are using up the descriptor budget) ends the
    /// coalescing window now: the commit retires them.
    func requestCommit(urgent: Bool = false) {
        condition.lock()
        let pending = requested != completed
        requested += 1
        let wake = !pending || (urgent && !self.urgent)
        if urgent { self.urgent = true }
        if wake { condition.broadcast() }
        condition.unlock()
    }

    /// Commits and waits until a commit started after this call has finished.
    func commitAndWait() throws {
        FuseWorkerThread.willWait()
        condition.lock()
        defer { condition.unlock() }
        if !running {
            condition.unlock()
            defer { condition.lock() }
            try fs?.commitOnce()
            return
        }
        requested += 1
        let target = requested
        waiters += 1
        priority.raise()
        condition.broadcast()
        while completed < target && running { condition.wait() }
        waiters -= 1
        if let (seq, error) = lastError, seq >= target { throw fuseError(error) }
    }

    /// Final commit and stop (unmount).
    func stop() throws {
        condition.lock()
        let wasRunning = running
        stopping = true
        priority.raise()
        condition.broadcast()
        while running { condition.wait() }
        condition.unlock()
        if !wasRunning { try fs?.commitOnce() }
        if let (_, error) = lastError, fs?.hasDirtyState == true { throw error }
    }

    private func loop() {
        while true {
            condition.lock()
            let since = Date()
            while requested == completed && !stopping {
                // Recomputed after every wake-up, so a shorter interval set on SIGHUP
                // applies to the wait already under way.
                let seconds = Double(interval.components.seconds) + Double(interval.components.attoseconds) / 1e18
                let deadline = since.addingTimeInterval(max(0.05, seconds))
                if deadline <= Date() || !condition.wait(until: deadline) { break }
            }
            while !stopping && waiters == 0 && !urgent {
                let ready = lastCommitEnd.addingTimeInterval(Self.closeCoalescing)
                if ready <= Date() || !condition.wait(until: ready) { break }
            }
            let target = requested
            let stop = stopping
            // An urgent commit (working copies nearing the descriptor budget) is one a
            // writer will soon wait for.
            let waitedFor = waiters > 0 || stop || urgent
            urgent = false
            condition.unlock()
            priority.beginCommit(waitedFor: waitedFor)

            var failure: (any Error)?
            do { try fs?.commitOnce() } catch {
                failure = error
                FileHandle.standardError.write(Data("hearth mount: commit failed (will retry): \(error)\n".utf8))
            }
            fs?.drainCacheReleases()
            // Under the namespace lock throughout (a scan of every node when over the limit).
            priority.atNormalPriority { fs?.trimMemory() }

            condition.lock()
            completed = max(completed, target)
            lastCommitEnd = Date()
            if let failure { lastError = (target, failure) } else if lastError.map({ $0.0 <= target }) == true { lastError = nil }
            condition.broadcast()
            if stop {
                running = false
                condition.broadcast()
                condition.unlock()
                return
            }
            condition.unlock()
        }
    }
}

extension VolumeFileSystem {
    /// Whether anything is waiting to be committed.
    var hasDirtyState: Bool { lock.withLock { !dirtyFiles.isEmpty || !dirtyDirs.isEmpty } }

    private struct FileUpload {
        var ino: UInt64
        var work: CacheFile?
        var chunks: [Int]
        var size: Int64
        var base: Manifest?
    }

    /// One commit: upload dirty chunks and manifests, serialise dirty trees bottom-up,
    /// upload them, swap the head. Runs on the write-back thread (or the caller's).
    func commitOnce() throws {
        guard !config.readOnly else { return }
        let started = ContinuousClock.now
        // 1. Take the dirty state of every dirty file at one instant.
        let uploads: [FileUpload] = writeback.priority.atNormalPriority { lock.withLock {
            refreshPassthroughWriters()
            let taken = dirtyFiles.compactMap { ino -> FileUpload? in
                guard let node = nodes[ino], node.kind == .file else { return nil }
                node.committing += 1
                // The new manifest changes the entries naming this file: those
                // directories must be serialised by this very commit, even if they
                // were serialised (clean) by a commit that ran while the file changed.
                markParentsDirty(node)
                if let work = node.work {
                    let (chunks, size) = work.takeDirty()
                    cache.retain(work)
                    return FileUpload(ino: ino, work: work, chunks: chunks, size: size, base: node.manifest)
                }
                return FileUpload(ino: ino, work: nil, chunks: [], size: node.size, base: node.manifest)
            }
            dirtyFiles.removeAll()
            return taken
        } }
        guard !uploads.isEmpty || lock.withLock({ !dirtyDirs.isEmpty }) else { return }
        trace(uploads.count > 20 ? "commit uploads \(uploads.count) files" :
                "commit uploads \(uploads.map { ($0.ino, $0.chunks, $0.size, $0.work != nil) }) dirs \(lock.withLock { dirtyDirs })")
        // The commit's pins keep each working copy's fd open while its chunks are
        // read; they go as soon as the uploads are done, so that step 3 can retire a
        // working copy (adopt it as the clean copy, which needs the last pin) instead
        // of dropping bytes that are then fetched again.
        var pinned = true
        func unpin() {
            guard pinned else { return }
            pinned = false
            for upload in uploads { if let work = upload.work { cache.close(work) } }
        }
        defer { unpin() }

        // 2. Upload chunks and manifests (outside the lock).
        let manifests: [(UInt64, Manifest, ContentHash)]
        do {
            manifests = try uploadFiles(uploads)
            unpin()
        } catch {
            lock.withLock {
                for upload in uploads {
                    upload.work?.restoreDirty(upload.chunks)
                    guard let node = nodes[upload.ino] else { continue }
                    node.committing -= 1
                    if node.nlink > 0 { markFileDirty(node) }
                }
            }
            throw error
        }

        let uploaded = ContinuousClock.now
        // 3. Install the manifests and take the dirty trees, deepest first; they are
        // encoded and hashed with the lock released (see ``TreeSnapshot``).
        let (snapshots, logical, serialised): ([TreeSnapshot], Int64, [UInt64]) = writeback.priority.atNormalPriority { lock.withLock {
            var retired: [Inode] = []
            for (index, (ino, manifest, hash)) in manifests.enumerated() {
                guard let node = nodes[ino] else { continue }
                node.committing -= 1
                node.child = hash
                node.committedSize = manifest.size
                node.manifest = manifest
                if node.opens == 0, node.committing == 0, !dirtyFiles.contains(ino), let work = node.work,
                   work === uploads[index].work, !work.isDirty {
                    retireWorkingCopy(node, journal: false)
                    retired.append(node)
                }
            }
            // Journaled as having no working copy before the copies are let go of
            // (drainCacheReleases, below), which may empty them under their names.
            journalNodes(retired)
            func depth(_ ino: UInt64) -> Int {
                var d = 0
                var current = nodes[ino]?.parents.first
                while let id = current, d < 10_000 { d += 1; current = nodes[id]?.parents.first }
                return d
            }
            let order = dirtyDirs.filter { nodes[$0] != nil }.sorted { depth($0) > depth($1) }
            let snapshots = snapshotTrees(order)
            dirtyDirs.subtract(order)
            return (snapshots, usedBytes, order)
        } }
        drainCacheReleases()
        let encoded = Self.encodeTrees(snapshots)
        let trees = encoded.map { ($0.hash, $0.data) }
        let root = encoded.first { $0.ino == 1 }?.hash
        lock.withLock {
            for tree in encoded { nodes[tree.ino]?.child = tree.hash }
        }

        let serialisedAt = ContinuousClock.now
        // 4. Upload trees, then swap the head.
        let content = self.content, heads = self.heads, volume = config.volumeID
        let expected = lock.withLock { head }
        do {
            let newHead = try blocking {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for (hash, data) in trees { group.addTask { try await content.put(.tree, data, hash: hash) } }
                    try await group.waitForAll()
                }
                guard let root else { return expected }
                return try await heads.commit(volume, root: root, logicalBytes: logical, expected: expected)
            }
            lock.withLock { head = newHead }
            trace("committed gen \(newHead.head.generation) root \(String(describing: root)) trees \(trees.count) serialised \(serialised)")
            trace("commit timing: files \(uploads.count) upload \(uploaded - started) serialise \(serialisedAt - uploaded) store \(ContinuousClock.now - serialisedAt)")
        } catch {
            lock.withLock {
                for ino in serialised { markTreeDirty(ino) }
            }
            throw error
        }
    }

    /// Runs on the committing thread itself, not on Swift's cooperative pool: the
    /// reading and hashing of a burst's files is most of a commit's CPU, and only a
    /// thread of its own can be given a background priority (``CommitPriority``).
    /// The store calls, and the chunks of files with more than one dirty chunk (whose
    /// uploads overlap), still go through ``blocking(_:)``.
    private func uploadFiles(_ uploads: [FileUpload]) throws -> [(UInt64, Manifest, ContentHash)] {
        let content = self.content, chunkSize = config.chunkSize, parallelism = config.uploadParallelism
        let stats = cache.stats
        var results: [(UInt64, Manifest, ContentHash)] = []
        // Small files' chunks and every manifest go to the store in batches:
        // one call per object cost a thread hop each, two per file of a burst.
        var batch = ContentBatch()
        func send() throws {
            let full = batch
            batch = ContentBatch()
            guard !full.isEmpty else { return }
            try blocking { try await content.put(full) }
        }
        for upload in uploads {
            let size = upload.size
            let cs = upload.base?.chunkSize ?? upload.work?.chunkSize ?? chunkSize
            let count = Manifest.chunkCount(size: size, chunkSize: cs)
            var hashes = Array((upload.base?.chunks ?? []).prefix(count))
            hashes += Array(repeating: ContentHash.zero, count: count - hashes.count)
            if let work = upload.work {
                let dirty = upload.chunks.filter { $0 < count }
                if dirty.count == 1 {
                    let index = dirty[0]
                    let (hash, bytes) = try Self.stage(chunk: index, of: work, size: size,
                                                       previous: hashes[index], into: &batch)
                    hashes[index] = hash
                    stats.add(uploaded: Int64(bytes))
                } else if !dirty.isEmpty {
                    let jobs = dirty.map { ($0, hashes[$0]) }
                    let stored = try blocking {
                        var stored: [(Int, ContentHash, Int)] = []
                        try await forEachConcurrently(jobs, limit: parallelism, { index, previous in
                            try await Self.upload(chunk: index, of: work, size: size, previous: previous, to: content)
                        }, collect: { stored.append(($0, $1, $2)) })
                        return stored
                    }
                    for (index, hash, bytes) in stored {
                        hashes[index] = hash
                        stats.add(uploaded: Int64(bytes))
                    }
                }
            }
            let manifest = Manifest(size: size, chunkSize: cs, chunks: hashes)
            let encoded = manifest.encoded()
            let hash = ContentHash.of(encoded)
            batch.add(.manifest, encoded, hash: hash)
            results.append((upload.ino, manifest, hash))
            if batch.isFull { try send() }
        }
        try send()
        return results
    }

    /// Reads and hashes one chunk of a working copy into `batch`: (hash, bytes to
    /// upload). Unchanged and all-zero chunks add nothing.
    private static func stage(chunk index: Int, of work: CacheFile, size: Int64, previous: ContentHash,
                              into batch: inout ContentBatch) throws -> (ContentHash, Int) {
        let data = try work.readChunk(index, size: size)
        if isAllZero(data) { return (.zero, 0) }
        let hash = ContentHash.of(data)
        if hash == previous { return (previous, 0) }
        return (hash, batch.add(.chunk, data, hash: hash) ? data.count : 0)
    }

    /// Reads, hashes and stores one chunk of a working copy: (index, hash, bytes
    /// uploaded). Passthrough writers mark every chunk dirty (the daemon cannot see
    /// which changed): unchanged ones cost a hash, never an upload.
    private static func upload(chunk index: Int, of work: CacheFile, size: Int64, previous: ContentHash,
                               to content: ContentStore) async throws -> (Int, ContentHash, Int) {
        let data = try work.readChunk(index, size: size)
        if !previous.isZero {
            let hash = ContentHash.of(data)
            if hash == previous { return (index, previous, 0) }
            if isAllZero(data) { return (index, .zero, 0) }
            try await content.put(.chunk, data, hash: hash)
            return (index, hash, data.count)
        }
        let hash = try await content.putChunk(data)
        return (index, hash, hash.isZero ? 0 : data.count)
    }

    /// All-zero chunks are holes in manifests (as ``ContentStore/putChunk(_:)`` does).
    static func isAllZero(_ data: Data) -> Bool {
        data.withUnsafeBytes { raw in
            let words = raw.count / 8
            for i in 0..<words where raw.loadUnaligned(fromByteOffset: i * 8, as: UInt64.self) != 0 { return false }
            for i in (words * 8)..<raw.count where raw[i] != 0 { return false }
            return true
        }
    }

    /// Bounded memory: unloads directories nobody has open whose children the kernel
    /// no longer references, once more than ``VolumeConfiguration/maxCachedInodes`` nodes
    /// are in memory. They reload from their (committed) tree on the next lookup.
    func trimMemory() {
        lock.withLock {
            guard nodes.count > config.maxCachedInodes else { return }
            for dir in Array(nodes.values) where dir.kind == .directory && dir.ino != 1 {
                guard let children = dir.children, dir.opens == 0, !dir.treeDirty, dir.child != nil else { continue }
                let removable = children.values.allSatisfy { child in
                    let ino = child.ino
                    guard let c = nodes[ino] else { return true }
                    return c.lookups == 0 && c.opens == 0 && c.children == nil && c.work == nil && c.clean == nil
                        && !dirtyFiles.contains(ino) && (c.kind == .directory || c.nlink <= 1) && c.child != nil
                }
                guard removable else { continue }
                for child in children.values { nodes[child.ino] = nil }
                dir.children = nil
                if nodes.count <= config.maxCachedInodes / 10 * 9 { return }
            }
        }
    }
}
