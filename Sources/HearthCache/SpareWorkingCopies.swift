import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Emptied working-copy files kept for reuse instead of being unlinked.
///
/// A metadata-heavy workload (untar, a build, the create+stat+unlink benchmark) makes
/// one working copy per small file and drops it at the next commit. Creating and
/// unlinking a file per file costs far more than the two syscalls suggest on ext4
/// without a journal (this machine's root filesystem): the inode allocator skips every
/// inode deleted in the last 60–360 s (`recently_deleted` in fs/ext4/ialloc.c reads
/// each one's dtime from the inode table), so each create scans past all earlier
/// deletions and a 10,000-file run went quadratic (15 s of 17 s in `ext4_create`).
/// Recycling keeps the inode: a dropped copy is truncated to zero and renamed to a
/// spare name in its directory; the next working copy in that directory is a spare,
/// under the spare's name, never a new inode.
///
/// The rename on park matters for takeover: the journal may name the dropped copy's
/// path, and a successor must find that path gone (as after an unlink), never an
/// empty file it would take for the working copy.
final class SpareWorkingCopies: Sendable {
    /// Spares kept per cache (zero-length files: an inode each, no data blocks). A
    /// commit retires up to a few thousand small files at once; beyond this they are
    /// unlinked as before.
    static let limit = 4096
    /// Of those, how many stay open. An open spare becomes the next working copy as
    /// it is, with no rename and no open: on the create path of a small-file burst
    /// those two took about two thirds of CREATE's time in the daemon (a rename in
    /// a directory of thousands of names). The rest are reopened by name.
    static let openLimit = 256

    private struct Spare {
        var path: String
        /// -1 when not kept open.
        var fd: Int32
    }

    private struct Pool {
        var byDirectory: [String: [Spare]] = [:]
        var count = 0
        var open = 0
        var serial: UInt64 = 0
    }

    private let pool = Mutex(Pool())
    /// Spare names are unique to this daemon: an open spare becomes a working copy
    /// under its own name, and a successor taking over after a crash must never park
    /// a file over a working copy it adopted from the journal.
    private let prefix = "spare." + String(UInt64.random(in: 0...UInt64.max), radix: 36) + "."

    /// A spare handed out: its path and, if it was kept open, its fd (now the
    /// caller's). The file is empty.
    struct Taken {
        var path: String
        var fd: Int32?
    }

    /// Empties the working copy at `path` (its fd `fd`, still open; the caller closes
    /// it) and keeps it as a spare; unlinks it when the pool is full or the rename
    /// fails.
    func park(path: String, fd: Int32) {
        let directory = (path as NSString).deletingLastPathComponent
        let spare: String? = pool.withLock { pool in
            guard pool.count < Self.limit else { return nil }
            pool.serial += 1
            pool.count += 1
            return directory + "/" + prefix + String(pool.serial)
        }
        guard let spare else {
            unlink(path)
            return
        }
        // Renamed before it is emptied: a daemon killed in between must leave the
        // journaled path either whole or gone, never an empty file at it.
        guard rename(path, spare) == 0 else {
            unlink(path)
            pool.withLock { $0.count -= 1 }
            return
        }
        guard ftruncate(fd, 0) == 0 else {
            unlink(spare)
            pool.withLock { $0.count -= 1 }
            return
        }
        let keepOpen = pool.withLock { pool -> Bool in
            guard pool.open < Self.openLimit else { return false }
            pool.open += 1
            return true
        }
        let kept = keepOpen ? dup(fd) : -1
        if keepOpen && kept < 0 { pool.withLock { $0.open -= 1 } }
        pool.withLock { pool in
            pool.byDirectory[directory, default: []].append(Spare(path: spare, fd: kept))
        }
    }

    /// A spare of `directory`, or nil if there is none.
    func take(in directory: String) -> Taken? {
        pool.withLock { pool -> Taken? in
            guard let spare = pool.byDirectory[directory]?.popLast() else { return nil }
            pool.count -= 1
            if spare.fd >= 0 { pool.open -= 1 }
            return Taken(path: spare.path, fd: spare.fd >= 0 ? spare.fd : nil)
        }
    }

    /// Forgets the spares of `directory` (it is being removed).
    func forget(directory: String) {
        let gone: [Spare] = pool.withLock { pool in
            let gone = pool.byDirectory.removeValue(forKey: directory) ?? []
            pool.count -= gone.count
            pool.open -= gone.filter { $0.fd >= 0 }.count
            return gone
        }
        for spare in gone where spare.fd >= 0 { close(spare.fd) }
    }
}
