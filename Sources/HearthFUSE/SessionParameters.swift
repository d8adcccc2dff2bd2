/// Everything INIT negotiated, in one value.
///
/// A session that takes over a live /dev/fuse fd (a restarted daemon, see issue 8)
/// never sees INIT again: it must restore exactly these numbers, so they live in one
/// `Codable` struct that the fd keeper can store next to the fd.
public struct SessionParameters: Sendable, Codable, Hashable {
    /// The protocol minor version both sides speak (major is always 7).
    public var minor: UInt32
    /// What the kernel offered (`flags | flags2 << 32`).
    public var kernelFlags: UInt64
    /// What we accepted: a subset of `kernelFlags`.
    public var flags: UInt64
    public var maxReadahead: UInt32
    public var maxWrite: UInt32
    public var maxPages: UInt16
    public var maxBackground: UInt16
    public var congestionThreshold: UInt16
    public var timeGranularity: UInt32
    /// Passthrough stacking depth (7.40); 0 when passthrough is off.
    public var maxStackDepth: UInt32

    public func has(_ flag: UInt64) -> Bool { flags & flag != 0 }
}

/// What the filesystem would like from INIT; the session intersects it with what
/// the kernel offers.
public struct SessionOptions: Sendable {
    /// Largest WRITE payload; also sizes each worker's request buffer.
    public var maxWrite: UInt32 = 1 << 20
    public var maxReadahead: UInt32 = 1 << 20
    public var maxBackground: UInt16 = 64
    /// Kernel write-back caching: small application writes are merged into page-size
    /// (and larger) WRITEs, at the price of the kernel owning i_size while dirty.
    public var writebackCache = true
    /// Whether to offer xattr handling at all. Off: the first getxattr answers ENOSYS
    /// and the kernel never asks again, so writes never wait for the daemon to say
    /// `security.capability` is absent (see docs/fuse.md for the measurement).
    public var xattrs = false
    /// Request FUSE_PASSTHROUGH when the kernel offers it: opens of files whose bytes
    /// are all local can then be served by the kernel from a backing file
    /// (``BackingFiles``). The kernel refuses passthrough together with the writeback
    /// cache (fs/fuse/inode.c, process_init_reply), so when passthrough is granted
    /// the writeback cache is not asked for.
    public var passthrough = false
    /// Worker threads: started with `minWorkers`, grown while all are busy.
    public var minWorkers = 2
    public var maxWorkers = 16
    /// Give each worker its own fd (FUSE_DEV_IOC_CLONE). Off when an fd keeper holds
    /// the session fd: a clone is a device of its own, and when a killed daemon's
    /// clones are closed the kernel fails the requests read on them
    /// (fuse_dev_release ends its processing queue with ECONNABORTED) instead of
    /// keeping them for the successor's FUSE_NOTIFY_RESEND. Workers then all read the
    /// one fd the keeper also holds.
    public var cloneWorkerFDs = true
    /// Serve over io_uring (FUSE_OVER_IO_URING) when the kernel offers it (the fuse
    /// module's `enable_uring` parameter): see ``FuseSession`` (FuseRingQueues.swift)
    /// for why it is faster and why it does not go with an fd keeper.
    public var ioUring = false
    /// After a reply, the reading worker keeps polling /dev/fuse (without sleeping)
    /// for at most this long before it blocks in read(2), so that the next request of
    /// a busy caller is taken without a wake-up; the window shrinks for callers whose
    /// requests come further apart (``PollWindowRule``; docs/fuse.md "Polling before
    /// sleeping"). 0: the reader sleeps at once.
    public var pollWindowNs: UInt64 = 200_000

    public init() {}

    /// Intersects our wishes with the kernel's offer.
    func negotiate(kernelMinor: UInt32, kernelFlags: UInt64, kernelMaxReadahead: UInt32) -> SessionParameters {
        var wanted: UInt64 = FuseInitFlag.asyncRead | FuseInitFlag.atomicOTrunc | FuseInitFlag.bigWrites
            | FuseInitFlag.autoInvalData | FuseInitFlag.doReaddirplus | FuseInitFlag.readdirplusAuto
            | FuseInitFlag.asyncDIO | FuseInitFlag.parallelDirops | FuseInitFlag.maxPages
            | FuseInitFlag.cacheSymlinks | FuseInitFlag.initExt | FuseInitFlag.exportSupport
        if xattrs { wanted |= FuseInitFlag.handleKillprivV2 | FuseInitFlag.setxattrExt }
        if ioUring { wanted |= FuseInitFlag.overIOUring }
        let passthroughGranted = passthrough && kernelFlags & FuseInitFlag.passthrough != 0
        if passthroughGranted {
            wanted |= FuseInitFlag.passthrough
        } else if writebackCache {
            wanted |= FuseInitFlag.writebackCache
        }
        let flags = wanted & kernelFlags
        let pages = UInt16(min((maxWrite + 4095) / 4096, 256))
        return SessionParameters(
            minor: min(kernelMinor, FuseSession.protocolMinor), kernelFlags: kernelFlags, flags: flags,
            maxReadahead: min(maxReadahead, kernelMaxReadahead), maxWrite: UInt32(pages) * 4096,
            maxPages: pages, maxBackground: maxBackground, congestionThreshold: maxBackground * 3 / 4,
            timeGranularity: 1, maxStackDepth: flags & FuseInitFlag.passthrough != 0 ? 1 : 0)
    }
}

extension SessionParameters {
    /// `fuse_init_out` as of 7.45: 64 bytes.
    func encodeInitReply(into w: inout ReplyWriter) {
        w.u32(7)
        w.u32(minor)
        w.u32(maxReadahead)
        w.u32(UInt32(truncatingIfNeeded: flags))
        w.u16(maxBackground)
        w.u16(congestionThreshold)
        w.u32(maxWrite)
        w.u32(timeGranularity)
        w.u16(maxPages)
        w.u16(0)  // map_alignment
        w.u32(UInt32(truncatingIfNeeded: flags >> 32))  // flags2
        w.u32(maxStackDepth)  // 7.40
        w.u16(0)  // request_timeout (7.43): none
        w.zeros(22)  // unused[11]
    }
}
