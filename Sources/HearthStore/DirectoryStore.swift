import Crypto
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An ``ObjectStore`` in a local directory: Hearth's embedded default for one machine.
///
/// Layout under the root: `objects/<key>` holds the objects, `tmp/` the files being
/// written, `locks/` a fixed set of lock files. The guarantees match S3's:
///
/// - **Atomic**: every write goes to a private temp file that is renamed (or linked)
///   into place, so readers see the old or the new bytes, never a mix.
/// - **Durable**: the temp file and the directory holding the final name are fsync'd
///   before `put` returns.
/// - **Create-if-absent** uses `link(2)`, which fails with `EEXIST` atomically even
///   between processes.
/// - **Compare-and-swap** (and unconditional writes, so they serialise with it) take
///   an `flock(2)` on one of 64 striped lock files, compare the entity tag and rename.
///   The lock is held only across synchronous system calls, never across an `await`.
/// - **Entity tags** are `<inode>-<mtime ns>-<size>`. Each write creates a new inode and
///   stamps it with the real-time clock in nanoseconds (bumped past the replaced file's
///   stamp under the lock), so the tag changes on every write without hashing bytes.
public struct DirectoryStore: ObjectStore {
    /// The directory holding `objects/`, `tmp/` and `locks/`.
    public let root: URL
    let objectsPath: String
    let tmpPath: String
    private let locksPath: String
    private static let lockStripes = 64
    /// Content written by ``putContent(_:data:)`` and not yet flushed; shared by
    /// copies of this value.
    private let pending = PendingContent()

    /// Opens (creating if needed) a store rooted at `root`.
    public init(root: URL) throws {
        self.root = root.standardizedFileURL
        objectsPath = self.root.path + "/objects"
        tmpPath = self.root.path + "/tmp"
        locksPath = self.root.path + "/locks"
        for path in [self.root.path, objectsPath, tmpPath, locksPath] {
            try Self.makeDirectories(path)
        }
        removeAbandonedTempFiles()
    }

    // MARK: ObjectStore

    public func get(_ key: String) async throws -> Data {
        try await offload { try syncGet(key) }
    }

    public func get(_ key: String, range: Range<Int64>) async throws -> Data {
        try await offload { try syncGet(key, range: range) }
    }

    public func head(_ key: String) async throws -> ObjectInfo {
        try await offload { try syncHead(key) }
    }

    @discardableResult
    public func put(_ key: String, data: Data, condition: WriteCondition) async throws -> String {
        try await offload { try syncPut(key, data: data, condition: condition) }
    }

    public func delete(_ key: String) async throws {
        try await offload { try syncDelete(key) }
    }

    /// Writes the bytes to a temp file without fsync and remembers it; ``flush()``
    /// makes all such files durable with one `syncfs(2)` and only then links them
    /// under their final names. So every object visible under its final name is
    /// durable (a crash leaves only temp files), and dedup never trusts a torn object.
    public func putContent(_ key: String, data: Data) async throws {
        try await offload { try syncPutContent(key, data: data) }
    }

    /// The whole batch in one trip to an I/O thread.
    public func putContents(_ objects: [ContentObject]) async throws {
        try await offload { for object in objects { try syncPutContent(object.key, data: object.data) } }
    }

    public func flush() async throws {
        try await offload { try syncFlush() }
    }

    public func list(prefix: String, startAfter: String?, continuationToken: String?, limit: Int) async throws -> ObjectListing {
        try await offload { try syncList(prefix: prefix, startAfter: startAfter, continuationToken: continuationToken, limit: limit) }
    }

    /// Runs blocking file-system work (fsync above all) off Swift's cooperative pool:
    /// that pool has one thread per core, and a few fsyncs would otherwise stall
    /// every task in the process (FUSE requests too).
    ///
    /// Work is spread round-robin over serial queues. Serial queues are "overcommit"
    /// in libdispatch and get a thread each when busy, whereas a concurrent queue on
    /// Linux is capped near the core count (no kernel feedback about blocked
    /// threads), which limited parallel uploads to two fsyncs in flight. Overlapping
    /// fsyncs lets the file system commit them as one journal transaction.
    func offload<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
        let queue = Self.ioQueues[Self.nextQueue.wrappingAdd(1, ordering: .relaxed).oldValue & (Self.ioQueues.count - 1)]
        return try await withCheckedThrowingContinuation { continuation in
            queue.async {
                continuation.resume(with: Result { try work() })
            }
        }
    }

    private static let ioQueues = (0..<32).map { DispatchQueue(label: "hearth.store.directory-io.\($0)", qos: .userInitiated) }
    private static let nextQueue = Atomic<Int>(0)

    // MARK: deferred content

    private func syncPutContent(_ key: String, data: Data) throws {
        try ObjectKey.validate(key)
        var st = stat()
        if stat(objectsPath + "/" + key, &st) == 0, freshenIfOld(key, st) { return }  // durable already
        if pending.entries.withLock({ $0[key] != nil }) { return }
        let (tmp, fd) = try createTempFile()
        defer { close(fd) }
        do {
            try Self.writeFully(fd: fd, data: data, what: key)
            try stamp(fd: fd, after: nil)
            // Start writeback now (POSIX_FADV_DONTNEED writes dirty pages
            // asynchronously and cannot drop them meanwhile), so the disk works
            // while later chunks are hashed and the flush's syncfs finds little left.
            _ = posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED)
        } catch {
            unlink(tmp)
            throw error
        }
        let duplicate = pending.entries.withLock { entries in
            if entries[key] != nil { return true }
            entries[key] = tmp
            return false
        }
        if duplicate { unlink(tmp) }
    }

    /// Up to this many objects, a flush fsyncs each and the directories it linked
    /// them into; beyond, one `syncfs(2)` costs less than that many device flushes.
    /// syncfs writes back the whole file system, and the store often shares it with
    /// the node cache: a metadata burst's commit (a handful of trees, its small
    /// files' chunks deduplicated) then forced the burst's working copies to disk
    /// just before they were emptied for reuse, and with online discard each of
    /// those truncates waited for a discard.
    public static let individualSyncLimit = 64

    private func syncFlush() throws {
        let batch = pending.entries.withLock { $0 }
        guard !batch.isEmpty else { return }
        let individually = batch.count <= Self.individualSyncLimit
        // The temp files' data.
        if individually {
            for (key, tmp) in batch { try Self.fsyncFile(tmp, what: key) }
        } else {
            try syncFileSystem()
        }
        var parents = Set<String>()
        for (key, tmp) in batch {
            let final = objectsPath + "/" + key
            let parent = (final as NSString).deletingLastPathComponent
            try Self.makeDirectories(parent)
            parents.insert(parent)
            if link(tmp, final) != 0 && errno != EEXIST {
                // A concurrent flush linked it (after its own sync) and removed the temp.
                var st = stat()
                if errno == ENOENT && stat(final, &st) == 0 { continue }
                throw Self.posixError("link \(key)")
            }
        }
        // The new directory entries.
        if individually {
            for parent in parents { try Self.fsyncDirectory(parent) }
        } else {
            try syncFileSystem()
        }
        pending.entries.withLock { entries in
            for (key, tmp) in batch where entries[key] == tmp { entries[key] = nil }
        }
        for (_, tmp) in batch { unlink(tmp) }
    }

    /// One `syncfs(2)` instead of an fsync per object: the file system commits all
    /// dirty data and metadata in one journal transaction.
    private func syncFileSystem() throws {
        let fd = open(root.path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw Self.posixError("open \(root.path)") }
        defer { close(fd) }
        if let syncfs = Self.syncfsFunction {
            guard syncfs(fd) == 0 else { throw Self.posixError("syncfs") }
        } else {
            sync()
        }
    }

    /// Glibc declares `syncfs` only under _GNU_SOURCE, which the Swift Glibc module
    /// does not see; look it up once at run time (it exists on every Linux libc).
    private static let syncfsFunction: (@convention(c) (Int32) -> Int32)? = {
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "syncfs") else { return nil }
        return unsafeBitCast(symbol, to: (@convention(c) (Int32) -> Int32).self)
    }()

    // MARK: reads

    private func syncGet(_ key: String) throws -> Data {
        try ObjectKey.validate(key)
        let fd = try openForReading(key)
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw Self.posixError("fstat \(key)") }
        return try Self.readFully(fd: fd, offset: 0, count: Int(st.st_size), key: key)
    }

    private func syncGet(_ key: String, range: Range<Int64>) throws -> Data {
        try ObjectKey.validate(key)
        guard range.lowerBound >= 0 else { throw StoreError.invalidArgument("negative range start") }
        let fd = try openForReading(key)
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw Self.posixError("fstat \(key)") }
        let end = min(range.upperBound, Int64(st.st_size))
        guard end > range.lowerBound else { return Data() }
        return try Self.readFully(fd: fd, offset: range.lowerBound, count: Int(end - range.lowerBound), key: key)
    }

    private func syncHead(_ key: String) throws -> ObjectInfo {
        try ObjectKey.validate(key)
        var st = stat()
        if let tmp = pending.entries.withLock({ $0[key] }), stat(tmp, &st) == 0 {
            return Self.info(key: key, st)
        }
        guard stat(objectsPath + "/" + key, &st) == 0 else {
            if errno == ENOENT || errno == ENOTDIR { throw StoreError.notFound(key) }
            throw Self.posixError("stat \(key)")
        }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw StoreError.notFound(key) }
        return Self.info(key: key, st)
    }

    // MARK: writes

    private func syncPut(_ key: String, data: Data, condition: WriteCondition) throws -> String {
        try ObjectKey.validate(key)
        let finalPath = objectsPath + "/" + key
        let parent = (finalPath as NSString).deletingLastPathComponent
        try Self.makeDirectories(parent)

        let (tmp, fd) = try createTempFile()
        var linked = false
        defer {
            close(fd)
            if !linked { unlink(tmp) }
        }
        try Self.writeFully(fd: fd, data: data, what: key)

        switch condition {
        case .ifAbsent:
            try stamp(fd: fd, after: nil)
            guard fsync(fd) == 0 else { throw Self.posixError("fsync \(key)") }
            // link(2) is the atomic create-if-absent: EEXIST if the name exists.
            if link(tmp, finalPath) != 0 {
                if errno == EEXIST { throw StoreError.alreadyExists(key) }
                throw Self.posixError("link \(key)")
            }
            // The temp name is removed by the defer; the object keeps its inode.
        case .none, .ifMatch:
            try withKeyLock(key) {
                var current = stat()
                let exists = stat(finalPath, &current) == 0
                if case .ifMatch(let expected) = condition {
                    guard exists else { throw StoreError.conflict(key) }
                    guard Self.etag(current) == expected else { throw StoreError.conflict(key) }
                }
                try stamp(fd: fd, after: exists ? current : nil)
                guard fsync(fd) == 0 else { throw Self.posixError("fsync \(key)") }
                guard rename(tmp, finalPath) == 0 else { throw Self.posixError("rename \(key)") }
                linked = true
            }
        }
        try Self.fsyncDirectory(parent)
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw Self.posixError("fstat \(key)") }
        return Self.etag(st)
    }

    private func syncDelete(_ key: String) throws {
        try ObjectKey.validate(key)
        let path = objectsPath + "/" + key
        if unlink(path) != 0 {
            if errno == ENOENT || errno == ENOTDIR { return }
            throw Self.posixError("unlink \(key)")
        }
        try Self.fsyncDirectory((path as NSString).deletingLastPathComponent)
    }

    // MARK: listing

    /// The continuation token is simply the last key returned.
    private func syncList(prefix: String, startAfter: String?, continuationToken: String?, limit: Int) throws -> ObjectListing {
        try ObjectKey.validatePrefix(prefix)
        guard limit > 0 else { throw StoreError.invalidArgument("listing limit must be positive") }
        if let continuationToken { try ObjectKey.validate(continuationToken) }
        let after = continuationToken ?? startAfter
        // Start in the deepest directory the prefix names entirely.
        let dirPart: String
        if let slash = prefix.lastIndex(of: "/") {
            dirPart = String(prefix[..<slash])
        } else {
            dirPart = ""
        }
        var walker = ListingWalker(prefix: prefix, after: after, limit: limit + 1)
        try walker.walk(directory: dirPart.isEmpty ? objectsPath : objectsPath + "/" + dirPart,
                        relative: dirPart.isEmpty ? "" : dirPart + "/")
        let truncated = walker.results.count > limit
        let page = Array(walker.results.prefix(limit))
        return ObjectListing(objects: page, nextContinuationToken: truncated ? page.last?.key : nil)
    }

    /// Depth-first walk in byte order of the resulting keys. A directory `d` sorts as
    /// `d/` so that `a.b` (0x2E) comes before `a/x` (0x2F) as it does on S3.
    private struct ListingWalker {
        let prefix: String
        let after: String?
        let limit: Int
        var results: [ObjectInfo] = []

        init(prefix: String, after: String?, limit: Int) {
            self.prefix = prefix
            self.after = after
            self.limit = limit
        }

        mutating func walk(directory: String, relative: String) throws {
            guard let dir = opendir(directory) else {
                if errno == ENOENT || errno == ENOTDIR { return }
                throw DirectoryStore.posixError("opendir \(directory)")
            }
            var entries: [(sortKey: String, name: String, isDir: Bool)] = []
            while let entry = readdir(dir) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                    String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
                }
                if name == "." || name == ".." { continue }
                var isDir = entry.pointee.d_type == UInt8(DT_DIR)
                if entry.pointee.d_type == UInt8(DT_UNKNOWN) {
                    var st = stat()
                    if stat(directory + "/" + name, &st) == 0 { isDir = (st.st_mode & S_IFMT) == S_IFDIR }
                }
                entries.append((isDir ? name + "/" : name, name, isDir))
            }
            closedir(dir)
            entries.sort { $0.sortKey.utf8.lexicographicallyPrecedes($1.sortKey.utf8) }
            for entry in entries {
                if results.count >= limit { return }
                let key = relative + entry.sortKey
                // Only keys compatible with the prefix.
                guard key.hasPrefix(prefix) || (entry.isDir && prefix.hasPrefix(key)) else { continue }
                if let after {
                    if entry.isDir {
                        // Every key below starts with `key`; skip the subtree if all precede `after`.
                        if !after.hasPrefix(key) && !after.utf8.lexicographicallyPrecedes(key.utf8) { continue }
                    } else if !after.utf8.lexicographicallyPrecedes(key.utf8) {
                        continue
                    }
                }
                if entry.isDir {
                    try walk(directory: directory + "/" + entry.name, relative: key)
                } else {
                    var st = stat()
                    guard stat(directory + "/" + entry.name, &st) == 0 else { continue }  // deleted meanwhile
                    results.append(DirectoryStore.info(key: key, st))
                }
            }
        }
    }

    // MARK: helpers

    private func openForReading(_ key: String) throws -> Int32 {
        if let tmp = pending.entries.withLock({ $0[key] }) {
            let fd = open(tmp, O_RDONLY | O_CLOEXEC)
            if fd >= 0 { return fd }  // else flushed meanwhile: read the final name
        }
        let fd = open(objectsPath + "/" + key, O_RDONLY | O_CLOEXEC)
        if fd < 0 {
            if errno == ENOENT || errno == ENOTDIR || errno == EISDIR { throw StoreError.notFound(key) }
            throw Self.posixError("open \(key)")
        }
        return fd
    }

    private func createTempFile() throws -> (String, Int32) {
        for _ in 0..<8 {
            let name = tmpPath + "/" + UUID().uuidString.lowercased()
            let fd = open(name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
            if fd >= 0 { return (name, fd) }
            if errno != EEXIST { throw Self.posixError("create temp file") }
        }
        throw StoreError.io("could not create a unique temp file in \(tmpPath)")
    }

    /// Stamps the new file's mtime with the real-time clock, strictly after the file it
    /// replaces, so that its entity tag differs from every earlier version.
    private func stamp(fd: Int32, after previous: stat?) throws {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        if let previous {
            let prev = previous.st_mtim
            if now.tv_sec < prev.tv_sec || (now.tv_sec == prev.tv_sec && now.tv_nsec <= prev.tv_nsec) {
                now = prev
                now.tv_nsec += 1
                if now.tv_nsec >= 1_000_000_000 { now.tv_sec += 1; now.tv_nsec = 0 }
            }
        }
        var times = [now, now]
        guard futimens(fd, &times) == 0 else { throw Self.posixError("futimens") }
    }

    private func withKeyLock<T>(_ key: String, _ body: () throws -> T) throws -> T {
        let digest = SHA256.hash(data: Data(key.utf8))
        let stripe = Int(digest.withUnsafeBytes { $0[0] }) % Self.lockStripes
        let path = locksPath + "/\(stripe)"
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw Self.posixError("open lock") }
        defer { close(fd) }  // closing the description releases the flock
        while flock(fd, LOCK_EX) != 0 {
            if errno != EINTR { throw Self.posixError("flock") }
        }
        return try body()
    }

    static func etag(_ st: stat) -> String {
        let ns = Int64(st.st_mtim.tv_sec) * 1_000_000_000 + Int64(st.st_mtim.tv_nsec)
        return String(UInt64(st.st_ino), radix: 16) + "-" + String(ns, radix: 16) + "-" + String(Int64(st.st_size), radix: 16)
    }

    static func info(key: String, _ st: stat) -> ObjectInfo {
        let seconds = Double(st.st_mtim.tv_sec) + Double(st.st_mtim.tv_nsec) / 1e9
        return ObjectInfo(key: key, size: Int64(st.st_size), etag: etag(st),
                          lastModified: Date(timeIntervalSince1970: seconds))
    }

    static func makeDirectories(_ path: String) throws {
        var st = stat()
        if stat(path, &st) == 0 { return }
        let parent = (path as NSString).deletingLastPathComponent
        if !parent.isEmpty && parent != path { try makeDirectories(parent) }
        if mkdir(path, 0o755) != 0 && errno != EEXIST { throw posixError("mkdir \(path)") }
        // Make the new directory entry itself durable.
        if !parent.isEmpty { try? fsyncDirectory(parent) }
    }

    /// fsync of a file written and closed earlier (a pending temp file). A temp file
    /// a concurrent flush linked and removed meanwhile is durable already.
    static func fsyncFile(_ path: String, what key: String) throws {
        try syncPath(path, flags: 0, what: key, missingIsDone: true)
    }

    static func fsyncDirectory(_ path: String) throws {
        try syncPath(path, flags: O_DIRECTORY, what: "directory \(path)", missingIsDone: false)
    }

    private static func syncPath(_ path: String, flags: Int32, what: String, missingIsDone: Bool) throws {
        let fd = open(path, O_RDONLY | O_CLOEXEC | flags)
        if fd < 0 && errno == ENOENT && missingIsDone { return }
        guard fd >= 0 else { throw posixError("open \(what)") }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw posixError("fsync \(what)") }
    }

    static func readFully(fd: Int32, offset: Int64, count: Int, key: String) throws -> Data {
        var data = Data(count: count)
        var done = 0
        try data.withUnsafeMutableBytes { buffer in
            while done < count {
                let n = pread(fd, buffer.baseAddress! + done, count - done, off_t(offset) + off_t(done))
                if n < 0 {
                    if errno == EINTR { continue }
                    throw posixError("read \(key)")
                }
                if n == 0 { break }  // shrank under us: return what exists
                done += n
            }
        }
        if done < count { data.removeSubrange(done..<count) }
        return data
    }

    static func writeFully(fd: Int32, data: Data, what: String) throws {
        try data.withUnsafeBytes { buffer in
            var done = 0
            while done < buffer.count {
                let n = write(fd, buffer.baseAddress! + done, buffer.count - done)
                if n < 0 {
                    if errno == EINTR { continue }
                    throw posixError("write \(what)")
                }
                done += n
            }
        }
    }

    static func posixError(_ what: String) -> StoreError {
        .io("\(what): \(String(cString: strerror(errno)))")
    }
}

/// Final key → temp path of content awaiting ``DirectoryStore/flush()``.
final class PendingContent: Sendable {
    let entries = Mutex<[String: String]>([:])
}
