import CFuse
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Passthrough backing files of one FUSE connection (protocol 7.40,
/// FUSE_DEV_IOC_BACKING_OPEN / FUSE_DEV_IOC_BACKING_CLOSE on the /dev/fuse fd).
///
/// Why a separate object: the filesystem decides per open whether the kernel may do
/// a file's I/O itself, and needs to register and drop backing files without
/// knowing the session. Kernel rules this object does not hide (fs/fuse/iomode.c,
/// passthrough.c, backing.c in 6.18), which the caller must follow:
/// - registering needs CAP_SYS_ADMIN (EPERM otherwise) and a backing filesystem
///   stacked less deep than the negotiated `max_stack_depth` (ELOOP otherwise);
/// - the kernel re-opens the registered file's *path* for every passthrough open,
///   with the FUSE file's open flags and the registering daemon's credentials, so a
///   write open of a passthrough file writes into whatever file was registered;
/// - every open of an inode that has passthrough opens must be a passthrough open
///   with the *same* backing id (else the application's open fails with EIO), and a
///   passthrough open of an inode with page-cache (non-passthrough, non-direct-io)
///   opens fails with EIO (ETXTBSY inside the kernel);
/// - FOPEN_PASSTHROUGH combines only with DIRECT_IO, PARALLEL_DIRECT_WRITES and
///   NOFLUSH (KEEP_CACHE makes the open fail with EIO).
public final class BackingFiles: Sendable {
    /// The connection's /dev/fuse fd (the session's own dup; never closed here).
    let deviceFD: Int32
    private let counters = Mutex(Counters())

    /// What passthrough did, for metrics and tests.
    public struct Counters: Sendable, Codable, Hashable {
        public var registered: UInt64 = 0
        public var closed: UInt64 = 0
        public var failures: UInt64 = 0
        public var lastError: Int32 = 0
        public var open: Int64 { Int64(registered) - Int64(closed) }
    }

    init(deviceFD: Int32) {
        self.deviceFD = deviceFD
    }

    /// Registers `fd` (a regular file the daemon opened) and returns its backing id
    /// (> 0). The kernel takes its own reference: `fd` may be closed afterwards.
    public func register(fd: Int32) throws -> Int32 {
        let id = hearth_fuse_backing_open(deviceFD, fd)
        let err = errno
        counters.withLock {
            if id > 0 { $0.registered += 1 } else {
                $0.failures += 1
                $0.lastError = err
            }
        }
        guard id > 0 else { throw FuseError(errno: id == 0 ? EIO : err) }
        return id
    }

    /// Drops a backing id once no open uses it. The kernel keeps the file itself
    /// until the last passthrough open of the inode is released.
    public func close(id: Int32) {
        guard id > 0 else { return }
        let rc = hearth_fuse_backing_close(deviceFD, UInt32(id))
        let err = errno
        counters.withLock {
            if rc == 0 { $0.closed += 1 } else {
                $0.failures += 1
                $0.lastError = err
            }
        }
    }

    public var snapshot: Counters { counters.withLock { $0 } }

    /// Whether this process may register backing files at all (CAP_SYS_ADMIN in its
    /// effective set). Checked before INIT so that a daemon that cannot use
    /// passthrough keeps the kernel's writeback cache instead.
    public static var processHasSysAdmin: Bool {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("CapEff:") }),
              let caps = UInt64(line.dropFirst("CapEff:".count).trimmingCharacters(in: .whitespaces), radix: 16)
        else { return false }
        return caps & (1 << 21) != 0  // CAP_SYS_ADMIN
    }
}
