import CSIProto
import Foundation
import HearthMounts
import HearthRPC
import HearthTestSupport
import XCTest

/// Issue 8, item 3: a new `hearth node` started beside the running one (a
/// DaemonSet rolling update with maxSurge) takes every staged volume over (the
/// daemons' state and /dev/fuse fds), the old one exits, and applications using
/// the volume see a pause but not one failed syscall.
final class NodeUpgradeTests: XCTestCase {
    func testNodePluginReplacedDuringIOWithoutAnError() async throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/fio") else {
            return XCTFail("fio is needed (Debian's fio package; .ci/setup installs it)")
        }
        try await LocalCluster.run { try await scenario($0) }
    }

    func scenario(_ c: LocalCluster) async throws {
        let id = try await c.createVolume("pvc-upgrade", bytes: 1 << 30).volumeID
        let staging = c.kubelet + "/staging/\(id)"
        let target = c.kubelet + "/pods/upgrade/volume"
        try await c.stage(id, staging, mountCapability(), [:])
        try await c.nodePublish(id, staging, target, mountCapability(), readOnly: false)

        let synced = Data((0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 7919 >> 3) })
        try writeDurably(synced, to: target + "/synced")
        let unsynced = Data("written, never fsync'd\n".utf8)
        FileManager.default.createFile(atPath: target + "/unsynced", contents: unsynced)
        let daemonBefore = try XCTUnwrap(Self.daemonPID(id), "no daemon for \(id)")

        try FileManager.default.createDirectory(atPath: target + "/fio", withIntermediateDirectories: true)
        // Time-based: with passthrough a fixed amount of I/O can finish before the upgrade.
        let fio = try BackgroundCommand(Fio.mixedWithVerify(directory: target + "/fio", size: "40m", runtime: .seconds(10)),
                                        output: c.directory + "/fio.out")
        try await Task.sleep(for: .seconds(1))
        XCTAssertTrue(fio.process.isRunning, "fio finished before the upgrade: make it longer")

        let probe = StatfsProbe(target)
        let (old, new) = try await c.replaceNode()
        let pause = probe.stop()
        print(String(format: "node plugin upgrade under fio: longest statfs %.1f ms", pause * 1000))
        XCTAssertEqual(old.terminationStatus, 0, "the old node plugin failed:\n\(c.logs())")
        XCTAssertTrue(fio.process.isRunning, "fio finished before the old node plugin exited: make it longer")

        let (status, output) = try await fio.finish()
        XCTAssertEqual(status, 0, "fio failed across the upgrade:\n\(output)\n\(c.logs())")
        XCTAssertEqual(Fio.errors(output), "0", "fio reported errors:\n\(output)")
        XCTAssertFalse(output.contains("verify"), "fio verification failed:\n\(output)")

        // The volume is now served by a daemon of the new node plugin.
        let daemonAfter = try XCTUnwrap(Self.daemonPID(id), "no daemon for \(id) after the upgrade:\n\(c.logs())")
        XCTAssertNotEqual(daemonAfter, daemonBefore)
        XCTAssertEqual(Self.parentPID(daemonAfter), new.processIdentifier)
        XCTAssertEqual(FileManager.default.contents(atPath: target + "/synced"), synced)
        XCTAssertEqual(FileManager.default.contents(atPath: target + "/unsynced"), unsynced)

        // The new node plugin hands the volume on in turn (a second upgrade).
        let (_, third) = try await c.replaceNode()
        let daemonThird = try XCTUnwrap(Self.daemonPID(id), "no daemon after the second upgrade:\n\(c.logs())")
        XCTAssertEqual(Self.parentPID(daemonThird), third.processIdentifier)
        XCTAssertEqual(FileManager.default.contents(atPath: target + "/synced"), synced)

        // And the last node plugin owns it: unpublish and unstage commit and unmount,
        // and what was written before the upgrade comes back from the store.
        var unpublish = Csi_V1_NodeUnpublishVolumeRequest()
        unpublish.volumeID = id
        unpublish.targetPath = target
        _ = try await c.nodeCall("NodeUnpublishVolume", unpublish, as: Csi_V1_NodeUnpublishVolumeResponse.self)
        try await c.unstage(id, staging)
        XCTAssertNil(Self.daemonPID(id), "the daemon outlived NodeUnstage")
        XCTAssertFalse(Self.isMountPoint(staging))
        try await c.stage(id, staging, mountCapability(), [:])
        XCTAssertEqual(FileManager.default.contents(atPath: staging + "/synced"), synced)
        XCTAssertEqual(FileManager.default.contents(atPath: staging + "/unsynced"), unsynced)
        let files = try FileManager.default.contentsOfDirectory(atPath: staging + "/fio")
        XCTAssertEqual(files.count, 4, "fio's files: \(files)")
        try await c.unstage(id, staging)
    }

    /// A successor that asks for the volumes and goes away before adopting them
    /// (crashed, killed by a failed rollout) changes nothing: the running plugin
    /// carries on, its keeper still holds the fd (a killed daemon is taken over),
    /// and it stages and unstages again.
    func testASuccessorThatDiesBeforeAdoptingChangesNothing() async throws {
        try await LocalCluster.run { c in
            let id = try await c.createVolume("pvc-kept", bytes: 1 << 30).volumeID
            let staging = c.kubelet + "/staging/\(id)"
            try await c.stage(id, staging, mountCapability(), [:])
            let data = Data("before the failed handover\n".utf8)
            try writeDurably(data, to: staging + "/file")
            let daemon = try XCTUnwrap(Self.daemonPID(id))

            let sock = try FDHandoff.connect(c.directory + "/data/run/node.handover")
            try FDFrames.send(sock, kind: UInt8(ascii: "H"))
            var volumes = 0
            while true {
                let frame = try FDFrames.receive(sock)
                if let fd = frame.fd { close(fd) }
                if frame.kind == UInt8(ascii: "E") { break }
                XCTAssertEqual(frame.kind, UInt8(ascii: "V"))
                volumes += 1
            }
            XCTAssertEqual(volumes, 1)
            close(sock)  // gone without "A"

            XCTAssertEqual(Self.daemonPID(id), daemon, "the daemon was stopped although nobody adopted it")
            XCTAssertEqual(kill(daemon, SIGKILL), 0)
            XCTAssertEqual(FileManager.default.contents(atPath: staging + "/file"), data, "the keeper lost the connection")
            let other = try await c.createVolume("pvc-after", bytes: 1 << 30).volumeID
            try await c.stage(other, c.kubelet + "/staging/\(other)", mountCapability(), [:])
            try await c.unstage(other, c.kubelet + "/staging/\(other)")
            try await c.unstage(id, staging)
        }
    }

    /// The `hearth mount` process serving `volumeID`, if one runs.
    static func daemonPID(_ volumeID: String) -> Int32? {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        for entry in entries {
            guard let pid = Int32(entry), let cmdline = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { continue }
            let arguments = cmdline.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
            if arguments.count > 2, arguments[1] == "mount", arguments.contains(volumeID), parentPID(pid) != nil {
                return pid
            }
        }
        return nil
    }

    /// A live process's parent (nil for a zombie or a process gone).
    static func parentPID(_ pid: Int32) -> Int32? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let fields = stat.split(separator: ")").last?.split(separator: " "), fields.count > 2, fields[0] != "Z" else { return nil }
        return Int32(fields[1])
    }

    static func isMountPoint(_ path: String) -> Bool {
        let table = ProcFile.read("/proc/self/mountinfo") ?? ""
        return table.split(separator: "\n").contains { $0.split(separator: " ").dropFirst(4).first.map(String.init) == path }
    }
}
