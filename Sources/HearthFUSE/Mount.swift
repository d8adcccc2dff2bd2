import CFuse
import Foundation

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
    /// `struct fuse_session *`, as a bit pattern: only mount, fd and unmount are used,
    /// from one thread at a time (the owner calls unmount/close once).
    private let session: UInt

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
        self.session = UInt(bitPattern: Int(bitPattern: UnsafeMutableRawPointer(se)))
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
    }

    private var handle: OpaquePointer { OpaquePointer(bitPattern: session)! }

    /// Detaches the mount (lazily, so busy files keep working until closed). The
    /// connection stays up until the kernel drops it; workers see ENODEV then.
    public func unmount() {
        fuse_session_unmount(handle)
    }

    /// Frees libfuse's session and closes the fd. Call after the workers stopped.
    public func close() {
        fuse_session_destroy(handle)
    }

    /// A daemon that crashed leaves its mountpoint answering ENOTCONN; detach it so
    /// the next start can mount again.
    public static func clearStaleMount(_ path: String) throws {
        var st = stat()
        if stat(path, &st) != 0 && errno == ENOTCONN {
            guard umount2(path, Int32(MNT_DETACH)) == 0 else { throw FuseError(errno: errno) }
        }
    }

    /// Whether `path` is a FUSE mountpoint (from /proc/self/mountinfo).
    public static func isMounted(_ path: String) -> Bool {
        guard let info = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8) else { return false }
        return info.split(separator: "\n").contains { line in
            let fields = line.split(separator: " ")
            return fields.count > 4 && fields[4] == path && line.contains(" - fuse")
        }
    }
}
