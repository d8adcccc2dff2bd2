import Foundation
import HearthCSI
import Logging
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A daemon that died unsupervised (a node plugin restarted without a hand-over)
/// leaves a dead mount at its staging path. The next NodeStage starts a daemon
/// through ``DaemonSupervisor``, whose return is the signal that the path serves the
/// volume: it must mean the new daemon's mount, never the dead one.
@Suite(.serialized)
struct SupervisorDeadMountTests {
    @Test func startReturnsOnlyOnceTheNewDaemonServesThePath() async throws {
        let v = try await MountedVolume()
        defer { v.cleanup() }
        try v.start()
        let bytes = patternBytes(64 << 10, seed: 21)
        try writeFile(v.path("before"), bytes, sync: true)
        #expect(v.crashLeavesDeadMount())

        var logger = Logger(label: "test.supervisor")
        logger.logLevel = .error
        let supervisor = DaemonSupervisor(
            launch: DaemonLaunch(
                executable: MountedVolume.binary,
                arguments: ["--store", "file://" + v.store, "--cache-dir", v.cacheDir, "--cache-size", "1GiB"],
                logDirectory: v.root + "/logs"),
            logger: logger)
        try await supervisor.start(volumeID: v.volumeID, mountpoint: v.mountpoint, readOnly: false)
        // At once, as NodePublish would bind it: the new daemon's mount, live.
        #expect(MountedVolume.isLiveMount(v.mountpoint))
        #expect(try readFile(v.path("before")) == bytes)
        try await supervisor.stop(v.volumeID)
    }
}
