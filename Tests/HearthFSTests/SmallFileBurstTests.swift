import Foundation
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Bursts of small files (untar, builds, the metadata benchmark): each gets a working
/// copy that a commit retires; dropped copies are kept as spares and reused
/// (`SpareWorkingCopies`), given back to the cache after the namespace lock is
/// released (`CacheRelease`), and dirty directories are encoded outside the lock
/// (`TreeSnapshot`). None of that may lose or mix up a byte.
@Suite("Small-file bursts", .serialized)
struct SmallFileBurstTests {
    @Test(arguments: [[], ["--passthrough", "off"]])
    func burstOfSmallFilesInNewNestedDirectoriesSurvivesRemount(extra: [String]) async throws {
        let v = try await MountedVolume()
        defer { v.cleanup() }
        try v.start(extra: extra)
        // New directories at three depths in one commit: each parent's tree needs the
        // hash its new subdirectory gets in that same commit.
        let dirs = ["burst", "burst/a", "burst/a/b"]
        for dir in dirs { try FileManager.default.createDirectory(atPath: v.path(dir), withIntermediateDirectories: false) }
        func content(_ dir: String, _ i: Int) -> [UInt8] { Array("\(dir)/f\(i) round".utf8) + patternBytes(i % 5 * 1000, seed: UInt64(i)) }
        for dir in dirs {
            for i in 0..<150 { try writeFile(v.path("\(dir)/f\(i)"), content(dir, i)) }
        }
        // fsync commits and waits: every closed file's working copy is then retired.
        try writeFile(v.path("burst/synced"), Array("synced".utf8), sync: true)
        let work = v.cacheDir + "/work/" + v.volumeID
        let spares = (try FileManager.default.contentsOfDirectory(atPath: work)).filter { $0.hasPrefix("spare.") }
        // More than the 128 made ahead of demand (the next test): retired copies too.
        #expect(spares.count > 128, "retired working copies are kept for reuse")

        // Remove every other file, then a second burst that reuses the spares.
        for dir in dirs {
            for i in stride(from: 0, to: 150, by: 2) { #expect(unlink(v.path("\(dir)/f\(i)")) == 0) }
            for i in 150..<250 { try writeFile(v.path("\(dir)/f\(i)"), content(dir, i)) }
        }
        // A reused spare must start empty: a short file over a longer old one.
        for dir in dirs {
            for i in 150..<250 { #expect(try readFile(v.path("\(dir)/f\(i)")) == content(dir, i)) }
        }

        try v.stop()
        try v.start(extra: extra)
        for dir in dirs {
            let names = Set(try FileManager.default.contentsOfDirectory(atPath: v.path(dir)))
            for i in 0..<250 {
                let kept = i >= 150 || i % 2 == 1
                #expect(names.contains("f\(i)") == kept, "\(dir)/f\(i)")
                if kept { #expect(try readFile(v.path("\(dir)/f\(i)")) == content(dir, i)) }
            }
        }
        #expect(try readFile(v.path("burst/synced")) == Array("synced".utf8))
        try v.stop()
    }

    /// A burst of new files takes spares made ahead of it in the background: only
    /// the first file, which found none, makes a working copy of its own. The files
    /// stay open while the working copies are counted (a close commits and retires
    /// them). Bytes survive as with any copy. With passthrough (the default) CREATE
    /// makes the working copy; with `--passthrough off` the kernel's writeback cache
    /// holds the bytes until a flush, so nothing would be counted yet.
    @Test func newFilesTakeSparesMadeAheadOfThem() async throws {
        let v = try await MountedVolume()
        defer { v.cleanup() }
        try v.start()
        let work = v.cacheDir + "/work/" + v.volumeID
        func copies() -> [String] {
            ((try? FileManager.default.contentsOfDirectory(atPath: work)) ?? []).filter { !$0.hasPrefix("spare.") }
        }
        func spares() -> Int {
            ((try? FileManager.default.contentsOfDirectory(atPath: work)) ?? []).count - copies().count
        }
        func content(_ i: Int) -> [UInt8] { Array("f\(i)".utf8) + patternBytes(i * 37, seed: UInt64(i)) }
        func create(_ name: String, _ bytes: [UInt8]) throws -> Int32 {
            let fd = open(v.path(name), O_CREAT | O_WRONLY | O_EXCL, 0o644)
            guard fd >= 0 else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
            #expect(bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) } == bytes.count)
            return fd
        }
        var fds = [try create("first", Array("first".utf8))]
        let deadline = Date().addingTimeInterval(10)
        while spares() < 50 && Date() < deadline { usleep(20_000) }
        for i in 0..<50 { fds.append(try create("f\(i)", content(i))) }
        #expect(copies().count == 1, "only the first file made its own working copy: \(copies())")
        for fd in fds { #expect(close(fd) == 0) }
        for i in 0..<50 { #expect(try readFile(v.path("f\(i)")) == content(i)) }

        try v.stop()
        try v.start()
        for i in 0..<50 { #expect(try readFile(v.path("f\(i)")) == content(i)) }
        #expect(try readFile(v.path("first")) == Array("first".utf8))
        try v.stop()
    }

    /// A commit nobody waits for runs in the background (nice 10), so that the FUSE
    /// worker an application wakes is never queued behind it; a commit an fsync
    /// waits for runs at normal priority, and so does a background commit that an
    /// fsync arrives during (`CommitPriority`). Read from the committing thread's
    /// own /proc entry. Needs CAP_SYS_NICE, which these tests have as root; without
    /// it the daemon never lowers the thread.
    @Test func backgroundCommitsYieldAndWaitedForCommitsDoNot() async throws {
        let v = try await MountedVolume()
        defer { v.cleanup() }
        // No interval commits: only the closes and the fsyncs below commit.
        try v.start(extra: ["--commit-interval", "600s"])
        guard let pid = v.pid else { throw HarnessError("no daemon") }
        // The write-back thread names itself once it runs, which on a loaded machine
        // can be a while after the mount answers: it is looked for until then.
        func committerNice() throws -> Int {
            let tasks = "/proc/\(pid)/task"
            let deadline = Date().addingTimeInterval(10)
            var seen: [String] = []
            repeat {
                seen = []
                for tid in try FileManager.default.contentsOfDirectory(atPath: tasks) {
                    let comm = (try? String(contentsOfFile: "\(tasks)/\(tid)/comm", encoding: .utf8)) ?? ""
                    let name = comm.trimmingCharacters(in: .whitespacesAndNewlines)
                    seen.append(name)
                    guard name == "hearth-commit" else { continue }
                    let stat = try String(contentsOfFile: "\(tasks)/\(tid)/stat", encoding: .utf8)
                    // Fields after the parenthesised name start at field 3 (state); nice is field 19.
                    let fields = stat[stat.index(after: stat.lastIndex(of: ")")!)...].split(separator: " ")
                    return Int(fields[16])!
                }
                usleep(5_000)
            } while Date() < deadline
            throw HarnessError("no hearth-commit thread in \(pid) (alive: \(kill(pid, 0) == 0)); its threads: \(seen)")
        }
        func waitForBackground() throws {
            let deadline = Date().addingTimeInterval(10)
            while try committerNice() != 10 && Date() < deadline { usleep(5_000) }
        }
        try writeFile(v.path("background"), Array("background".utf8))
        try waitForBackground()
        #expect(try committerNice() == 10, "the close's commit ran in the background")
        try writeFile(v.path("synced"), Array("synced".utf8), sync: true)
        #expect(try committerNice() == 0, "the fsync's commit ran at normal priority")

        // A background commit long enough to fsync during it: 384 MiB to hash and
        // store. The fsync waits for the commit after it, so it is still waiting
        // when the committer is looked at.
        let big = patternBytes(384 << 20, seed: 7)
        try writeFile(v.path("big"), big)
        try waitForBackground()
        let fsyncDone = Atomic<Bool>(false)
        let syncer = Thread {
            try? writeFile(v.path("synced-during"), Array("during".utf8), sync: true)
            fsyncDone.store(true, ordering: .relaxed)
        }
        syncer.start()
        usleep(100_000)
        let raised = try committerNice()
        let stillWaiting = !fsyncDone.load(ordering: .relaxed)
        #expect(stillWaiting, "the fsync was still waiting (the commit it arrived during had not ended)")
        #expect(raised == 0, "the fsync raised the background commit it arrived during")
        while !fsyncDone.load(ordering: .relaxed) { usleep(10_000) }

        try v.stop()
        try v.start()
        #expect(try readFile(v.path("background")) == Array("background".utf8))
        #expect(try readFile(v.path("synced")) == Array("synced".utf8))
        #expect(try readFile(v.path("synced-during")) == Array("during".utf8))
        #expect(try readFile(v.path("big")) == big)
        try v.stop()
    }

    /// A burst of new files outrunning the commits, in a daemon allowed 256
    /// descriptors (soft and hard): each closed file's working copy holds one until
    /// a commit retires it, so 1,500 files written in a row once failed with EMFILE
    /// past ~1,000 under a 1,024 limit. The writes now wait for that commit instead
    /// (`DescriptorBudget`); every file must be whole, before and after a remount.
    @Test(arguments: [[], ["--passthrough", "off"]])
    func burstBeyondTheDescriptorLimitWaitsForCommitsInsteadOfFailing(extra: [String]) async throws {
        let v = try await MountedVolume()
        defer { v.cleanup() }
        try v.start(extra: extra, launcher: ["prlimit", "--nofile=256:256", "--"])
        func content(_ i: Int) -> [UInt8] { Array("f\(i)".utf8) + patternBytes(i % 7 * 300, seed: UInt64(i)) }
        try FileManager.default.createDirectory(atPath: v.path("many"), withIntermediateDirectories: false)
        for i in 0..<1500 { try writeFile(v.path("many/f\(i)"), content(i)) }
        for i in 0..<1500 { #expect(try readFile(v.path("many/f\(i)")) == content(i), "f\(i)") }

        try v.stop()
        try v.start(extra: extra)
        #expect(try FileManager.default.contentsOfDirectory(atPath: v.path("many")).count == 1500)
        for i in 0..<1500 { #expect(try readFile(v.path("many/f\(i)")) == content(i), "f\(i) after remount") }
        try v.stop()
    }
}
