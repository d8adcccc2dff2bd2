import CFuse
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// POSIX behaviour through a real mount of a `hearth mount` daemon.
@Suite("POSIX semantics on a mounted volume", .serialized)
struct PosixSemanticsTests {
    @Test func unlinkedOpenFileStaysReadable() async throws {
        let v = try await MountedVolume()
        defer { v.cleanup() }
        try v.start()
        let bytes = patternBytes(300_000, seed: 1)
        try writeFile(v.path("doomed"), bytes)
        let fd = open(v.path("doomed"), O_RDONLY)
        #expect(fd >= 0)
        #expect(unlink(v.path("doomed")) == 0)
        #expect(access(v.path("doomed"), F_OK) != 0)
        var back = [UInt8](repeating: 0, count: bytes.count)
        let n = back.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
        close(fd)
        #expect(n == bytes.count)
        #expect(back == bytes)
        try v.stop()
    }

    @Test func renameOverExistingFileReplacesIt() async throws {
        let v = try await MountedVolume()
        defer { v.cleanup() }
        try v.start()
        try writeFile(v.path("a"), Array("new".utf8))
        try writeFile(v.path("b"), Array("old".utf8))
        let fd = open(v.path("b"), O_RDONLY)
        #expect(rename(v.path("a"), v.path("b")) == 0)
        #expect(try readFile(v.path("b")) == Array("new".utf8))
        #expect(access(v.path("a"), F_OK) != 0)
        // The replaced file stays readable through its open descriptor.
        var old = [UInt8](repeating: 0, count: 3)
        #expect(old.withUnsafeMutableBytes { pread(fd, $0.baseAddress, 3, 0) } == 3)
        #expect(old == Array("old".utf8))
        close(fd)
        // rename2: NOREPLACE refuses, EXCHANGE swaps.
        try writeFile(v.path("c"), Array("ccc".utf8))
        #expect(try sh("mv --no-clobber \(v.path("c")) \(v.path("b")); cat \(v.path("b"))").output == "new")
        try FileManager.default.createDirectory(atPath: v.path("d1"), withIntermediateDirectories: false)
        #expect(hearth_renameat2(AT_FDCWD, v.path("c"), AT_FDCWD, v.path("b"), 1) == -1 && errno == EEXIST)
        #expect(hearth_renameat2(AT_FDCWD, v.path("c"), AT_FDCWD, v.path("b"), 2) == 0)
        #expect(try readFile(v.path("b")) == Array("ccc".utf8))
        #expect(try readFile(v.path("c")) == Array("new".utf8))
        #expect(hearth_renameat2(AT_FDCWD, v.path("c"), AT_FDCWD, v.path("d1"), 2) == 0)
        var st = stat()
        #expect(stat(v.path("c"), &st) == 0 && st.st_mode & S_IFMT == S_IFDIR)
        try v.stop()
    }

    @Test func hardLinksAndSymlinks() async throws {
        let v = try await MountedVolume()
        defer { v.cleanup() }
        try v.start()
        try writeFile(v.path("orig"), Array("linked".utf8))
        #expect(link(v.path("orig"), v.path("other")) == 0)
        var a = stat(), b = stat()
        #expect(stat(v.path("orig"), &a) == 0 && stat(v.path("other"), &b) == 0)
        #expect(a.st_ino == b.st_ino && a.st_nlink == 2)
        try writeFile(v.path("other"), Array("changed".utf8))
        #expect(try readFile(v.path("orig")) == Array("changed".utf8))
        #expect(unlink(v.path("orig")) == 0)
        #expect(try readFile(v.path("other")) == Array("changed".utf8))
        #expect(symlink("other", v.path("sym")) == 0)
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: v.path("sym")) == "other")
        #expect(try readFile(v.path("sym")) == Array("changed".utf8))
        // Links and symlinks survive a remount.
        try v.stop()
        try v.start()
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: v.path("sym")) == "other")
        #expect(try readFile(v.path("sym")) == Array("changed".utf8))
        try v.stop()
    }

    @Test func permissionsAreEnforcedByDefaultPermissions() async throws {
        let v = try await MountedVolume()
        defer { v.cleanup() }
        try v.start(extra: ["--allow-other"])
        #expect(chmod(v.mountpoint, 0o755) == 0)
        try writeFile(v.path("secret"), Array("x".utf8))
        #expect(chmod(v.path("secret"), 0o600) == 0)
        try writeFile(v.path("public"), Array("y".utf8))
        #expect(chmod(v.path("public"), 0o644) == 0)
        let nobody = "setpriv --reuid=65534 --regid=65534 --clear-groups"
        #expect(try sh("\(nobody) cat \(v.path("secret"))").status != 0)
        #expect(try sh("\(nobody) cat \(v.path("public"))").output == "y")
        #expect(try sh("\(nobody) sh -c 'echo z >> \(v.path("public"))'").status != 0)
        #expect(chown(v.path("public"), 65534, 65534) == 0)
        #expect(try sh("\(nobody) sh -c 'echo z >> \(v.path("public"))'").status == 0)
        var st = stat()
        #expect(stat(v.path("secret"), &st) == 0 && st.st_mode & 0o777 == 0o600)
        try v.stop()
    }

    @Test func truncateExtendSparseAppendAndLargeOffsets() async throws {
        let v = try await MountedVolume()
        defer { v.cleanup() }
        try v.start()
        let bytes = patternBytes(3 << 20, seed: 2)
        try writeFile(v.path("t"), bytes)
        #expect(truncate(v.path("t"), 1_000_000) == 0)
        #expect(try readFile(v.path("t")) == Array(bytes[0..<1_000_000]))
        #expect(truncate(v.path("t"), 2_500_000) == 0)
        let extended = try readFile(v.path("t"))
        #expect(extended.count == 2_500_000 && Array(extended[0..<1_000_000]) == Array(bytes[0..<1_000_000]))
        #expect(extended[1_000_000...].allSatisfy { $0 == 0 })

        // O_APPEND from two descriptors.
        try writeFile(v.path("log"), Array("a".utf8))
        try writeFile(v.path("log"), Array("b".utf8), flags: O_WRONLY | O_APPEND)
        try writeFile(v.path("log"), Array("c".utf8), flags: O_WRONLY | O_APPEND)
        #expect(try readFile(v.path("log")) == Array("abc".utf8))

        // Beyond 4 GiB, sparse: SEEK_DATA / SEEK_HOLE see the hole.
        let far: off_t = 5 << 30
        let fd = open(v.path("sparse"), O_RDWR | O_CREAT, 0o644)
        let tail = patternBytes(8192, seed: 3)
        #expect(tail.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, far) } == 8192)
        #expect(fsync(fd) == 0)
        #expect(lseek(fd, 0, HEARTH_SEEK_HOLE) == 0)
        #expect(lseek(fd, 0, HEARTH_SEEK_DATA) >= far - (1 << 20) && lseek(fd, 0, HEARTH_SEEK_DATA) <= far)
        close(fd)
        try v.stop()
        try v.start()
        let again = open(v.path("sparse"), O_RDONLY)
        var st = stat()
        fstat(again, &st)
        #expect(st.st_size == far + 8192)
        var back = [UInt8](repeating: 1, count: 8192)
        #expect(back.withUnsafeMutableBytes { pread(again, $0.baseAddress, 8192, far) } == 8192)
        #expect(back == tail)
        #expect(back.withUnsafeMutableBytes { pread(again, $0.baseAddress, 8192, 1 << 32) } == 8192)
        #expect(back.allSatisfy { $0 == 0 })
        close(again)
        try v.stop()
    }

    @Test func quotaFailsWritesWithENOSPCAndStatfsReportsIt() async throws {
        let v = try await MountedVolume(capacity: 8 << 20)
        defer { v.cleanup() }
        try v.start()
        var fs = statvfs()
        #expect(statvfs(v.mountpoint, &fs) == 0)
        #expect(UInt64(fs.f_blocks) * UInt64(fs.f_frsize) == 8 << 20)
        let result = try sh("dd if=/dev/zero of=\(v.path("big")) bs=1M count=16 conv=fsync 2>&1")
        #expect(result.status != 0)
        #expect(result.output.contains("No space left"))
        try v.stop()
    }

    /// readdir's d_type (what find and ls go by) for every kind of entry: made in this
    /// session, moved by rename and RENAME_EXCHANGE, and listed afresh from the store.
    @Test func readdirReportsEachEntrysType() async throws {
        let v = try await MountedVolume()
        defer { v.cleanup() }
        try v.start()
        try FileManager.default.createDirectory(atPath: v.path("d/sub"), withIntermediateDirectories: true)
        try writeFile(v.path("d/file"), Array("x".utf8))
        #expect(symlink("file", v.path("d/link")) == 0)
        #expect(mkfifo(v.path("d/fifo"), 0o644) == 0)
        #expect(link(v.path("d/file"), v.path("d/hard")) == 0)
        try writeFile(v.path("d/swapped-to-dir"), Array("y".utf8))
        try FileManager.default.createDirectory(atPath: v.path("d/swapped-to-file"), withIntermediateDirectories: false)
        #expect(hearth_renameat2(AT_FDCWD, v.path("d/swapped-to-dir"), AT_FDCWD, v.path("d/swapped-to-file"), 2) == 0)
        #expect(rename(v.path("d/sub"), v.path("d/moved")) == 0)
        let expected: [String: Int32] = [
            "file": Int32(DT_REG), "hard": Int32(DT_REG), "link": Int32(DT_LNK), "fifo": Int32(DT_FIFO),
            "moved": Int32(DT_DIR), "swapped-to-dir": Int32(DT_DIR), "swapped-to-file": Int32(DT_REG),
        ]
        func types() -> [String: Int32] {
            var out: [String: Int32] = [:]
            guard let dir = opendir(v.path("d")) else { return out }
            defer { closedir(dir) }
            while let e = readdir(dir) {
                let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
                if name != "." && name != ".." { out[name] = Int32(e.pointee.d_type) }
            }
            return out
        }
        #expect(types() == expected)
        try v.stop()
        try v.start()
        #expect(types() == expected, "listed from the committed tree")
        try v.stop()
    }

    /// A directory stream sent back to a remembered position (telldir/seekdir) and
    /// rewound after the directory changed. The kernel serves the seek from its
    /// cached listing; the rewind, with the directory changed, drops that cache and
    /// asks the daemon again from the start, behind where the handle's listing
    /// (`DirectoryListing`, walked as READDIR asks) had got to. Nothing may be lost
    /// or repeated either way.
    @Test func directoryStreamResumesAtARememberedPositionAfterAChange() async throws {
        let v = try await MountedVolume()
        defer { v.cleanup() }
        try v.start()
        try FileManager.default.createDirectory(atPath: v.path("d"), withIntermediateDirectories: false)
        let files = Set((0..<3000).map { "file-\($0)" })
        for name in files { try writeFile(v.path("d/" + name), []) }
        guard let stream = opendir(v.path("d")) else { throw HarnessError("opendir: \(String(cString: strerror(errno)))") }
        func next(_ count: Int = .max) -> [String] {
            var names: [String] = []
            while names.count < count, let e = readdir(stream) {
                names.append(withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) })
            }
            return names
        }
        let head = next(1200)
        let mark = telldir(stream)
        let tail = next()
        #expect(head.count + tail.count == files.count + 2, "every entry once: \(head.count) + \(tail.count)")
        #expect(Set(head + tail) == files.union([".", ".."]))

        try writeFile(v.path("d/added-meanwhile"), [])
        seekdir(stream, mark)
        #expect(next() == tail, "the same entries after the remembered position")
        rewinddir(stream)
        let again = next()
        #expect(Set(again).isSuperset(of: files) && again.count == Set(again).count, "no entry repeated after rewinddir")
        // Closed before the daemon stops: an open directory keeps the mount busy.
        closedir(stream)
        try v.stop()
    }
}
