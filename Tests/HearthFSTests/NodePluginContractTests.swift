import Foundation
import HearthMounts
import HearthStore
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// What the CSI node plugin relies on from `hearth mount`, and regressions found on
/// real mounts.
@Suite("Node plugin contract and write-back regressions", .serialized)
struct NodePluginContractTests {
    /// Options in the order NodeService/DaemonSupervisor pass them; the mount shows
    /// `hearth:<volume id>` as its source and `fuse.hearth` as its type.
    @Test func optionsInNodePluginOrderAndMountIdentity() async throws {
        let v = try await MountedVolume()
        defer { v.cleanup() }
        try v.start(arguments: ["mount", "--store", "file://" + v.store, "--s3-region", "us-east-1",
                                "--cache-dir", v.cacheDir, "--cache-size", "1GiB", "--allow-other",
                                "--commit-interval", "5s", v.volumeID, v.mountpoint])
        let info = try #require(ProcFile.read("/proc/self/mountinfo"))
        let line = info.split(separator: "\n").first { $0.split(separator: " ")[4] == v.mountpoint }
        let tail = line.flatMap { $0.components(separatedBy: " - ").last?.split(separator: " ") }
        #expect(tail?.first == "fuse.hearth", "\(String(describing: line))")
        #expect(tail.map { $0.count > 1 ? String($0[1]) : "" } == "hearth:\(v.volumeID)")
        try v.stop()
    }

    /// The mount table is read whole: /proc/self/mountinfo past its first page (a
    /// node with a few pods) still shows the newest mounts, which are ours.
    /// Foundation's String(contentsOfFile:) read one page of it, so every mount made
    /// on a busy node looked absent and NodeStage timed out.
    @Test func mountTableSeesMountsPastTheFirstPage() throws {
        let root = FileManager.default.temporaryDirectory.path + "/hearth-mounttable-\(UUID().uuidString.prefix(8))"
        var mounted: [String] = []
        defer {
            for path in mounted.reversed() { umount2(path, Int32(MNT_DETACH)) }
            try? FileManager.default.removeItem(atPath: root)
        }
        // Long names make ~200-byte lines: 40 of them are two pages on their own.
        for i in 0..<40 {
            let path = root + "/" + String(repeating: "d", count: 120) + "-\(i)"
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
            #expect(mount("tmpfs", path, "tmpfs", 0, "size=64k") == 0, "mount tmpfs: errno \(errno)")
            mounted.append(path)
        }
        #expect((ProcFile.read("/proc/self/mountinfo")?.utf8.count ?? 0) > 8192)
        for path in mounted {
            #expect(MountTable.mount(at: path)?.fsType == "tmpfs", "\(path) missing from the mount table")
        }
    }

    /// NodeUnstage's SIGTERM commits what was written at once, even when the detached
    /// mount stays referenced (here a file still open; in a cluster, a copy of the
    /// mount in another mount namespace) so that the session cannot end: the node
    /// plugin kills such a daemon past its stop timeout, and nothing may be lost.
    @Test func sigtermCommitsAtOnceWhileTheMountStaysReferenced() async throws {
        let v = try await MountedVolume()
        defer { v.cleanup() }
        try v.start(arguments: ["mount", "--store", "file://" + v.store, "--cache-dir", v.cacheDir,
                                "--commit-interval", "1h", v.volumeID, v.mountpoint])
        let bytes = patternBytes(3 << 20 + 5, seed: 3)
        let fd = open(v.path("open-file"), O_WRONLY | O_CREAT, 0o644)
        #expect(fd >= 0)
        #expect(bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) } == bytes.count)
        #expect(kill(try #require(v.pid), SIGTERM) == 0)

        // A second, read-only daemon on the same store sees the bytes while the first
        // still runs (its session cannot end: the file is open).
        let readerMount = v.root + "/reader"
        try FileManager.default.createDirectory(atPath: readerMount, withIntermediateDirectories: true)
        let reader = try await MountedVolume(root: v.root, volumeID: v.volumeID)
        reader.cacheDir = v.root + "/cache2"
        var seen: [UInt8]?
        for _ in 0..<40 where seen != bytes {
            try await Task.sleep(for: .milliseconds(250))
            try reader.start(extra: ["--read-only"], mountpoint: readerMount)
            seen = try? readFile(readerMount + "/open-file")
            try reader.stop()
        }
        let committed = seen == bytes  // (not the arrays themselves: 3 MiB in a failure message)
        #expect(committed, "the SIGTERM'd daemon did not commit what was written (read \(seen?.count ?? -1) bytes)")
        #expect(v.pid.map { kill($0, 0) == 0 } == true, "the daemon exited although its mount was still referenced")
        close(fd)
        try v.stop()
    }

    /// NodeExpandVolume: the store record grows, SIGHUP, statfs reports the new
    /// capacity at once and the quota follows.
    @Test func sighupAppliesTheNewCapacity() async throws {
        let v = try await MountedVolume(capacity: 8 << 20)
        defer { v.cleanup() }
        try v.start()
        var fs = statvfs()
        #expect(statvfs(v.mountpoint, &fs) == 0 && UInt64(fs.f_blocks) * UInt64(fs.f_frsize) == 8 << 20)
        #expect(try sh("dd if=/dev/zero of=\(v.path("a")) bs=1M count=12 conv=fsync 2>&1").status != 0)
        let catalog = Catalog(try DirectoryStore(root: URL(fileURLWithPath: v.store)))
        _ = try await catalog.setCapacity(v.volumeID, capacityBytes: 64 << 20)
        guard let pid = v.pid else { throw HarnessError("no daemon") }
        kill(pid, SIGHUP)
        let deadline = Date().addingTimeInterval(10)
        var capacity: UInt64 = 0
        while Date() < deadline {
            if statvfs(v.mountpoint, &fs) == 0 { capacity = UInt64(fs.f_blocks) * UInt64(fs.f_frsize) }
            if capacity == 64 << 20 { break }
            usleep(20_000)
        }
        #expect(capacity == 64 << 20)
        #expect(try sh("dd if=/dev/zero of=\(v.path("a")) bs=1M count=12 conv=fsync 2>&1").status == 0)
        try v.stop()
    }

    /// A file truncated, read and extended while the commit of its first version
    /// was in flight: the store (read through a fresh cache) has the last state.
    @Test func changesDuringACommitReachTheStore() async throws {
        let v = try await MountedVolume()
        defer { v.cleanup() }
        try v.start()
        let bytes = patternBytes(3 << 20, seed: 11)
        for round in 0..<3 {
            let name = v.path("t\(round)")
            try writeFile(name, bytes)
            let shrunk = truncate(name, 1_000_000)
            #expect(shrunk == 0, "truncate: \(String(cString: strerror(errno)))")
            #expect(try readFile(name) == Array(bytes[0..<1_000_000]))
            #expect(truncate(name, 2_500_000) == 0)
            #expect(try readFile(name) == Array(bytes[0..<1_000_000]) + [UInt8](repeating: 0, count: 1_500_000))
        }
        try v.stop()
        v.cacheDir = v.root + "/fresh-cache"
        try v.start()
        for round in 0..<3 {
            #expect(try readFile(v.path("t\(round)")) == Array(bytes[0..<1_000_000]) + [UInt8](repeating: 0, count: 1_500_000))
        }
        try v.stop()
    }
}
