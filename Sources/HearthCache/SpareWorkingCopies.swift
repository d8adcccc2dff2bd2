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
    /// ``DescriptorBudget/openSpares``: 256 unless the descriptor table is small.
    let openLimit: Int
    /// A directory's spares are topped up in the background, ahead of demand, to
    /// `readyHigh` once fewer than `readyLow` are left (and while fewer than
    /// `openLimit` are open). Without that, a burst of new files makes a new inode
    /// per file until the first commit retires some: on this machine's ext4 (no
    /// journal) that create scans the block group's recently deleted inodes, and it
    /// doubled CREATE's time in the daemon (33 µs on tmpfs, 97 µs on ext4). Made
    /// ahead, the inode costs the caller nothing: a FUSE caller and the daemon take
    /// turns on one CPU, so the other one has the time.
    static let readyLow = 32
    static let readyHigh = 128

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
        /// Directories being topped up (one filler each).
        var filling: Set<String> = []
        /// Bumped by ``forget(directory:)``: a filler that started before drops
        /// what it made instead of keeping it for a removed directory.
        var generation: [String: UInt64] = [:]
    }

    private let pool = Mutex(Pool())

    init(openLimit: Int) {
        self.openLimit = openLimit
    }

    /// Spare names are unique to this daemon: an open spare becomes a working copy
    /// under its own name, and a successor taking over after a crash must never park
    /// a file over a working copy it adopted from the journal.
    private let prefix = SpareWorkingCopies.namePrefix + String(UInt64.random(in: 0...UInt64.max), radix: 36) + "."

    /// How every spare's name starts, whichever daemon made it.
    static let namePrefix = "spare."

    /// Whether `name` (a file name) is one of this daemon's spares.
    func isOwn(_ name: String) -> Bool { name.hasPrefix(prefix) }

    /// A spare handed out: its path and, if it was kept open, its fd (now the
    /// caller's). The file is empty.
    struct Taken {
        var path: String
        var fd: Int32?
    }

    /// Empties the working copy at `path` (its fd `fd`, still open; the caller closes
    /// it) and keeps it as a spare; unlinks it when the pool is full or the rename
    /// fails.
    ///
    /// A copy that already carries one of this daemon's spare names (it was a spare
    /// before it became a working copy, as nearly every copy of a burst was) is
    /// emptied where it is: a rename into a directory of thousands of names was
    /// about half of a small-file commit's time on this machine's ext4. The
    /// filesystem journals a file as having no working copy before it lets go of
    /// the copy (`VolumeFileSystem.retireWorkingCopy`, `dropIfUnreachable`), so a
    /// successor never takes the emptied file for that file's working copy.
    func park(path: String, fd: Int32) {
        // Cache paths are absolute and normalised: the parent is everything before
        // the last slash (NSString's path methods showed up in the commit's profile).
        let slash = path.lastIndex(of: "/")
        let directory = slash.map { String(path[..<$0]) } ?? ""
        let nameStart = slash.map { path.index(after: $0) } ?? path.startIndex
        let inPlace = path[nameStart...].hasPrefix(prefix)
        let spare: String? = pool.withLock { pool in
            guard pool.count < Self.limit else { return nil }
            pool.count += 1
            if inPlace { return path }
            pool.serial += 1
            return directory + "/" + prefix + String(pool.serial)
        }
        guard let spare else {
            unlink(path)
            return
        }
        // Any other name is renamed before it is emptied: a daemon killed in between
        // must leave a journaled path either whole or gone, never an empty file at it.
        guard inPlace || rename(path, spare) == 0 else {
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
            guard pool.open < openLimit else { return false }
            pool.open += 1
            return true
        }
        // Kept open through a new open file, not a dup: ext4 marks an inode it
        // truncates to zero (auto_da_alloc) and flushes its data at the next
        // release of any open file of it, then clears the mark. Through a dup that
        // release would be the next working copy's, in the writer's close(2): 1 byte
        // written through passthrough cost the caller ~30 µs of block allocation and
        // I/O submission per small file. The caller's close of `fd` is that release,
        // here, on an empty file.
        let kept = keepOpen ? open(spare, O_RDWR | O_CLOEXEC) : -1
        if keepOpen && kept < 0 { pool.withLock { $0.open -= 1 } }
        pool.withLock { pool in
            pool.byDirectory[directory, default: []].append(Spare(path: spare, fd: kept))
        }
    }

    /// A spare of `directory`, or nil if there is none; starts topping the
    /// directory up when it runs low.
    func take(in directory: String) -> Taken? {
        let (taken, fill): (Taken?, UInt64?) = pool.withLock { pool in
            let spare = pool.byDirectory[directory]?.popLast()
            if let spare {
                pool.count -= 1
                if spare.fd >= 0 { pool.open -= 1 }
            }
            var fill: UInt64?
            if pool.byDirectory[directory, default: []].count < Self.readyLow, pool.open < openLimit,
               pool.filling.insert(directory).inserted {
                fill = pool.generation[directory, default: 0]
            }
            return (spare.map { Taken(path: $0.path, fd: $0.fd >= 0 ? $0.fd : nil) }, fill)
        }
        if let fill {
            DispatchQueue.global(qos: .utility).async { self.fill(directory, generation: fill) }
        }
        return taken
    }

    /// Makes open, empty spares in `directory` up to `readyHigh` (a background
    /// thread). Makes the directory when it is missing (the first `take` of a
    /// volume comes before its first working copy), unless the volume's copies were
    /// cleared meanwhile; stops at any other failure, and the next `take` tries again.
    private func fill(_ directory: String, generation: UInt64) {
        defer { _ = pool.withLock { $0.filling.remove(directory) } }
        while true {
            let path: String? = pool.withLock { pool in
                guard pool.byDirectory[directory, default: []].count < Self.readyHigh,
                      pool.count < Self.limit, pool.open < openLimit else { return nil }
                pool.serial += 1
                pool.count += 1
                pool.open += 1
                return directory + "/" + prefix + String(pool.serial)
            }
            guard let path else { return }
            var fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
            if fd < 0, errno == ENOENT, pool.withLock({ $0.generation[directory, default: 0] == generation }),
               (try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)) != nil {
                fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
            }
            let kept = fd >= 0 && pool.withLock { pool in
                guard pool.generation[directory, default: 0] == generation else { return false }
                pool.byDirectory[directory, default: []].append(Spare(path: path, fd: fd))
                return true
            }
            guard kept else {
                pool.withLock { pool in
                    pool.count -= 1
                    pool.open -= 1
                }
                if fd >= 0 {
                    close(fd)
                    unlink(path)
                }
                return
            }
        }
    }

    /// Forgets the spares of `directory` (it is being removed).
    func forget(directory: String) {
        let gone: [Spare] = pool.withLock { pool in
            pool.generation[directory, default: 0] += 1
            let gone = pool.byDirectory.removeValue(forKey: directory) ?? []
            pool.count -= gone.count
            pool.open -= gone.filter { $0.fd >= 0 }.count
            return gone
        }
        for spare in gone where spare.fd >= 0 { close(spare.fd) }
    }
}
