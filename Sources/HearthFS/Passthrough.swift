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
    /// Size and mtime of the backing file when last looked at, and when that was.
    var seenSize: Int64
    var seenMtimeNs: Int64
    var seenAtNs: Int64 = 0
    /// The kernel wrote the backing file since its chunks were last marked dirty.
    var unnoted = false
    /// When its chunks were last marked dirty (or it was registered).
    var notedAtNs: Int64 = 0
}

/// When a look at a writable backing file marks its chunks dirty (see
/// ``VolumeFileSystem/refreshFromBacking(_:take:)``).
enum BackingTake {
    /// Now, whatever size and mtime say: fsync, the last close, a snapshot's commit.
    case now
    /// If it changed and the writer paused, or the last take is old: interval commits.
    case whenDue
    /// If the kernel wrote it since the last take: the last release of a read open
    /// (nothing unnoted may be forgotten with the state; nothing else is re-taken).
    case ifChanged
    /// Never: attributes only (getattr, reads, before a daemon write).
    case later
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
            // The id is the clean copy's (readers opened it), but a writer since has a
            // working copy with newer bytes: a new open, a reader's too, must see them,
            // so it goes through the daemon (which reads the working copy) under the
            // same id (FOPEN_DIRECT_IO overrides FOPEN_PASSTHROUGH). The readers' own
            // RELEASEs may simply not have arrived yet: the kernel sends them async.
            if !state.writable && (writing || node.work != nil) {
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
                                            seenMtimeNs: Self.mtimeNs(st), seenAtNs: nowNs(), notedAtNs: nowNs())
        if writable { passthroughWriters.insert(node.ino) }
        passthroughStats.passthroughOpens += 1
        return (.passthrough, FuseOpenFlag.passthrough, id)
    }

    /// One passthrough open of `node` closed (lock held): the last one drops the
    /// backing id, after a final look at what the kernel wrote through a write open.
    func releasePassthrough(_ node: Inode, writing: Bool) {
        guard var state = node.passthrough else { return }
        // A write open's close takes everything (shared-mmap stores leave no trace);
        // the last open of any kind takes what is not noted yet, which would be
        // forgotten with the state. A reader's close of a file written and closed
        // before takes nothing again (a read after every write re-committed it).
        if state.writable { refreshFromBacking(node, take: writing ? .now : state.opens == 1 ? .ifChanged : .later) }
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
    /// mtime and ctime into the inode at every look (getattr must show them), the
    /// size into the quota, and, when `force`, every chunk dirty for the next commit.
    /// Forced for fsync and the last close because writes through a shared mmap can
    /// change bytes without moving mtime.
    func refreshFromBacking(_ node: Inode, force: Bool) {
        refreshFromBacking(node, take: force ? .now : .later)
    }

    /// The daemon cannot see which chunks the kernel wrote, so taking a passthrough
    /// writer's changes means marking every chunk dirty, and the commit then reads
    /// and hashes the whole file (uploading only chunks whose hash moved). Doing that
    /// at every 5 s interval while a writer streams into a 512 MiB file cost ~20% of
    /// its write speed on this machine. So interval commits take a changed file only
    /// once its writer paused (mtime older than ``passthroughQuietNs``) or after
    /// ``passthroughDirtyExpiryNs`` since the last take, as the kernel's own dirty
    /// page write-back waits for `dirty_expire_centisecs` (30 s). Until then the
    /// bytes are safe on the node's disk in the journaled working copy (a daemon
    /// crash loses nothing); fsync, close and a snapshot's commit take them at once.
    func refreshFromBacking(_ node: Inode, take: BackingTake) {
        guard var state = node.passthrough, state.writable, let work = node.work, work === state.file else { return }
        var st = stat()
        guard fstat(work.fd, &st) == 0 else { return }
        passthroughStats.refreshes += 1
        let size = Int64(st.st_size), mtime = Self.mtimeNs(st), now = nowNs()
        // A write in the same timestamp tick as the last look leaves mtime as it was:
        // if that look was within a tick of the mtime it saw, assume a write hid there.
        let sameTick = state.seenAtNs - state.seenMtimeNs < Self.timestampTickNs
        state.seenAtNs = now
        if sameTick || size != state.seenSize || mtime != state.seenMtimeNs {
            state.unnoted = true
            if size != node.size {
                if node.nlink > 0 { usedBytes += size - node.size }
                node.size = size
            }
            if mtime != state.seenMtimeNs {
                node.mtimeNs = mtime
                node.ctimeNs = Int64(st.st_ctim.tv_sec) * 1_000_000_000 + Int64(st.st_ctim.tv_nsec)
            }
            state.seenSize = size
            state.seenMtimeNs = mtime
        }
        let due: Bool
        switch take {
        case .now: due = true
        case .whenDue:
            // A file this commit takes anyway (a daemon write, a truncate) takes all of
            // it: a manifest must never pair the new size with chunks not yet taken.
            due = state.unnoted && (dirtyFiles.contains(node.ino) || now - mtime >= Self.passthroughQuietNs
                                    || now - state.notedAtNs >= Self.passthroughDirtyExpiryNs)
        case .ifChanged: due = state.unnoted
        case .later: due = false
        }
        if due {
            trace("passthrough take ino \(node.ino) \(take) size \(size) mtime age \((now - mtime) / 1_000_000) ms")
            work.noteExternalWrites(size: size)
            state.unnoted = false
            state.notedAtNs = now
        } else if size != work.size {
            // The size is known even when the chunks are not taken yet: a daemon
            // read or write must see the file as long as the kernel made it.
            work.noteExternalSize(size)
        }
        node.passthrough = state
        if due && !dirtyFiles.contains(node.ino) { markFileDirty(node) }
    }

    /// Bound on the file timestamp granularity (a jiffy at the coarsest, HZ=100),
    /// with margin.
    static let timestampTickNs: Int64 = 50_000_000
    /// A writer that wrote nothing for this long has paused: interval commits take it.
    static let passthroughQuietNs: Int64 = 1_000_000_000
    /// A writer that never pauses is taken by an interval commit this long after the
    /// last take (the kernel's default `dirty_expire_centisecs`).
    static let passthroughDirtyExpiryNs: Int64 = 30_000_000_000

    /// Refreshes every file with a writable passthrough open (lock held): the
    /// committer (`.whenDue`) before taking dirty state, a snapshot's commit (`.now`).
    func refreshPassthroughWriters(take: BackingTake = .whenDue) {
        guard !sessionOver else { return }
        for ino in passthroughWriters {
            if let node = nodes[ino] { refreshFromBacking(node, take: take) }
        }
    }

    static func mtimeNs(_ st: stat) -> Int64 {
        Int64(st.st_mtim.tv_sec) * 1_000_000_000 + Int64(st.st_mtim.tv_nsec)
    }
}
