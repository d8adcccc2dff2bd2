import CFuse
import Foundation
import HearthStore

#if canImport(Glibc)
import Glibc
#endif

extension NodeCache {
    /// Empties the clean cache file of one file version at `directory` (its
    /// presence map zeroed, its bytes punched out), unless a daemon has it open:
    /// open files hold a shared flock, and the exclusive one taken here fails
    /// then, exactly as for eviction. Returns the bytes that were present.
    ///
    /// For `cachePolicy: drop` volumes at unstage. The file stays (empty), so a
    /// daemon that opens it later reads an all-absent map and fetches again.
    public static func dropClean(directory: String, manifest: ContentHash) -> Int64 {
        let path = directory + "/objects/" + manifest.hex
        let present = CacheOccupancy.presentBytes(directory: directory, manifest: manifest)
        guard present > 0 else { return 0 }
        let fd = open(path, O_RDWR | O_CLOEXEC)
        guard fd >= 0 else { return 0 }
        defer { Glibc.close(fd) }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else { return 0 }
        let mapFD = open(path + ".map", O_RDWR | O_CLOEXEC)
        guard mapFD >= 0 else { return 0 }
        defer { Glibc.close(mapFD) }
        var st = stat()
        guard fstat(mapFD, &st) == 0, Int(st.st_size) > mapHeaderSize else { return 0 }
        let zeros = [UInt8](repeating: 0, count: Int(st.st_size) - mapHeaderSize)
        guard zeros.withUnsafeBytes({ pwrite(mapFD, $0.baseAddress, $0.count, off_t(mapHeaderSize)) }) == zeros.count else { return 0 }
        var data = stat()
        if fstat(fd, &data) == 0, data.st_size > 0 { _ = hearth_punch_hole(fd, 0, Int64(data.st_size)) }
        return present
    }
}

extension CacheOccupancy {
    /// Empties every clean cache file of the volume's committed version that no
    /// daemon has open; returns the bytes dropped. Versions shared with other
    /// volumes (clones, snapshots) go too: they are fetched again on demand.
    public func drop(_ volumeID: String) async throws -> Int64 {
        var dropped: Int64 = 0
        for manifest in try await manifests(of: volumeID) {
            dropped += NodeCache.dropClean(directory: directory, manifest: manifest)
        }
        return dropped
    }
}
