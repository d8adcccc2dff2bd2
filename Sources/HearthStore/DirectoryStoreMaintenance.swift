import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// What keeps a directory store safe under the garbage collector and tidy
/// after crashes: freshening reused objects, a sweep delete that cannot take
/// an object a writer just reused, and removal of temp files a crashed
/// process left behind.
extension DirectoryStore {
    /// Temp files older than this belong to no live writer: a write keeps its
    /// temp file for the length of one commit, and commits run at least hourly.
    static let abandonedTempAge: TimeInterval = 24 * 3600

    public func freshen(_ key: String) async throws {
        try await offload {
            try ObjectKey.validate(key)
            guard utimensat(AT_FDCWD, objectsPath + "/" + key, nil, 0) == 0 else {
                if errno == ENOENT { throw StoreError.notFound(key) }
                throw Self.posixError("freshen \(key)")
            }
        }
    }

    /// A dedup hit on `key` (whose `stat` is `st`): freshens it when old.
    /// False when it vanished meanwhile (collected): the caller stores it again.
    func freshenIfOld(_ key: String, _ st: stat) -> Bool {
        let modified = TimeInterval(st.st_mtim.tv_sec)
        guard modified < Date().timeIntervalSince1970 - ObjectStoreTiming.freshenAfter else { return true }
        return utimensat(AT_FDCWD, objectsPath + "/" + key, nil, 0) == 0
    }

    /// Moves the object aside (atomically: a writer now either freshened it
    /// before, and its time shows it, or finds it gone and stores it again),
    /// then checks its time: fresh ones go back, stale ones are unlinked.
    public func deleteIfStale(_ key: String, cutoff: Date) async throws -> Bool {
        try await offload {
            try ObjectKey.validate(key)
            let path = objectsPath + "/" + key
            let aside = tmpPath + "/gc-" + UUID().uuidString.lowercased()
            guard rename(path, aside) == 0 else {
                if errno == ENOENT || errno == ENOTDIR { return false }
                throw Self.posixError("move \(key) aside")
            }
            var st = stat()
            guard stat(aside, &st) == 0 else { throw Self.posixError("stat \(key) set aside") }
            let modified = Date(timeIntervalSince1970: TimeInterval(st.st_mtim.tv_sec) + TimeInterval(st.st_mtim.tv_nsec) / 1e9)
            if modified > cutoff {
                // Freshened by a writer just before: put it back (unless the
                // writer already stored it again, which is the same bytes).
                if link(aside, path) != 0 && errno != EEXIST { throw Self.posixError("restore \(key)") }
                unlink(aside)
                return false
            }
            unlink(aside)
            try Self.fsyncDirectory((path as NSString).deletingLastPathComponent)
            return true
        }
    }

    /// Removes temp files no live writer can own (see ``abandonedTempAge``).
    /// Best effort at open: a store that cannot be tidied still works.
    func removeAbandonedTempFiles() {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: tmpPath) else { return }
        let cutoff = Date().timeIntervalSince1970 - Self.abandonedTempAge
        for name in names {
            var st = stat()
            let path = tmpPath + "/" + name
            if stat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG, TimeInterval(st.st_mtim.tv_sec) < cutoff {
                unlink(path)
            }
        }
    }
}
