import CFuse
import Foundation
import HearthCache
import HearthFUSE
import HearthStore

#if canImport(Glibc)
import Glibc
#endif

/// File bytes: opens pin a clean cache file of the committed version; the first
/// write makes a working copy (see ``NodeCache/makeWorkingCopy(volume:name:size:chunkSize:base:)``)
/// that holds dirty chunks until the write-back commits them.
extension VolumeFileSystem {
    /// Fetches chunk `index` of `manifest` from the store (on a worker thread).
    func fetchChunk(_ manifest: Manifest, _ index: Int) throws -> Data {
        guard index < manifest.chunks.count else { return Data(count: manifest.chunkSize) }
        let content = self.content
        let hash = manifest.chunks[index], length = manifest.length(ofChunk: index)
        do {
            return try blocking { try await content.chunk(hash, length: length) }
        } catch {
            throw fuseError(error)
        }
    }

    /// Loads a file's manifest and opens its clean cache file if it has committed
    /// content and neither is in memory yet.
    private func attachClean(_ ino: UInt64) throws {
        let pending: ContentHash? = try lock.withLock {
            let node = try node(ino)
            guard node.kind == .file, node.work == nil, node.clean == nil, let child = node.child else { return nil }
            return child
        }
        guard let hash = pending else { return }
        let content = self.content
        let manifest: Manifest
        do { manifest = try blocking { try await content.manifest(hash) } } catch { throw fuseError(error) }
        let clean = try cache.openClean(hash, manifest: manifest)
        let keep = lock.withLock { () -> Bool in
            guard let node = nodes[ino], node.child == hash, node.clean == nil, node.work == nil else { return false }
            node.manifest = manifest
            node.clean = clean
            return true
        }
        if !keep { cache.close(clean) }
    }

    /// The node's working copy, created on first write. One the kernel may be
    /// writing through passthrough is looked at first (size, presence): its
    /// RELEASE is asynchronous, so a truncate or write right after close can
    /// arrive before it.
    private func workingCopy(_ ino: UInt64) throws -> (CacheFile, Manifest?) {
        do {
            return try openWorkingCopy(ino)
        } catch let error as FuseError where error.errno == EMFILE || error.errno == ENFILE {
            // The descriptors are held by working copies of closed files, waiting for
            // a commit (a burst of new files outran the commits): one now retires
            // them, and the write goes on instead of failing.
            try writeback.commitAndWait()
            return try openWorkingCopy(ino)
        }
    }

    private func openWorkingCopy(_ ino: UInt64) throws -> (CacheFile, Manifest?) {
        try attachClean(ino)
        return try lock.withLock {
            let node = try node(ino)
            guard node.kind == .file else { throw node.kind == .directory ? FuseError.isDirectory : FuseError.invalid }
            if let work = node.work {
                refreshFromBacking(node, force: false)
                return (work, node.manifest)
            }
            let chunkSize = node.manifest?.chunkSize ?? config.chunkSize
            let work: CacheFile
            // A fresh name each time: a retired copy may still be open for a
            // commit's reads, and O_TRUNC on a reused path would empty it.
            let name = "\(ino).\(UInt32.random(in: 0...UInt32.max))"
            if let clean = node.clean, clean.size == node.size, let taken = cache.takeOver(clean, volume: config.volumeID, name: name) {
                // The complete clean copy became the working copy (a rename): the
                // committed version is no longer cached here, its chunks are in the store.
                work = taken
                node.clean = nil
            } else {
                // Copies the cached bytes on the cache's disk: as long as the file.
                if node.size > 0 { FuseWorkerThread.willWait() }
                do {
                    work = try cache.makeWorkingCopy(volume: config.volumeID, name: name, size: node.size,
                                                     chunkSize: chunkSize, base: node.clean)
                } catch { throw fuseError(error) }
            }
            node.work = work
            journalNode(node)
            return (work, node.manifest)
        }
    }

    /// Makes the chunks that `range` covers only partly present in the working copy
    /// (their other bytes must survive), and claims the fully covered ones so no
    /// fetch can later overwrite what is about to be written.
    private func prepare(_ work: CacheFile, _ manifest: Manifest?, writing range: Range<Int64>) throws {
        let size = work.size
        let chunkSize = Int64(work.chunkSize)
        var partial: [Int] = []
        var whole: [Int] = []
        for index in work.chunks(covering: range) {
            let chunkStart = Int64(index) * chunkSize
            let existingEnd = min(chunkStart + chunkSize, size)
            guard chunkStart < size else { continue }
            if range.lowerBound <= chunkStart && range.upperBound >= existingEnd { whole.append(index) } else { partial.append(index) }
        }
        work.claim(whole)
        for index in partial {
            try work.ensure(index..<index + 1) { i in
                guard let manifest else { return Data(count: min(work.chunkSize, Int(size - Int64(i) * chunkSize))) }
                return try fetchChunk(manifest, i)
            }
        }
    }

    func truncate(_ ino: UInt64, to newSize: Int64) throws {
        let (work, manifest) = try workingCopy(ino)
        let boundary = min(newSize, work.size)
        if boundary % Int64(work.chunkSize) != 0 {
            // The chunk holding the boundary keeps some bytes: make it local first.
            try prepare(work, manifest, writing: boundary..<boundary + 1)
        }
        try lock.withLock {
            let node = try node(ino)
            let growth = newSize - node.size
            if growth > 0 && usedBytes + growth > capacityBytes { throw FuseError.noSpace }
            do { try work.truncate(to: newSize) } catch { throw fuseError(error) }
            if node.nlink > 0 { usedBytes += growth }
            node.size = newSize
            node.mtimeNs = nowNs()
            markFileDirty(node)
            journalNode(node)
        }
        cache.workingCopyGrew(by: 0)
    }

    /// A new handle on `node` (lock held), served by the kernel from a backing file
    /// when the bytes are all local (see Passthrough.swift), else through the daemon
    /// with the page cache kept across opens (single writer per volume).
    private func openHandle(_ node: Inode, flags: UInt32) -> OpenReply {
        let writing = Int32(flags) & O_ACCMODE != O_RDONLY
        let (mode, openFlags, backingID) = chooseOpenMode(node, writing: writing)
        if mode == .cached {
            node.cachedOpens += 1
            passthroughStats.cachedOpens += 1
        }
        node.opens += 1
        let handle = nextHandle
        nextHandle += 1
        fileHandles[handle] = FileHandle(ino: node.ino, mode: mode, writing: writing)
        journal(JournalRecord(op: .open, ino: node.ino, fh: handle, handleMode: mode.journalCode, writing: writing, backing: backingID))
        return OpenReply(handle: handle, flags: openFlags, backingID: backingID)
    }

    public func open(_ ctx: RequestContext, node ino: UInt64, flags: UInt32) throws -> OpenReply {
        let accmode = Int32(flags) & O_ACCMODE
        if accmode != O_RDONLY { try checkWritable() }
        try attachClean(ino)
        if Int32(flags) & O_TRUNC != 0 {
            if try lock.withLock({ try node(ino).size }) != 0 { try truncate(ino, to: 0) }
        }
        // A write open can be a passthrough open once the working copy exists and is
        // complete; make it now (from the complete clean copy) rather than on the
        // first WRITE, which the daemon would then never see.
        if accmode != O_RDONLY, wantsWritablePassthrough(ino) { _ = try workingCopy(ino) }
        return try lock.withLock {
            let node = try node(ino)
            guard node.kind == .file else { throw node.kind == .directory ? FuseError.isDirectory : FuseError.invalid }
            return openHandle(node, flags: flags)
        }
    }

    public func create(_ ctx: RequestContext, parent: UInt64, name: String, mode: UInt32, umask: UInt32,
                       flags: UInt32) throws -> (EntryReply, OpenReply) {
        try checkWritable()
        guard name.utf8.count <= 255 else { throw FuseError.nameTooLong }
        // An empty working copy, so the new file's writes can go straight to it
        // (passthrough) instead of through the daemon. Made before the namespace
        // lock is taken: it is file-system work (create or reuse a cache file).
        let wantsWork = Int32(flags) & O_ACCMODE != O_RDONLY
            && lock.withLock { passthroughActive && capacityBytes - usedBytes >= config.passthroughWriteHeadroom }
        var work = wantsWork
            ? try? cache.makeWorkingCopy(volume: config.volumeID, name: "new.\(UInt64.random(in: 0...UInt64.max))",
                                         size: 0, chunkSize: config.chunkSize, base: nil)
            : nil
        defer { if let work { cache.close(work) } }
        return try withDirectory(parent) { dir in
            guard dir.nlink > 0 else { throw FuseError.notFound }
            guard dir.children?[name] == nil else { throw FuseError.exists }
            let node = newNode(ctx, kind: .file, mode: mode, umask: umask, parent: dir)
            if passthroughActive {
                node.work = work
                work = nil
            }
            nodes[node.ino] = node
            dir.children?[name] = node.asChild
            dir.mtimeNs = node.ctimeNs
            dir.ctimeNs = node.ctimeNs
            markTreeDirty(dir.ino)
            markFileDirty(node)
            journalNode(node)
            journal(.entry(dir.ino, name, node.ino))
            return (entry(node), openHandle(node, flags: flags))
        }
    }

    public func read(_ ctx: RequestContext, node ino: UInt64, handle: UInt64, offset: UInt64,
                     into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        let (data, size, manifest, sequential): (CacheFile?, Int64, Manifest?, Bool) = try lock.withLock {
            let node = try node(ino)
            var sequential = false
            if node.passthrough?.writable == true { refreshFromBacking(node, force: false) }
            if var h = fileHandles[handle] {
                sequential = h.lastEnd == offset
                h.lastEnd = offset + UInt64(buffer.count)
                fileHandles[handle] = h
            }
            return (node.work ?? node.clean, node.size, node.manifest, sequential)
        }
        guard Int64(offset) < size, buffer.count > 0 else { return 0 }
        guard let data else { throw FuseError.io }
        let end = min(Int64(offset) + Int64(buffer.count), size)
        let chunks = data.chunks(covering: Int64(offset)..<end)
        let misses: Int
        do {
            misses = try data.ensure(chunks) { index in
                guard let manifest else { throw FuseError.io }
                return try fetchChunk(manifest, index)
            }
        } catch { throw fuseError(error) }
        cache.stats.add(hits: UInt64(chunks.count - misses), misses: UInt64(misses))
        if sequential, let manifest, data.key != nil || data.presentCount < manifest.chunks.count {
            let ahead = chunks.upperBound..<min(chunks.upperBound + config.readaheadChunks, manifest.chunks.count)
            let content = self.content
            data.prefetch(ahead) { index in
                try await content.chunk(manifest.chunks[index], length: manifest.length(ofChunk: index))
            }
        }
        cache.touch(data, chunks: chunks)
        do {
            return try data.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<Int(end - Int64(offset))]), at: Int64(offset))
        } catch { throw fuseError(error) }
    }

    public func write(_ ctx: RequestContext, node ino: UInt64, handle: UInt64, offset: UInt64,
                      data: UnsafeRawBufferPointer, flags: UInt32) throws -> Int {
        try checkWritable()
        let start = Int64(offset), end = start + Int64(data.count)
        let growth = try lock.withLock { try max(0, end - node(ino).size) }
        if growth > 0, lock.withLock({ usedBytes + growth > capacityBytes }) { throw FuseError.noSpace }
        let (work, manifest) = try workingCopy(ino)
        try prepare(work, manifest, writing: start..<end)
        do { try work.write(data, at: start) } catch { throw fuseError(error) }
        try lock.withLock {
            let node = try node(ino)
            if end > node.size {
                if node.nlink > 0 { usedBytes += end - node.size }
                node.size = end
            }
            let now = nowNs()
            node.mtimeNs = now
            node.ctimeNs = now
            if flags & FuseWriteFlag.killSuidgid != 0, node.mode & UInt32(0o6000) != 0 {
                node.mode &= ~UInt32(0o6000)
                markParentsDirty(node)
            }
            if !dirtyFiles.contains(ino) {
                markFileDirty(node)
                journalNode(node)
            }
        }
        if growth > 0 { cache.workingCopyGrew(by: growth) }
        return data.count
    }

    /// Nothing happens at close(2) that the daemon must answer for: commits are
    /// asynchronous (fsync waits for them) and write errors are returned by WRITE.
    /// ENOSYS makes the kernel stop sending FLUSH for this connection (fc->no_flush),
    /// saving one synchronous round trip on every close; with the writeback cache
    /// the kernel still writes dirty pages back at close, before it would have sent
    /// FLUSH (fuse_flush).
    public func flush(_ ctx: RequestContext, node: UInt64, handle: UInt64) throws {
        throw FuseError.notSupported
    }

    public func release(_ ctx: RequestContext, node ino: UInt64, handle: UInt64, flags: UInt32) {
        let dirty: Bool = lock.withLock {
            let released = fileHandles.removeValue(forKey: handle)
            journal(JournalRecord(op: .close, fh: handle))
            guard let node = nodes[ino] else { return false }
            switch released?.mode {
            case .cached: node.cachedOpens -= 1
            case .passthrough, .passthroughDirect: releasePassthrough(node, writing: released?.writing ?? true)
            case nil: break
            }
            node.opens -= 1
            let dirty = dirtyFiles.contains(ino)
            if node.opens == 0 {
                if let clean = node.clean {
                    cache.close(clean)
                    node.clean = nil
                }
                if let work = node.work, !dirty, !work.isDirty, node.committing == 0 { retireWorkingCopy(node) }
            }
            dropIfUnreachable(node)
            return dirty
        }
        // Commit on close, in the background: close(2) does not wait for the store.
        if dirty { writeback.requestCommit(urgent: cache.workingCopiesOpen >= cache.descriptors.commitEarly) }
    }

    /// A clean working copy of a closed file joins the node cache as the clean copy of
    /// its committed version, so reopening it reads local bytes (lock held).
    ///
    /// `node` is journaled as having no working copy before the copy can be let go
    /// of, since the copy may be emptied under the name the journal gave it
    /// (``SpareWorkingCopies/park(path:fd:)``). A caller that retires many files
    /// at once passes `journal: false` and journals them in one write
    /// (``journalNodes(_:)``) before the lock is released.
    func retireWorkingCopy(_ node: Inode, journal: Bool = true) {
        guard let work = node.work else { return }
        node.work = nil
        if journal { journalNode(node) }
        // A clean copy still attached is of an older version (e.g. attached by a
        // truncate through a path, with no handle to release it): reads would serve
        // its stale bytes once the working copy is gone.
        if let clean = node.clean {
            cache.close(clean)
            node.clean = nil
        }
        // Files under one chunk are not worth a rename and a presence map each (a
        // burst of small-file closes retires thousands of copies in one commit, under
        // the namespace lock): they are fetched again when read.
        if let child = node.child, let manifest = node.manifest, manifest.size == work.size, work.size >= Int64(work.chunkSize) {
            releaseLater(.adopt(work, as: child, manifest: manifest))
        } else {
            releaseLater(.close(work))
        }
    }

    /// Lets go of every open's hold on its cache files once the session is over
    /// (see ``shutdown()``) and retires each working copy the store holds all of.
    func retireWorkingCopiesAfterSession() {
        lock.withLock {
            var retired: [Inode] = []
            for node in nodes.values where node.work != nil || node.clean != nil || node.passthrough != nil {
                if let state = node.passthrough {
                    cache.close(state.file)
                    node.passthrough = nil
                }
                if let clean = node.clean {
                    cache.close(clean)
                    node.clean = nil
                }
                if let work = node.work, !dirtyFiles.contains(node.ino), node.committing == 0, !work.isDirty {
                    retireWorkingCopy(node, journal: false)
                    retired.append(node)
                }
            }
            passthroughWriters.removeAll()
            journalNodes(retired)
        }
        drainCacheReleases()
    }

    public func fsync(_ ctx: RequestContext, node ino: UInt64, handle: UInt64, dataOnly: Bool) throws {
        guard !config.readOnly else { return }
        // Passthrough writes (and shared-mmap stores) never reached the daemon: take
        // the whole working copy, whatever its mtime says.
        lock.withLock {
            if let node = nodes[ino], node.passthrough?.writable == true { refreshFromBacking(node, force: true) }
        }
        try writeback.commitAndWait()
    }

    public func fallocate(_ ctx: RequestContext, node ino: UInt64, handle: UInt64, offset: UInt64, length: UInt64, mode: UInt32) throws {
        try checkWritable()
        let keepSize: UInt32 = 1, punchHole: UInt32 = 2
        let start = Int64(offset), end = Int64(offset + length)
        if mode == 0 || mode == keepSize {
            if mode == 0, try lock.withLock({ try node(ino).size }) < end { try truncate(ino, to: end) }
            return
        }
        guard mode == punchHole | keepSize else { throw FuseError(errno: EOPNOTSUPP) }
        let (work, manifest) = try workingCopy(ino)
        let clippedEnd = min(end, work.size)
        guard clippedEnd > start else { return }
        let chunks = work.chunks(covering: start..<clippedEnd)
        // Make every touched chunk local, then punch: the hole is local truth.
        try work.ensure(chunks) { index in
            guard let manifest else { return Data(count: work.chunkSize) }
            return try fetchChunk(manifest, index)
        }
        guard hearth_fallocate(work.fd, Int32(mode), start, clippedEnd - start) == 0 else { throw FuseError(errno: errno) }
        work.markDirty(chunks)
        try lock.withLock {
            let node = try node(ino)
            node.mtimeNs = nowNs()
            markFileDirty(node)
        }
    }

    public func lseek(_ ctx: RequestContext, node ino: UInt64, handle: UInt64, offset: UInt64, whence: UInt32) throws -> UInt64 {
        let seekData: UInt32 = 3, seekHole: UInt32 = 4
        guard whence == seekData || whence == seekHole else { throw FuseError.invalid }
        let (data, size, manifest) = try lock.withLock {
            let node = try node(ino)
            return (node.work ?? node.clean, node.size, node.manifest)
        }
        var position = Int64(offset)
        guard position < size else { throw FuseError.noDevice }
        guard let data else { return whence == seekData ? offset : UInt64(size) }
        let chunkSize = Int64(data.chunkSize)
        while position < size {
            let index = Int(position / chunkSize)
            let chunkEnd = min((Int64(index) + 1) * chunkSize, size)
            if data.isPresent(index) {
                // Local bytes decide; ask the sparse file, bounded to this chunk.
                let found = hearth_seek(data.fd, position, whence == seekData ? 1 : 0)
                if found >= 0 && Int64(found) < chunkEnd { return UInt64(found) }
                if whence == seekHole && found >= 0 && found >= size { return UInt64(size) }
            } else {
                let hole = manifest.map { index < $0.chunks.count ? $0.chunks[index].isZero : true } ?? true
                if (whence == seekData) != hole { return UInt64(position) }
            }
            position = chunkEnd
        }
        if whence == seekHole { return UInt64(size) }
        throw FuseError.noDevice
    }

    // MARK: xattrs (only when enabled; see VolumeConfiguration.xattrs)

    public func getxattr(_ ctx: RequestContext, node ino: UInt64, name: String) throws -> [UInt8] {
        guard config.xattrs else { throw FuseError.notSupported }
        return try lock.withLock {
            guard let value = try node(ino).xattrs[name] else { throw FuseError.noData }
            return value
        }
    }

    public func setxattr(_ ctx: RequestContext, node ino: UInt64, name: String, value: UnsafeRawBufferPointer, flags: UInt32) throws {
        guard config.xattrs else { throw FuseError.notSupported }
        try checkWritable()
        guard name.utf8.count <= 255, value.count <= 64 << 10 else { throw FuseError.range }
        try lock.withLock {
            let node = try node(ino)
            let create: UInt32 = 1, replace: UInt32 = 2
            if flags & create != 0 && node.xattrs[name] != nil { throw FuseError.exists }
            if flags & replace != 0 && node.xattrs[name] == nil { throw FuseError.noData }
            node.xattrs[name] = Array(value)
            node.ctimeNs = nowNs()
            markParentsDirty(node)
        }
    }

    public func listxattr(_ ctx: RequestContext, node ino: UInt64) throws -> [String] {
        guard config.xattrs else { throw FuseError.notSupported }
        return try lock.withLock { try node(ino).xattrs.keys.sorted() }
    }

    public func removexattr(_ ctx: RequestContext, node ino: UInt64, name: String) throws {
        guard config.xattrs else { throw FuseError.notSupported }
        try checkWritable()
        try lock.withLock {
            let node = try node(ino)
            guard node.xattrs.removeValue(forKey: name) != nil else { throw FuseError.noData }
            markParentsDirty(node)
        }
    }

    public func destroy() {}
}
