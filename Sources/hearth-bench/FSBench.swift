import ArgumentParser
import Foundation
import HearthMounts
import HearthStore

#if canImport(Glibc)
import Glibc
#endif

/// The FUSE daemon's numbers: runs e2e/bench/fs.sh (fio and metadata vs native and
/// bindfs), then measures the daemon's resident memory serving a volume of
/// `--files` files after a full `find` and a stat of every file.
struct FSBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fs", abstract: "Hearth FUSE vs native vs bindfs (fio, metadata), and daemon RSS with 1M files.")

    @Option(help: "The hearth binary.")
    var hearth = ".build/release/hearth"

    @Option(help: "Path of e2e/bench/fs.sh.")
    var script = "e2e/bench/fs.sh"

    @Option(help: "Scratch directory (on the disk to measure).")
    var work = "/tmp/hearth-fsbench"

    @Option(help: "Files in the memory run.")
    var files = 1_000_000

    @Flag(help: "Skip the fio/metadata table (memory run only).")
    var memoryOnly = false

    @Option(help: "Only create a volume named NAME in --store-dir and print its id (used by fs.sh).")
    var createVolume: String?

    @Option(help: "Directory store for --create-volume.")
    var storeDir: String?

    @Option(help: "Capacity for --create-volume, in bytes.")
    var capacity: Int64 = 100 << 30

    func run() async throws {
        if let name = createVolume {
            guard let storeDir else { throw ValidationError("--create-volume needs --store-dir") }
            try FileManager.default.createDirectory(atPath: storeDir, withIntermediateDirectories: true)
            let catalog = Catalog(try DirectoryStore(root: URL(fileURLWithPath: storeDir)))
            print(try await catalog.createVolume(name: name, capacityBytes: capacity).id)
            return
        }
        if !memoryOnly {
            let status = try runProcess(["/bin/bash", script, hearth, work])
            guard status == 0 else { throw ValidationError("fs.sh failed with \(status)") }
        }
        try await memoryRun()
    }

    /// Builds a volume of `files` empty files (1,000 per directory) directly in the
    /// store, mounts it, walks it, and reports the daemon's RSS.
    func memoryRun() async throws {
        let root = work + "-mem"
        try? FileManager.default.removeItem(atPath: root)
        for dir in ["store", "mnt", "cache"] {
            try FileManager.default.createDirectory(atPath: "\(root)/\(dir)", withIntermediateDirectories: true)
        }
        let store = try DirectoryStore(root: URL(fileURLWithPath: root + "/store"))
        let catalog = Catalog(store)
        let volume = try await catalog.createVolume(name: "million", capacityBytes: 1 << 40)
        let empty = try await catalog.content.putManifest(.empty())
        let perDir = 1000
        var top = TreeBuilder()
        let started = Date()
        for d in 0..<(files + perDir - 1) / perDir {
            var entries: [TreeEntry] = []
            for f in 0..<min(perDir, files - d * perDir) {
                entries.append(TreeEntry(name: "file-\(f)", kind: .file, mode: 0o644, inode: UInt64(2 + d * perDir + f), child: empty))
            }
            let tree = try await catalog.content.putTree(try Tree(entries: entries))
            try top.addDirectory(TreeEntry(name: "dir-\(d)", kind: .directory, mode: 0o755, inode: UInt64(1 << 40) + UInt64(d)), tree: tree)
        }
        let rootHash = try await top.write(to: catalog.content)
        let head = try await catalog.heads.read(volume.id)
        _ = try await catalog.heads.commit(volume.id, root: rootHash, logicalBytes: 0, expected: head)
        print(String(format: "memory run: %d files written to the store in %.1f s", files, Date().timeIntervalSince(started)))

        let daemon = Process()
        daemon.executableURL = URL(fileURLWithPath: hearth)
        daemon.arguments = ["mount", "--store", "file://\(root)/store", volume.id, "\(root)/mnt", "--cache-dir", "\(root)/cache"]
        daemon.standardOutput = FileHandle.nullDevice
        try daemon.run()
        defer {
            daemon.terminate()
            daemon.waitUntilExit()
        }
        for _ in 0..<200 where !isMounted("\(root)/mnt") { usleep(50_000) }
        let idle = rss(daemon.processIdentifier)
        let t0 = Date()
        _ = try runProcess(["/bin/sh", "-c", "find \(root)/mnt | wc -l"])
        let findSeconds = Date().timeIntervalSince(t0)
        let afterFind = rss(daemon.processIdentifier)
        let t1 = Date()
        _ = try runProcess(["/bin/sh", "-c", "find \(root)/mnt -type f -size +1 | wc -l"])
        let statSeconds = Date().timeIntervalSince(t1)
        let afterStat = rss(daemon.processIdentifier)
        print(String(format: "daemon RSS with %d files: %.0f MiB mounted, %.0f MiB after find (%.1f s), %.0f MiB after stat of all (%.1f s), peak %.0f MiB",
                     files, idle.current, afterFind.current, findSeconds, afterStat.current, statSeconds, afterStat.peak))
        try? FileManager.default.removeItem(atPath: root + "/store")
    }

    func rss(_ pid: Int32) -> (current: Double, peak: Double) {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return (0, 0) }
        func field(_ name: String) -> Double {
            for line in status.split(separator: "\n") where line.hasPrefix(name) {
                return Double(line.split(separator: " ").dropFirst().first { !$0.isEmpty } ?? "0").map { $0 / 1024 } ?? 0
            }
            return 0
        }
        return (field("VmRSS:"), field("VmHWM:"))
    }

    func isMounted(_ path: String) -> Bool {
        ProcFile.read("/proc/self/mountinfo")?.contains(" \(path) ") ?? false
    }

    func runProcess(_ argv: [String]) throws -> Int32 {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: argv[0])
        p.arguments = Array(argv.dropFirst())
        try p.run()
        p.waitUntilExit()
        return p.terminationStatus
    }
}
