import Foundation
import HearthCache
import HearthFUSE

#if canImport(Glibc)
import Glibc
#endif

/// The backing file the kernel reads and writes for one inode while it has
/// passthrough opens. One per inode, because the kernel allows exactly one backing
/// file per FUSE inode at a time: every open of an inode with passthrough opens must
/// name the same backing id.
struct PassthroughState {
    var id: Int32
    /// The registered file (pinned in the node cache while registered, so eviction
    /// never punches holes under the kernel's reads).
    var file: CacheFile
    /// The working copy: the kernel may write it, so the daemon must pick up sizes,
    /// times and dirty chunks from it (``VolumeFileSystem/refreshFromBacking(_:force:)``).
    var writable: Bool
    var opens: Int
    /// Size and mtime of the backing file when last looked at.
    var seenSize: Int64
    var seenMtimeNs: Int64
}

/// How one open handle's I/O is served.
enum OpenMode {
    /// Through the daemon and the kernel page cache (FOPEN_KEEP_CACHE).
    case cached
    /// By the kernel on the backing file (FOPEN_PASSTHROUGH).
    case passthrough
    /// Read and write through the daemon, but registered as passthrough with the
    /// inode's backing id because the kernel demands it (a write open of a file that
    /// read-only passthrough opens hold on its clean cache file). FOPEN_DIRECT_IO.
    case passthroughDirect
}

/// Counters of passthrough decisions, for tests and metrics.
public struct PassthroughStats: Sendable, Codable, Hashable {
    public var passthroughOpens: UInt64 = 0
    public var directOpens: UInt64 = 0
    public var cachedOpens: UInt64 = 0
    public var refreshes: UInt64 = 0
}

extension VolumeFileSystem {
    /// Connects the session's backing-file registry; passthrough starts once INIT
    /// granted FUSE_PASSTHROUGH and ``VolumeConfiguration/passthrough`` asks for it.
    public func attach(backingFiles: BackingFiles) {
        lock.withLock { self.backingFiles = backingFiles }
    }

    public func initialized(_ parameters: SessionParameters) {
        lock.withLock {
            passthroughActive = config.passthrough && backingFiles != nil && parameters.has(FuseInitFlag.passthrough)
        }
    }

    /// Whether opens are currently answered with passthrough when possible.
    public var passthroughEnabled: Bool { lock.withLock { passthroughActive } }

    public var passthroughCounters: PassthroughStats { lock.withLock { passthroughStats } }

    /// Whether a write open of `ino` should get a working copy now, so that it can be
    /// a passthrough open: the file's bytes are all local (or it has none yet).
    func wantsWritablePassthrough(_ ino: UInt64) -> Bool {
        lock.withLock {
            guard passthroughActive, let node = nodes[ino], node.kind == .file, node.cachedOpens == 0,
                  node.passthrough == nil, node.work == nil, capacityBytes - usedBytes >= config.passthroughWriteHeadroom
            else { return false }
            guard node.child != nil else { return true }
            return node.clean?.isComplete ?? false
        }
    }

    /// Decides how a new open of `node` is served and registers the backing file if
    /// it is the inode's first passthrough open (lock held). Follows the kernel's
    /// io-mode rules (fs/fuse/iomode.c) so that no open is refused: never passthrough
    /// next to a cached open, always passthrough (same id) next to a passthrough open.
    func chooseOpenMode(_ node: Inode, writing: Bool) -> (OpenMode, flags: UInt32, backingID: Int32) {
        let cached = (OpenMode.cached, FuseOpenFlag.keepCache, Int32(0))
        guard passthroughActive, let backingFiles, node.kind == .file, node.cachedOpens == 0 else { return cached }
        if var state = node.passthrough {
            state.opens += 1
            node.passthrough = state
            if writing && !state.writable {
                passthroughStats.directOpens += 1
                return (.passthroughDirect, FuseOpenFlag.passthrough | FuseOpenFlag.directIO, state.id)
            }
            passthroughStats.passthroughOpens += 1
            return (.passthrough, FuseOpenFlag.passthrough, state.id)
        }
        // The file whose bytes are all local and current: the working copy if there is
        // one (never the clean copy then: it is an older version), else the clean copy
        // for reads. Writes need the working copy, and quota headroom, since the
        // daemon cannot refuse a write it never sees.
        let file: CacheFile?
        if let work = node.work {
            let headroom = !writing || capacityBytes - usedBytes >= config.passthroughWriteHeadroom
            file = headroom && work.isComplete ? work : nil
        } else if !writing, let clean = node.clean, clean.isComplete, clean.size == node.size {
            file = clean
        } else {
            file = nil
        }
        guard let file else { return cached }
        let id: Int32
        do {
            id = try backingFiles.register(fd: file.fd)
        } catch let error as FuseError {
            // EPERM (no CAP_SYS_ADMIN) or ELOOP (stacking) will not get better: stop
            // trying; anything else is per file.
            if error.errno == EPERM || error.errno == ELOOP {
                passthroughActive = false
                Foundation.FileHandle.standardError.write(Data("hearth mount: passthrough disabled: backing open failed: \(error)\n".utf8))
            }
            return cached
        } catch {
            return cached
        }
        cache.retain(file)
        let writable = file === node.work
        var st = stat()
        fstat(file.fd, &st)
        node.passthrough = PassthroughState(id: id, file: file, writable: writable, opens: 1, seenSize: Int64(st.st_size),
                                            seenMtimeNs: Self.mtimeNs(st))
        if writable { passthroughWriters.insert(node.ino) }
        passthroughStats.passthroughOpens += 1
        return (.passthrough, FuseOpenFlag.passthrough, id)
    }

    /// One passthrough open of `node` closed (lock held): the last one drops the
    /// backing id, after a final look at what the kernel wrote through a write open.
    func releasePassthrough(_ node: Inode, writing: Bool) {
        guard var state = node.passthrough else { return }
        if state.writable { refreshFromBacking(node, force: writing) }
        state = node.passthrough ?? state
        state.opens -= 1
        guard state.opens == 0 else {
            node.passthrough = state
            return
        }
        // The kernel released the inode's io mode before sending RELEASE
        // (fuse_file_put), so the id is no longer in use.
        backingFiles?.close(id: state.id)
        cache.close(state.file)
        node.passthrough = nil
        passthroughWriters.remove(node.ino)
    }

    /// Picks up what the kernel wrote to a writable backing file (lock held): size,
    /// mtime and ctime into the inode (getattr must show them), the size into the
    /// quota, and every chunk dirty for the next commit. `force` marks dirty even if
    /// size and mtime look unchanged: writes through a shared mmap can change bytes
    /// without moving mtime, so fsync and the last close always take everything.
    func refreshFromBacking(_ node: Inode, force: Bool) {
        guard var state = node.passthrough, state.writable, let work = node.work, work === state.file else { return }
        var st = stat()
        guard fstat(work.fd, &st) == 0 else { return }
        passthroughStats.refreshes += 1
        let size = Int64(st.st_size), mtime = Self.mtimeNs(st)
        // A write in the same timestamp tick as the last look leaves mtime as it was:
        // treat a recent mtime as changed.
        let recent = nowNs() - mtime < 1_000_000_000
        let changed = force || recent || size != state.seenSize || mtime != state.seenMtimeNs
        guard changed else { return }
        if size != node.size {
            if node.nlink > 0 { usedBytes += size - node.size }
            node.size = size
        }
        if mtime != state.seenMtimeNs {
            node.mtimeNs = mtime
            node.ctimeNs = Int64(st.st_ctim.tv_sec) * 1_000_000_000 + Int64(st.st_ctim.tv_nsec)
        }
        work.noteExternalWrites(size: size)
        state.seenSize = size
        state.seenMtimeNs = mtime
        node.passthrough = state
        if !dirtyFiles.contains(node.ino) { markFileDirty(node) }
    }

    /// Refreshes every file with a writable passthrough open (lock held); the
    /// committer calls this before taking dirty state.
    func refreshPassthroughWriters() {
        for ino in passthroughWriters {
            if let node = nodes[ino] { refreshFromBacking(node, force: false) }
        }
    }

    static func mtimeNs(_ st: stat) -> Int64 {
        Int64(st.st_mtim.tv_sec) * 1_000_000_000 + Int64(st.st_mtim.tv_nsec)
    }
}
