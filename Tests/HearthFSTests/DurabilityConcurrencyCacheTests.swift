import Foundation
import HearthStore
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite("Durability, concurrency and the node cache", .serialized)
struct DurabilityConcurrencyCacheTests {
    @Test func fsyncedBytesSurviveRemountAndAReadOnlySecondDaemonSeesThem() async throws {
        let v = try await MountedVolume()
        defer { v.cleanup() }
        try v.start()
        let bytes = patternBytes(5 << 20 + 123, seed: 7)
        try FileManager.default.createDirectory(atPath: v.path("dir/sub"), withIntermediateDirectories: true)
        try writeFile(v.path("dir/sub/data"), bytes, sync: true)
        // A second daemon, read-only, on the same store with its own cache and mountpoint.
        let readerMount = v.root + "/reader"
        try FileManager.default.createDirectory(atPath: readerMount, withIntermediateDirectories: true)
        let reader = try await MountedVolume(root: v.root, volumeID: v.volumeID)
        reader.cacheDir = v.root + "/cache2"
        try reader.start(extra: ["--read-only"], mountpoint: readerMount)
        #expect(try readFile(readerMount + "/dir/sub/data") == bytes)
        #expect(try sh("touch \(readerMount)/nope").status != 0)
        try reader.stop()
        try v.stop()
        try v.start()
        #expect(try readFile(v.path("dir/sub/data")) == bytes)
        try v.stop()
    }

    @Test func crashedDaemonLeavesFsyncedDataAndItsStaleMountIsCleared() async throws {
        let v = try await MountedVolume()
        defer { v.cleanup() }
        try v.start()
        let bytes = patternBytes(1 << 20, seed: 8)
        try writeFile(v.path("kept"), bytes, sync: true)
        #expect(v.crashLeavesDeadMount())
        try v.start()
        #expect(try readFile(v.path("kept")) == bytes)
        try v.stop()
    }

    @Test(.timeLimit(.minutes(2)))
    func manyProcessesCreateWriteReadDeleteInOneDirectory() async throws {
        let v = try await MountedVolume()
        defer { v.cleanup() }
        try v.start()
        try FileManager.default.createDirectory(atPath: v.path("shared"), withIntermediateDirectories: false)
        // 16 processes, each 150 rounds of create/write/read/rename/delete in one
        // directory (the Arvados stress pattern), under a hard timeout.
        // Each worker reports its own failure: dash's `$(jobs -p)` is empty (a
        // subshell has no jobs) and its `wait` sleeps forever under the test
        // runner, so the workers are not waited for by the shell but by reading
        // their shared output to its end.
        let script = """
        worker() {
          i=0
          while [ $i -lt 150 ]; do
            f=\(v.path("shared"))/w$1-$i
            head -c $(( (i % 7) * 9000 + 1 )) /dev/urandom > $f.tmp || { echo "FAILED: worker $1 round $i create"; exit 1; }
            mv $f.tmp $f || { echo "FAILED: worker $1 round $i rename"; exit 1; }
            cat $f > /dev/null || { echo "FAILED: worker $1 round $i read"; exit 1; }
            ls \(v.path("shared")) > /dev/null || { echo "FAILED: worker $1 round $i list"; exit 1; }
            if [ $((i % 3)) -eq 0 ]; then rm $f || { echo "FAILED: worker $1 round $i delete"; exit 1; }; fi
            i=$((i+1))
          done
          echo "done: worker $1"
        }
        for p in $(seq 1 16); do worker $p & done
        """
        let result = try sh("timeout 100 sh -c '\(script.replacingOccurrences(of: "'", with: "'\\''"))'")
        #expect(result.status == 0, "\(result.output)")
        #expect(!result.output.contains("FAILED"), "\(result.output)")
        #expect(result.output.components(separatedBy: "done: worker").count - 1 == 16, "\(result.output)")
        let names = try FileManager.default.contentsOfDirectory(atPath: v.path("shared"))
        #expect(names.count == 16 * 100)
        try v.stop()
        try v.start()
        #expect(try FileManager.default.contentsOfDirectory(atPath: v.path("shared")).count == 16 * 100)
        try v.stop()
    }

    // A hang guard, not a speed check: ~70 s alone in debug, and the whole suite
    // runs beside it on 2 cores.
    @Test(.timeLimit(.minutes(5)))
    func fioVerifiedMixedIOAndStressNG() async throws {
        // Real tools are part of the suite (.ci/setup installs them): missing is a failure, not a skip.
        try #require(commandExists("fio"), "fio is not installed (apt-get install fio)")
        try #require(commandExists("stress-ng"), "stress-ng is not installed (apt-get install stress-ng)")
        let v = try await MountedVolume()
        defer { v.cleanup() }
        try v.start()
        let fio = try sh("""
            fio --name=verify --directory=\(v.mountpoint) --rw=randrw --bs=4k --size=16m --numjobs=4 \
            --ioengine=psync --verify=crc32c --verify_fatal=1 --verify_state_save=0 --fsync=64 --invalidate=0 --group_reporting 2>&1
            """)
        #expect(fio.status == 0, "\(fio.output.suffix(2000))")
        try FileManager.default.createDirectory(atPath: v.path("stress"), withIntermediateDirectories: false)
        let stress = try sh("cd \(v.path("stress")) && stress-ng --temp-path . --dir 2 --dir-ops 2000 --rename 2 --rename-ops 2000 --hdd 2 --hdd-ops 200 --link 1 --link-ops 500 --timeout 40s 2>&1")
        #expect(stress.status == 0, "\(stress.output.suffix(2000))")
        try v.stop()
    }

    @Test func cacheEvictsUnderASmallLimitAndARestartedDaemonReusesIt() async throws {
        let v = try await MountedVolume()
        defer { v.cleanup() }
        try v.start()
        var files: [[UInt8]] = []
        for i in 0..<12 {
            let bytes = patternBytes(3 << 20, seed: 100 + UInt64(i))
            files.append(bytes)
            try writeFile(v.path("f\(i)"), bytes)
        }
        #expect(sync_fs_all(v.mountpoint))
        try v.stop()
        // Cold cache with an 8 MiB limit: reading 36 MiB must evict, bytes stay right.
        try? FileManager.default.removeItem(atPath: v.cacheDir)
        try v.start(cacheSize: "8MiB")
        for (i, bytes) in files.enumerated() { #expect(try readFile(v.path("f\(i)")) == bytes) }
        let used = try sh("du -sk \(v.cacheDir)/objects | cut -f1").output.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect((Int(used) ?? .max) <= 12 * 1024, "cache holds \(used) KiB")
        try v.stop()

        // Warm cache: read the last files, restart, delete every chunk from the store;
        // the restarted daemon can only answer from the cache it left behind.
        try v.start(cacheSize: "1GiB")
        for i in 9..<12 { #expect(try readFile(v.path("f\(i)")) == files[i]) }
        try v.stop()
        try FileManager.default.removeItem(atPath: v.store + "/objects/chunks")
        try v.start(cacheSize: "1GiB")
        for i in 9..<12 { #expect(try readFile(v.path("f\(i)")) == files[i]) }
        try v.stop()
    }
}

/// fsync of the mountpoint directory: commits everything (fsyncdir).
func sync_fs_all(_ path: String) -> Bool {
    let fd = open(path, O_RDONLY | O_DIRECTORY)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    return fsync(fd) == 0
}
