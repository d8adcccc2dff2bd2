import ArgumentParser
import Foundation
import HearthFS
import HearthFUSE

/// `hearth mount --passthrough`: whether opens of local files are handed to the kernel.
enum PassthroughSetting: String, ExpressibleByArgument, CaseIterable {
    case auto, on, off

    /// Whether to ask INIT for passthrough. `auto` asks only when the daemon may
    /// register backing files (CAP_SYS_ADMIN): asking costs the writeback cache,
    /// which the kernel does not combine with passthrough. A read-only mount asks too.
    func resolve(readOnly: Bool) throws -> Bool {
        switch self {
        case .off: return false
        case .auto: return BackingFiles.processHasSysAdmin
        case .on:
            guard BackingFiles.processHasSysAdmin else {
                throw ValidationError("--passthrough on needs CAP_SYS_ADMIN (FUSE_DEV_IOC_BACKING_OPEN is privileged)")
            }
            return true
        }
    }
}

/// The daemon's counters as one JSON document, written on SIGUSR1 when
/// `--stats-file` is given: how tests see that a read never reached the daemon.
struct MountStats: Codable {
    var ops: [String: UInt64]
    /// Time spent serving each op (seconds, summed over its requests).
    var opSeconds: [String: Double]?
    var passthroughNegotiated: Bool
    var passthroughEnabled: Bool
    var ioUringNegotiated: Bool
    /// Requests the daemon was sent over io_uring rather than read from /dev/fuse.
    var ioUringRequests: UInt64
    var backing: BackingFiles.Counters
    var opens: PassthroughStats
    /// FUSE worker threads (/dev/fuse readers and io_uring queue threads).
    var workers: Int

    static func write(session: FuseSession, fs: VolumeFileSystem, to path: String) {
        let snapshot = session.metrics.snapshot()
        let stats = MountStats(ops: snapshot.mapValues(\.count), opSeconds: snapshot.mapValues(\.totalSeconds),
                               passthroughNegotiated: session.parameters?.has(FuseInitFlag.passthrough) ?? false,
                               passthroughEnabled: fs.passthroughEnabled,
                               ioUringNegotiated: session.parameters?.has(FuseInitFlag.overIOUring) ?? false,
                               ioUringRequests: session.requestsOverRing, backing: session.backing.snapshot,
                               opens: fs.passthroughCounters, workers: session.workerCount)
        guard let data = try? JSONEncoder().encode(stats) else { return }
        // Whole or not at all: readers poll for the file.
        let tmp = path + ".tmp"
        guard FileManager.default.createFile(atPath: tmp, contents: data) else { return }
        _ = rename(tmp, path)
    }
}
