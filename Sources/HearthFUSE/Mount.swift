import CFuse
import HearthMounts
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A FUSE mount made by libfuse3 (mount(2) as root, fusermount3 otherwise), whose
/// /dev/fuse fd is served by a ``FuseSession`` instead of libfuse's loop.
///
/// libfuse is kept for what it does well and portably (option parsing, the mount
/// helper, unmount); the kernel protocol is ours because passthrough, takeover and
/// resend are beyond libfuse 3.14.
public final class FuseMount: Sendable {
    public let mountpoint: String
    /// The /dev/fuse fd of the connection. Owned by libfuse's session until
    /// ``close()``; workers clone it rather than share it.
    public let fd: Int32
    /// `struct fuse_session *` as a bit pattern, nil once closed. Every libfuse call
    /// happens under this lock: unmount runs on a signal handler's queue while the
    /// main thread may be closing the session (unlocked, that raced into a
    /// use-after-free in libfuse's unmount).
    private let session: Mutex<UInt?>

    /// Mounts `mountpoint`. `options` are mount options (`default_permissions`,
    /// `allow_other`, `ro`, `fsname=…`). A stale mount left by a crashed daemon
    /// (ENOTCONN) is detached first.
    public init(mountpoint: String, options: [String]) throws {
        try Self.clearStaleMount(mountpoint)
        let argv = ["hearth", "-o", options.joined(separator: ",")]
        var cArgs = argv.map { strdup($0) }
        defer { cArgs.forEach { free($0) } }
        guard let se = cArgs.withUnsafeMutableBufferPointer({ hearth_fuse_session_new(Int32(argv.count), $0.baseAddress) }) else {
            throw FuseError.invalid
        }
        guard fuse_session_mount(se, mountpoint) == 0 else {
            fuse_session_destroy(se)
            throw FuseError(errno: errno == 0 ? EIO : errno)
        }
        self.mountpoint = mountpoint
        self.fd = fuse_session_fd(se)
        self.session = Mutex(UInt(bitPattern: Int(bitPattern: UnsafeMutableRawPointer(se))))
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
    }

    /// Detaches the mount (lazily, so busy files keep working until closed). The
    /// connection stays up until the kernel drops it; workers see ENODEV then.
    /// Idempotent and safe from any thread.
    public func unmount() {
        session.withLock { se in
            guard let se, let handle = OpaquePointer(bitPattern: se) else { return }
            fuse_session_unmount(handle)
        }
    }

    /// Frees libfuse's session and closes the fd. Call after the workers stopped;
    /// later calls (and unmounts) do nothing.
    public func close() {
        session.withLock { se in
            guard let bits = se, let handle = OpaquePointer(bitPattern: bits) else { return }
            se = nil
            fuse_session_destroy(handle)
        }
    }

    /// A daemon that crashed leaves its mountpoint answering ENOTCONN; detach it so
    /// the next start can mount again.
    ///
    /// Detected with statfs, which always asks the daemon: stat(2) of the mountpoint
    /// is answered from the kernel's attribute cache while the root's attributes are
    /// valid (up to the attribute timeout), so a dead mount looked alive and the new
    /// one went on top of it or, worse, a reader raced onto the dead one.
    public static func clearStaleMount(_ path: String) throws {
        var fs = statvfs()
        if statvfs(path, &fs) != 0 && errno == ENOTCONN {
            guard umount2(path, Int32(MNT_DETACH)) == 0 else { throw FuseError(errno: errno) }
        }
    }

    /// Whether `path` is a FUSE mountpoint (the one mount table reader, HearthMounts).
    public static func isMounted(_ path: String) -> Bool {
        MountTable.mount(at: path)?.fsType.hasPrefix("fuse") ?? false
    }
}
