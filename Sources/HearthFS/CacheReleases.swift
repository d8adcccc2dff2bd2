import HearthCache
import HearthStore

/// Working copies the namespace no longer refers to, handed back to the node cache
/// after the namespace lock is released.
///
/// Giving a working copy back is file-system work: ftruncate and rename (or unlink)
/// when it is dropped, a map file and two renames when it becomes a clean copy. A
/// commit retires every small file it uploaded at once, and on this machine's ext4
/// (no journal, online discard) a single truncate of allocated blocks took up to
/// 28 ms: done under the namespace lock, a burst of creates stalled every FUSE
/// request behind a commit (lookups and forgets averaged 0.3–0.5 ms, releases 2 ms).
/// Deferring is safe because the node has already let go of the file (`work` is
/// nil), so nothing reaches it but its own pins. Only the write-back thread drains
/// the queue (after each commit's step 3 and after every commit attempt): a FUSE
/// request never pays for another file's truncate, and a dropped copy waits at most
/// one commit (an unlink dirties its directory, so a commit follows).
enum CacheRelease {
    case close(CacheFile)
    case adopt(CacheFile, as: ContentHash, manifest: Manifest)
}

extension VolumeFileSystem {
    /// Queues `release` for ``drainCacheReleases()`` (lock held).
    func releaseLater(_ release: CacheRelease) {
        cacheReleases.append(release)
    }

    /// Hands queued working copies back to the node cache (lock NOT held; the
    /// write-back thread).
    func drainCacheReleases() {
        let releases: [CacheRelease] = lock.withLock {
            guard !cacheReleases.isEmpty else { return [] }
            defer { cacheReleases = [] }
            return cacheReleases
        }
        for release in releases {
            switch release {
            case .close(let file): cache.close(file)
            case .adopt(let file, let key, let manifest): cache.adopt(file, as: key, manifest: manifest)
            }
        }
    }
}
