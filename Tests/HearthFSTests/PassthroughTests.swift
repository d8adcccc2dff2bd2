import Foundation
import HearthMounts
import HearthStore
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// FUSE passthrough on real mounts: whether the kernel or the daemon served the I/O
/// is read from the daemon's op counters (`--stats-file`), the bytes from the mount
/// and, after a remount on a cold cache, from the store.
@Suite("FUSE passthrough", .serialized)
struct PassthroughTests {
    /// Writes `bytes` to `name` through the mount, commits, and restarts the daemon
    /// on the same (now warm) cache.
    private func committedFile(_ v: MountedVolume, _ name: String, _ bytes: [UInt8]) throws {
        try writeFile(v.path(name), bytes, sync: true)
        try v.stop()
        try v.start()
    }

    @Test func fullyCachedFileIsReadByTheKernelAlone() async throws {
        let v = try await MountedVolume()
        defer { v.cleanup() }
        try v.start()
        let bytes = patternBytes(6 << 20 + 4321, seed: 21)
        try committedFile(v, "whole", bytes)
        let before = try v.stats()
        #expect(before.passthroughNegotiated, "this kernel (6.18) offers FUSE_PASSTHROUGH and tests run as root")
        #expect(try readFile(v.path("whole")) == bytes)
        // A second reader and a reader with O_DIRECT semantics aside, same answer.
        #expect(try readFile(v.path("whole")) == bytes)
        let after = try v.statsAfterReleases()
        #expect(after.count("read") == before.count("read"), "the daemon saw \(after.count("read") - before.count("read")) READs")
        #expect(after.opens.passthroughOpens >= before.opens.passthroughOpens + 2)
        #expect(after.backing.registered >= 1 && after.backing.failures == 0)
        #expect(after.backing.registered == after.backing.closed, "every backing id is closed on release")
        try v.stop()
    }

    @Test func partlyCachedFileIsServedByTheDaemonUntilComplete() async throws {
        let v = try await MountedVolume()
        defer { v.cleanup() }
        try v.start()
        let bytes = patternBytes(8 << 20, seed: 22)
        try writeFile(v.path("part"), bytes, sync: true)
        try v.stop()
        try FileManager.default.removeItem(atPath: v.cacheDir)
        try v.start()
        // Cold cache: the first megabyte only.
        let head = try sh("dd if=\(v.path("part")) of=/dev/null bs=1M count=1 status=none")
        #expect(head.status == 0, "\(head.output)")
        let s0 = try v.stats()
        // Partly cached: the open is not passthrough, the daemon serves (and fetches).
        // A second descriptor opened meanwhile must not fail either (io modes).
        let fd = open(v.path("part"), O_RDONLY)
        #expect(fd >= 0)
        #expect(try readFile(v.path("part")) == bytes)
        close(fd)
        let s1 = try v.stats()
        #expect(s1.count("read") > s0.count("read"))
        #expect(s1.opens.cachedOpens >= s0.opens.cachedOpens + 2)
        // Now complete: the next open is passthrough and sends no READ.
        _ = try sh("echo 3 > /proc/sys/vm/drop_caches")
        #expect(try readFile(v.path("part")) == bytes)
        let s2 = try v.stats()
        #expect(s2.count("read") == s1.count("read"))
        #expect(s2.opens.passthroughOpens > s1.opens.passthroughOpens)
        try v.stop()
    }

    @Test func passthroughWritesAreCommittedWithTheRightBytes() async throws {
        let v = try await MountedVolume()
        defer { v.cleanup() }
        try v.start()
        var expected = patternBytes(3 << 20 + 777, seed: 23)
        let s0 = try v.stats()
        try writeFile(v.path("new"), expected)
        // Overwrite in the middle, then append on a second descriptor (pwrite on an
        // O_APPEND descriptor appends on Linux, so not the same one).
        let patch = patternBytes(10_000, seed: 24)
        let fd = open(v.path("new"), O_RDWR)
        #expect(fd >= 0)
        #expect(patch.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 1 << 20) } == patch.count)
        expected.replaceSubrange((1 << 20)..<((1 << 20) + patch.count), with: patch)
        let tail = patternBytes(5000, seed: 25)
        let afd = open(v.path("new"), O_WRONLY | O_APPEND)
        #expect(tail.withUnsafeBytes { write(afd, $0.baseAddress, $0.count) } == tail.count)
        close(afd)
        expected += tail
        // getattr reflects the backing file while the kernel writes it.
        var st = stat()
        #expect(fstat(fd, &st) == 0 && Int(st.st_size) == expected.count)
        close(fd)
        #expect(stat(v.path("new"), &st) == 0 && Int(st.st_size) == expected.count)
        let s1 = try v.stats()
        #expect(s1.count("write") == s0.count("write"), "passthrough writes never reach the daemon")
        #expect(try readFile(v.path("new")) == expected)

        // A write open of a committed, cached file: a working copy, passthrough again.
        try committedFile(v, "old", patternBytes(2 << 20, seed: 26))
        var old = patternBytes(2 << 20, seed: 26)
        let ofd = open(v.path("old"), O_WRONLY)
        let small = patternBytes(4096, seed: 27)
        #expect(small.withUnsafeBytes { pwrite(ofd, $0.baseAddress, $0.count, 12345) } == small.count)
        old.replaceSubrange(12345..<(12345 + small.count), with: small)
        close(ofd)

        // The commit on close and on unmount; a cold cache reads only from the store.
        try v.stop()
        try FileManager.default.removeItem(atPath: v.cacheDir)
        try v.start()
        #expect(try readFile(v.path("new")) == expected)
        #expect(try readFile(v.path("old")) == old)
        try v.stop()
    }

    @Test func sharedMmapStoresAreTakenByFsync() async throws {
        let v = try await MountedVolume()
        defer { v.cleanup() }
        try v.start()
        var expected = patternBytes(1 << 20, seed: 28)
        try writeFile(v.path("mapped"), expected)
        let fd = open(v.path("mapped"), O_RDWR)
        #expect(fd >= 0)
        let map = mmap(nil, expected.count, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
        #expect(map != MAP_FAILED)
        if let map, map != MAP_FAILED {
            let bytes = map.assumingMemoryBound(to: UInt8.self)
            for i in stride(from: 0, to: expected.count, by: 4096) {
                bytes[i] = 0xA5
                expected[i] = 0xA5
            }
            #expect(msync(map, expected.count, MS_SYNC) == 0)
            #expect(fsync(fd) == 0)
            munmap(map, expected.count)
        }
        close(fd)
        try v.stop()
        try FileManager.default.removeItem(atPath: v.cacheDir)
        try v.start()
        #expect(try readFile(v.path("mapped")) == expected)
        try v.stop()
    }

    /// A plain umount right after the last close: the kernel aborts the RELEASEs the
    /// daemon has not read yet (fuse_conn_destroy), so the daemon never sees those
    /// passthrough writers close. Their bytes must reach the store all the same, and
    /// stay cached for the next daemon. The test makes the lost RELEASE certain: each
    /// file's last reference is an fd in flight on a socket, dropped (no FLUSH, only
    /// a RELEASE) while the daemon is stopped, and the daemon continues only once the
    /// mount is gone.
    @Test func passthroughWritersWhoseReleaseTheUnmountAbortedAreCommittedAndStayCached() async throws {
        let v = try await MountedVolume()
        defer { v.cleanup() }
        try v.start()
        // One file is overwritten in place (same size): only the mtime shows it.
        try committedFile(v, "f0", patternBytes(2 << 20, seed: 39))
        var expected: [String: [UInt8]] = [:]
        var sockets: [Int32] = []
        for index in 0..<3 {
            let name = "f\(index)"
            expected[name] = patternBytes((2 << 20) + index * 1000, seed: 40 + UInt64(index))
            let fd = open(v.path(name), O_WRONLY | O_CREAT, 0o644)
            #expect(fd >= 0)
            #expect(expected[name]!.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) } == expected[name]!.count)
            var pair: [Int32] = [-1, -1]
            #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &pair) == 0)
            try FDHandoff.send(pair[0], byte: 0, fd: fd)
            close(fd)
            sockets += pair
        }
        let pid = try #require(v.pid)
        kill(pid, SIGSTOP)
        sockets.forEach { close($0) }
        try v.unmount(resumeAfter: true)
        // Warm cache: every file is read by the kernel from its clean cache copy.
        try v.start()
        for (name, bytes) in expected.sorted(by: { $0.key < $1.key }) {
            let same = try readFile(v.path(name)) == bytes
            #expect(same, "\(name) after an unmount and a restart")
        }
        let s = try v.stats()
        #expect(s.opens.passthroughOpens == UInt64(expected.count))
        #expect(s.opens.cachedOpens == 0)
        try v.stop()
        // Cold cache: the bytes come from the store.
        try FileManager.default.removeItem(atPath: v.cacheDir)
        try v.start()
        for (name, bytes) in expected.sorted(by: { $0.key < $1.key }) {
            let same = try readFile(v.path(name)) == bytes
            #expect(same, "\(name) from the store")
        }
        try v.stop()
    }

    @Test func readersAndAWriterOfOneFileAllSucceed() async throws {
        let v = try await MountedVolume()
        defer { v.cleanup() }
        try v.start()
        let original = patternBytes(2 << 20, seed: 29)
        try committedFile(v, "shared", original)
        // A reader holds a passthrough open on the clean copy; a writer then opens the
        // same inode: the kernel demands the same backing id, so the writer's I/O
        // goes through the daemon (FOPEN_DIRECT_IO) and no open fails.
        let reader = open(v.path("shared"), O_RDONLY)
        #expect(reader >= 0)
        // The reader must be a passthrough open of the clean copy kept from before the
        // restart, or the writer below has nothing to share an id with. (Once, in a
        // full release run, directOpens below was 0: this tells which open differed.)
        let afterReader = try v.stats().opens
        #expect(afterReader.passthroughOpens == 1 && afterReader.cachedOpens == 0,
                "the reader's open after the restart: \(afterReader)")
        let writer = open(v.path("shared"), O_RDWR)
        #expect(writer >= 0, "open for write next to a passthrough reader: \(String(cString: strerror(errno)))")
        let patch = patternBytes(8192, seed: 30)
        #expect(patch.withUnsafeBytes { pwrite(writer, $0.baseAddress, $0.count, 4096) } == patch.count)
        var back = [UInt8](repeating: 0, count: patch.count)
        #expect(back.withUnsafeMutableBytes { pread(writer, $0.baseAddress, $0.count, 4096) } == patch.count)
        #expect(back == patch)
        close(writer)
        close(reader)
        var expected = original
        expected.replaceSubrange(4096..<(4096 + patch.count), with: patch)
        // Every open closed: the next open sees the new bytes (the working copy).
        #expect(try readFile(v.path("shared")) == expected)
        let s = try v.statsAfterReleases()
        #expect(s.opens.directOpens >= 1, "opens: \(s.opens)")
        #expect(s.backing.registered == s.backing.closed)
        try v.stop()
        try FileManager.default.removeItem(atPath: v.cacheDir)
        try v.start()
        #expect(try readFile(v.path("shared")) == expected)
        try v.stop()
    }

    /// The clean cache files under `objects/` (no maps, no temporaries): path → inode.
    private func cleanCacheFiles(_ v: MountedVolume) -> [String: UInt64] {
        let dir = v.cacheDir + "/objects"
        var out: [String: UInt64] = [:]
        for name in (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [] where !name.contains(".") {
            var st = stat()
            if stat(dir + "/" + name, &st) == 0 { out[dir + "/" + name] = UInt64(st.st_ino) }
        }
        return out
    }

    private func workingCopyInodes(_ v: MountedVolume) -> Set<UInt64> {
        let dir = v.cacheDir + "/work/" + v.volumeID
        var out = Set<UInt64>()
        for name in (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [] {
            var st = stat()
            if stat(dir + "/" + name, &st) == 0 { out.insert(UInt64(st.st_ino)) }
        }
        return out
    }

    @Test func writeOpenOfACachedFileTakesTheCleanCopyOverWithoutCopying() async throws {
        let v = try await MountedVolume()
        defer { v.cleanup() }
        try v.start()
        let original = patternBytes(4 << 20 + 99, seed: 40)
        try committedFile(v, "big", original)
        #expect(try readFile(v.path("big")) == original)
        let clean = cleanCacheFiles(v)
        #expect(clean.count == 1, "one clean copy: \(clean)")
        // The write open makes the working copy (for passthrough): the same inode,
        // renamed out of objects/, not a copy of its bytes.
        let fd = open(v.path("big"), O_RDWR)
        #expect(fd >= 0)
        #expect(workingCopyInodes(v) == Set(clean.values), "the working copy is the clean file's inode")
        #expect(cleanCacheFiles(v).isEmpty)
        var expected = original
        let patch = patternBytes(5000, seed: 41)
        #expect(patch.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 3 << 20) } == patch.count)
        expected.replaceSubrange((3 << 20)..<((3 << 20) + patch.count), with: patch)
        var back = [UInt8](repeating: 0, count: 100)
        #expect(back.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) } == 100)
        #expect(back == Array(original[0..<100]), "untouched bytes are the committed version's")
        close(fd)
        #expect(try readFile(v.path("big")) == expected)
        let s = try v.stats()
        #expect(s.count("write") == 0, "passthrough writes")
        // Committed right: a cold cache reads it from the store.
        try v.stop()
        try FileManager.default.removeItem(atPath: v.cacheDir)
        try v.start()
        #expect(try readFile(v.path("big")) == expected)
        try v.stop()
    }

    @Test func readersOfTheCommittedVersionKeepItsBytesWhenAWriterTakesItsCopy() async throws {
        let v = try await MountedVolume()
        defer { v.cleanup() }
        try v.start()
        // Four files with the same content share one clean cache file on the node.
        let original = patternBytes(3 << 20 + 5, seed: 42)
        for name in ["a", "b", "c", "d"] { try writeFile(v.path(name), original, sync: true) }
        try v.stop()
        try v.start()
        #expect(try readFile(v.path("b")) == original)
        let sharedFiles = cleanCacheFiles(v)
        #expect(sharedFiles.count == 1)
        let shared = sharedFiles.values.first ?? 0

        // b is open for reading (passthrough on the shared clean file): a write open of
        // a must not take that file over, it copies, and b keeps reading the original.
        let reader = open(v.path("b"), O_RDONLY)
        #expect(reader >= 0)
        let writer = open(v.path("a"), O_RDWR)
        #expect(writer >= 0)
        #expect(cleanCacheFiles(v).values.contains(shared), "the shared clean file stays while b has it open")
        let patchA = patternBytes(8192, seed: 43)
        #expect(patchA.withUnsafeBytes { pwrite(writer, $0.baseAddress, $0.count, 0) } == patchA.count)
        close(writer)
        var back = [UInt8](repeating: 0, count: original.count)
        #expect(back.withUnsafeMutableBytes { pread(reader, $0.baseAddress, $0.count, 0) } == back.count)
        #expect(back == original)
        close(reader)

        // The same from another daemon on the node (another volume of the store with
        // a file of the same content, sharing the cache directory): its open holds the
        // clean file's shared lock.
        let otherMount = v.root + "/other"
        try FileManager.default.createDirectory(atPath: otherMount, withIntermediateDirectories: true)
        let otherID = try await Catalog(try DirectoryStore(root: URL(fileURLWithPath: v.store)))
            .createVolume(name: "other", capacityBytes: 64 << 30).id
        let other = try await MountedVolume(root: v.root, volumeID: otherID)
        other.cacheDir = v.cacheDir
        try other.start(mountpoint: otherMount)
        try writeFile(otherMount + "/x", original, sync: true)
        try other.stop()
        try other.start(mountpoint: otherMount)
        let otherReader = open(otherMount + "/x", O_RDONLY)
        #expect(otherReader >= 0)
        #expect(back.withUnsafeMutableBytes { pread(otherReader, $0.baseAddress, 4096, 0) } == 4096)
        let cWriter = open(v.path("c"), O_RDWR)
        #expect(cWriter >= 0)
        #expect(cleanCacheFiles(v).values.contains(shared), "another daemon's open keeps it")
        let patchC = patternBytes(8192, seed: 44)
        #expect(patchC.withUnsafeBytes { pwrite(cWriter, $0.baseAddress, $0.count, 1 << 20) } == patchC.count)
        close(cWriter)
        #expect(back.withUnsafeMutableBytes { pread(otherReader, $0.baseAddress, $0.count, 0) } == original.count)
        #expect(back == original)
        close(otherReader)
        try other.stop()

        // Nobody holds it now: b's write open takes it over (no copy), and d, read
        // meanwhile, gets the committed version from the store.
        let bWriter = open(v.path("b"), O_RDWR)
        #expect(bWriter >= 0)
        #expect(workingCopyInodes(v).contains(shared), "taken over: the working copy is the clean file's inode")
        #expect(try readFile(v.path("d")) == original)
        let patchB = patternBytes(8192, seed: 47)
        #expect(patchB.withUnsafeBytes { pwrite(bWriter, $0.baseAddress, $0.count, 2 << 20) } == patchB.count)
        close(bWriter)

        var expectedA = original, expectedB = original, expectedC = original
        expectedA.replaceSubrange(0..<8192, with: patchA)
        expectedB.replaceSubrange((2 << 20)..<((2 << 20) + 8192), with: patchB)
        expectedC.replaceSubrange((1 << 20)..<((1 << 20) + 8192), with: patchC)
        #expect(try readFile(v.path("a")) == expectedA)
        #expect(try readFile(v.path("b")) == expectedB)
        #expect(try readFile(v.path("c")) == expectedC)
        #expect(try readFile(v.path("d")) == original)
        try v.stop()
        try FileManager.default.removeItem(atPath: v.cacheDir)
        try v.start()
        #expect(try readFile(v.path("a")) == expectedA)
        #expect(try readFile(v.path("b")) == expectedB)
        #expect(try readFile(v.path("c")) == expectedC)
        #expect(try readFile(v.path("d")) == original)
        try v.stop()
    }

    /// Every file of the store with its modification time (a commit rewrites the head).
    private func storeListing(_ v: MountedVolume) throws -> [String] {
        try sh("find \(v.store) -type f -printf '%p %T@\\n' | sort").output.split(separator: "\n").map(String.init)
    }

    @Test func idleIntervalCommitsOfAnOpenPassthroughWriterWriteNothing() async throws {
        let v = try await MountedVolume()
        defer { v.cleanup() }
        try v.start() // --commit-interval 1s
        var expected = patternBytes(6 << 20, seed: 45)
        let fd = open(v.path("open"), O_RDWR | O_CREAT, 0o644)
        #expect(fd >= 0)
        #expect(expected.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) } == expected.count)
        // fsync outside the write's timestamp tick: a look within it must assume a
        // later write may hide behind the same mtime, and would take the file again.
        usleep(200_000)
        #expect(fsync(fd) == 0)
        // Open, written and fsynced: interval commits find nothing new to take (its
        // size and mtime stay put), so they neither hash it again nor write the store.
        let before = try storeListing(v)
        sleep(4)
        let after = try storeListing(v)
        #expect(after == before, "idle interval commits wrote the store: \(Set(after).subtracting(before))")
        // New passthrough writes; fsync makes them durable before it returns.
        let patch = patternBytes(4096, seed: 46)
        #expect(patch.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 5 << 20) } == patch.count)
        expected.replaceSubrange((5 << 20)..<((5 << 20) + patch.count), with: patch)
        #expect(fsync(fd) == 0)
        // A crash now: what fsync acknowledged is in the store (cold cache, fresh start).
        v.crash()
        close(fd)
        _ = umount2(v.mountpoint, Int32(MNT_DETACH))
        try FileManager.default.removeItem(atPath: v.cacheDir)
        try v.start()
        #expect(try readFile(v.path("open")) == expected)
        try v.stop()
    }

    @Test func passthroughOffServesEverythingThroughTheDaemon() async throws {
        let v = try await MountedVolume()
        defer { v.cleanup() }
        try v.start(extra: ["--passthrough", "off"])
        let bytes = patternBytes(1 << 20, seed: 31)
        try writeFile(v.path("f"), bytes, sync: true)
        try v.stop()
        try v.start(extra: ["--passthrough", "off"])
        let s0 = try v.stats()
        #expect(!s0.passthroughNegotiated)
        #expect(try readFile(v.path("f")) == bytes)
        let s1 = try v.stats()
        #expect(s1.count("read") > s0.count("read"))
        #expect(s1.backing.registered == 0)
        try v.stop()
    }
}
