import Foundation
import HearthMounts
import HearthStore
import HearthTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A `hearth mount` daemon in its own process on a temporary store, mountpoint and
/// cache. A separate process, because the test's own blocking syscalls on the mount
/// must never wait on a daemon that shares their thread pool.
final class MountedVolume: @unchecked Sendable {
    // @unchecked: mutated only by the test that owns it, on one task at a time.
    let root: String
    let store: String
    let mountpoint: String
    var cacheDir: String
    let volumeID: String
    private var process: Process?

    /// The `hearth` binary next to the test bundle (same build products directory).
    static var binary: String {
        let bundle = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        var dir = bundle
        for _ in 0..<3 {
            let candidate = dir.appendingPathComponent("hearth").path
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
            dir = dir.deletingLastPathComponent()
        }
        return bundle.appendingPathComponent("hearth").path
    }

    /// Creates a store with one volume of `capacity` bytes.
    init(capacity: Int64 = 64 << 30, root existing: String? = nil, volumeID: String? = nil) async throws {
        root = existing ?? FileManager.default.temporaryDirectory.appendingPathComponent("hearth-fs-\(UUID().uuidString.prefix(8))").path
        store = root + "/store"
        mountpoint = root + "/mnt"
        cacheDir = root + "/cache"
        try FileManager.default.createDirectory(atPath: mountpoint, withIntermediateDirectories: true)
        if let volumeID {
            self.volumeID = volumeID
        } else {
            let catalog = Catalog(try DirectoryStore(root: URL(fileURLWithPath: store)))
            self.volumeID = try await catalog.createVolume(name: "test", capacityBytes: capacity).id
        }
    }

    /// Starts the daemon and waits until the mount answers. `launcher` runs it (e.g.
    /// `prlimit` with its options and `--`).
    func start(extra: [String] = [], mountpoint mnt: String? = nil, cacheSize: String = "1GiB", launcher: [String] = []) throws {
        try start(arguments: ["mount", "--store", "file://" + store, volumeID, mnt ?? mountpoint, "--cache-dir", cacheDir,
                              "--cache-size", cacheSize, "--commit-interval", "1s", "--stats-file", statsFile] + extra,
                  mountpoint: mnt, launcher: launcher)
    }

    var statsFile: String { root + "/stats-\(mountpoint.hashValue & 0xffff).json" }

    /// The daemon's counters now (SIGUSR1 makes it write `--stats-file`).
    func stats() throws -> DaemonStats {
        guard let pid else { throw HarnessError("no daemon") }
        unlink(statsFile)
        kill(pid, SIGUSR1)
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline {
            if let data = FileManager.default.contents(atPath: statsFile) {
                return try JSONDecoder().decode(DaemonStats.self, from: data)
            }
            usleep(10_000)
        }
        throw HarnessError("daemon wrote no stats to \(statsFile)")
    }

    /// The counters once every backing file registered was closed again, or after 5 s.
    /// close(2) does not wait for RELEASE (the kernel sends it in the background),
    /// so right after the last close the daemon may not have seen it yet.
    func statsAfterReleases() throws -> DaemonStats {
        let deadline = Date().addingTimeInterval(5)
        var s = try stats()
        while s.backing.registered != s.backing.closed && Date() < deadline {
            usleep(20_000)
            s = try stats()
        }
        return s
    }

    /// Starts the daemon with exactly `arguments` (the last is the mountpoint).
    func start(arguments: [String], mountpoint mnt: String? = nil, launcher: [String] = []) throws {
        let target = mnt ?? mountpoint
        let p = Process()
        let command = launcher + [Self.binary] + arguments
        p.executableURL = URL(fileURLWithPath: launcher.isEmpty ? Self.binary : "/usr/bin/env")
        p.arguments = launcher.isEmpty ? arguments : command
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        process = p
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            if Self.isLiveMount(target) { return }
            guard p.isRunning else { throw HarnessError("hearth mount exited with \(p.terminationStatus)") }
            usleep(20_000)
        }
        throw HarnessError("mount did not appear at \(target)")
    }

    /// SIGTERM and wait: the daemon unmounts and commits before exiting.
    func stop() throws {
        guard let p = process else { return }
        process = nil
        p.terminate()
        try Self.awaitCleanExit(p, by: Date().addingTimeInterval(30), else: "daemon did not exit on SIGTERM")
    }

    /// Waits for `p` to exit with status 0; past `deadline` kills it and throws `stuck`.
    private static func awaitCleanExit(_ p: Process, by deadline: Date, else stuck: String) throws {
        guard waitForExit(p, by: deadline) else { throw HarnessError(stuck) }
        guard p.terminationStatus == 0 else { throw HarnessError("daemon exited with \(p.terminationStatus)") }
    }

    /// Unmounts as a user would (umount(2), no signal) and waits for the daemon to
    /// commit and exit: the session ends when the kernel drops the connection.
    /// `resumeAfter`: the daemon was stopped (SIGSTOP) and is continued once the
    /// mount is gone, so it never reads the requests the kernel had queued.
    func unmount(resumeAfter: Bool = false) throws {
        guard let p = process else { return }
        process = nil
        let deadline = Date().addingTimeInterval(30)
        while umount2(mountpoint, 0) != 0 {
            guard errno == EBUSY, Date() < deadline else { throw HarnessError("umount \(mountpoint): \(String(cString: strerror(errno)))") }
            usleep(20_000)
        }
        if resumeAfter { kill(p.processIdentifier, SIGCONT) }
        try Self.awaitCleanExit(p, by: deadline, else: "daemon did not exit after its mount went away")
    }

    /// Kills the daemon without letting it unmount (a crash).
    func crash() {
        guard let p = process else { return }
        process = nil
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
    }

    /// Kills the daemon as ``crash()`` does and tells whether its mount was left
    /// dead (ENOTCONN), as a crashed daemon's is.
    func crashLeavesDeadMount() -> Bool {
        crash()
        var fs = statvfs()
        return statvfs(mountpoint, &fs) != 0 && errno == ENOTCONN
    }

    var pid: Int32? { process?.processIdentifier }

    func cleanup() {
        crash()
        _ = umount2(mountpoint, Int32(MNT_DETACH))
        try? FileManager.default.removeItem(atPath: root)
    }

    func path(_ name: String) -> String { mountpoint + "/" + name }

    /// Whether a live daemon serves `path`, asked of `path` in one statvfs(2), which
    /// always reaches the daemon (stat of the root can be answered from the kernel's
    /// attribute cache): a crashed daemon's stale mount answers ENOTCONN, and the bare
    /// directory beneath it answers with its parent's filesystem id (a FUSE mount's is
    /// 0). Asked in two steps (a FUSE line in mountinfo, then statvfs), the new daemon
    /// could detach the stale mount in between, and statvfs then answered from the
    /// bare directory before the new mount was made: the test's next open found no
    /// such file.
    static func isLiveMount(_ path: String) -> Bool {
        var parent = statvfs(), target = statvfs()
        guard statvfs((path as NSString).deletingLastPathComponent, &parent) == 0 else { return false }
        return statvfs(path, &target) == 0 && target.f_fsid != parent.f_fsid
    }
}

/// What `hearth mount --stats-file` writes (the fields tests look at).
struct DaemonStats: Decodable {
    struct Backing: Decodable {
        var registered: UInt64
        var closed: UInt64
        var failures: UInt64
    }
    struct Opens: Decodable {
        var passthroughOpens: UInt64
        var directOpens: UInt64
        var cachedOpens: UInt64
    }
    var ops: [String: UInt64]
    var passthroughNegotiated: Bool
    var passthroughEnabled: Bool
    var ioUringNegotiated: Bool
    var ioUringRequests: UInt64
    var backing: Backing
    var opens: Opens
    var workers: Int

    func count(_ op: String) -> UInt64 { ops[op] ?? 0 }
}

struct HarnessError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Runs a command, returning its exit status and combined output.
@discardableResult
func sh(_ command: String, timeout: TimeInterval = 120) throws -> (status: Int32, output: String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/bin/sh")
    p.arguments = ["-c", command]
    let pipe = Pipe()
    p.standardOutput = pipe
    p.standardError = pipe
    try p.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: data, as: UTF8.self))
}

func commandExists(_ name: String) -> Bool {
    (try? sh("command -v \(name) >/dev/null 2>&1").status) == 0
}

/// Deterministic pseudo-random bytes.
func patternBytes(_ count: Int, seed: UInt64) -> [UInt8] {
    var state = seed &* 0x9E37_79B9_7F4A_7C15 | 1
    var out = [UInt8](repeating: 0, count: count)
    for i in 0..<count {
        state ^= state << 13
        state ^= state >> 7
        state ^= state << 17
        out[i] = UInt8(truncatingIfNeeded: state)
    }
    return out
}

func writeFile(_ path: String, _ bytes: [UInt8], flags: Int32 = O_WRONLY | O_CREAT | O_TRUNC, sync: Bool = false) throws {
    let fd = open(path, flags, 0o644)
    guard fd >= 0 else { throw HarnessError("open \(path): \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    guard n == bytes.count else { throw HarnessError("write \(path): \(String(cString: strerror(errno)))") }
    if sync { guard fsync(fd) == 0 else { throw HarnessError("fsync \(path): \(String(cString: strerror(errno)))") } }
}

/// The whole file, or an error that says which call failed and why (errno), so a
/// failure under a loaded CI machine can be told apart: a missing name, a dead
/// mount, an I/O error.
func readFile(_ path: String) throws -> [UInt8] {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw HarnessError("open \(path): \(String(cString: strerror(errno))) (errno \(errno))") }
    defer { close(fd) }
    var out: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 1 << 20)
    while true {
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n == 0 { return out }
        guard n > 0 else {
            if errno == EINTR { continue }
            throw HarnessError("read \(path) at \(out.count): \(String(cString: strerror(errno))) (errno \(errno))")
        }
        out += buffer[0..<n]
    }
}
