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
/// spare name in its directory; the next working copy in that directory is a rename
/// of a spare, never a new inode.
///
/// The rename on park matters for takeover: the journal may name the dropped copy's
/// path, and a successor must find that path gone (as after an unlink), never an
/// empty file it would take for the working copy.
final class SpareWorkingCopies: Sendable {
    /// Spares kept per cache (zero-length files: an inode each, no data blocks). A
    /// commit retires up to a few thousand small files at once; beyond this they are
    /// unlinked as before.
    static let limit = 4096

    private struct Pool {
        var byDirectory: [String: [String]] = [:]
        var count = 0
        var serial: UInt64 = 0
    }

    private let pool = Mutex(Pool())

    /// Empties the working copy at `path` (its fd `fd`, still open) and keeps it as a
    /// spare; unlinks it when the pool is full or the rename fails.
    func park(path: String, fd: Int32) {
        let directory = (path as NSString).deletingLastPathComponent
        let spare: String? = pool.withLock { pool in
            guard pool.count < Self.limit else { return nil }
            pool.serial += 1
            return directory + "/spare." + String(pool.serial)
        }
        // Renamed before it is emptied: a daemon killed in between must leave the
        // journaled path either whole or gone, never an empty file at it.
        guard let spare, rename(path, spare) == 0 else {
            unlink(path)
            return
        }
        guard ftruncate(fd, 0) == 0 else {
            unlink(spare)
            return
        }
        pool.withLock { pool in
            pool.byDirectory[directory, default: []].append(spare)
            pool.count += 1
        }
    }

    /// Moves a spare of `directory` to `path` (which the caller then opens with
    /// O_CREAT: it exists, so no inode is allocated). False if there is none.
    func reuse(in directory: String, as path: String) -> Bool {
        while let spare = pool.withLock({ pool -> String? in
            guard let spare = pool.byDirectory[directory]?.popLast() else { return nil }
            pool.count -= 1
            return spare
        }) {
            if rename(spare, path) == 0 { return true }
        }
        return false
    }

    /// Forgets the spares of `directory` (it is being removed).
    func forget(directory: String) {
        pool.withLock { pool in
            pool.count -= pool.byDirectory.removeValue(forKey: directory)?.count ?? 0
        }
    }
}
