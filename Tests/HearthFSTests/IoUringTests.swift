import CFuse
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// FUSE over io_uring (`hearth mount --io-uring`) on real mounts. The kernel here
/// (6.18) is built with CONFIG_FUSE_IO_URING; the fuse module's `enable_uring`
/// parameter is off by default, so the suite turns it on (we are root) and puts it
/// back afterwards. Whether requests really came over the rings is read from the
/// daemon's counters (`--stats-file`).
@Suite("FUSE over io_uring", .serialized)
struct IoUringTests {
    static let parameter = "/sys/module/fuse/parameters/enable_uring"

    /// Runs `body` with enable_uring=Y, restoring the previous value.
    private func withRingsEnabled(_ body: () async throws -> Void) async throws {
        let before = try String(contentsOfFile: Self.parameter, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        try "Y".write(toFile: Self.parameter, atomically: false, encoding: .utf8)
        defer { try? before.write(toFile: Self.parameter, atomically: false, encoding: .utf8) }
        try await body()
    }

    @Test func filesAndDirectoriesWorkOverTheRings() async throws {
        try await withRingsEnabled {
            let v = try await MountedVolume()
            defer { v.cleanup() }
            // Passthrough off: reads and writes go through the daemon, so the payload
            // buffers carry data both ways.
            try v.start(extra: ["--io-uring", "--passthrough", "off"])
            let s0 = try v.stats()
            #expect(s0.ioUringNegotiated, "the kernel offers FUSE_OVER_IO_URING with enable_uring=Y")

            let big = patternBytes(5 << 20 + 4321, seed: 41)
            try writeFile(v.path("big"), big, sync: true)
            _ = try sh("echo 3 > /proc/sys/vm/drop_caches")
            #expect(try readFile(v.path("big")) == big)

            try FileManager.default.createDirectory(atPath: v.path("dir"), withIntermediateDirectories: false)
            for i in 0..<300 { try writeFile(v.path("dir/file-with-a-longer-name-\(i)"), Array("\(i)".utf8)) }
            let names = try FileManager.default.contentsOfDirectory(atPath: v.path("dir"))
            #expect(names.count == 300)
            #expect(rename(v.path("dir/file-with-a-longer-name-7"), v.path("seven")) == 0)
            #expect(try readFile(v.path("seven")) == Array("7".utf8))
            #expect(symlink("seven", v.path("link")) == 0)
            #expect(try FileManager.default.destinationOfSymbolicLink(atPath: v.path("link")) == "seven")
            #expect(truncate(v.path("big"), 1000) == 0)
            var st = stat()
            #expect(stat(v.path("big"), &st) == 0 && st.st_size == 1000)
            #expect(unlink(v.path("dir/file-with-a-longer-name-8")) == 0)
            #expect(access(v.path("dir/file-with-a-longer-name-8"), F_OK) != 0)
            var fs = statvfs()
            #expect(statvfs(v.path(""), &fs) == 0)

            let s1 = try v.stats()
            #expect(s1.ioUringRequests > s0.ioUringRequests + 600, "\(s1.ioUringRequests - s0.ioUringRequests) requests came over the rings")
            #expect(s1.count("write") > s0.count("write") && s1.count("read") > s0.count("read"))
            try v.stop()

            // What went over the rings was committed: a plain /dev/fuse daemon sees it.
            try v.start()
            #expect(try readFile(v.path("big")) == Array(big[0..<1000]))
            #expect(try FileManager.default.contentsOfDirectory(atPath: v.path("dir")).count == 298)
            #expect(try v.stats().ioUringRequests == 0)
            try v.stop()
        }
    }

    @Test func manyProcessesAtOnceOverTheRings() async throws {
        try await withRingsEnabled {
            let v = try await MountedVolume()
            defer { v.cleanup() }
            try v.start(extra: ["--io-uring"])
            // 8 writers on 2 CPUs: every queue gets concurrent requests, and a queue
            // whose thread is busy grows another.
            let script = """
                set -e
                for w in $(seq 8); do (
                  mkdir -p \(v.path("w"))$w
                  for i in $(seq 150); do
                    echo "$w-$i" > \(v.path("w"))$w/f$i
                    [ "$(cat \(v.path("w"))$w/f$i)" = "$w-$i" ]
                    mv \(v.path("w"))$w/f$i \(v.path("w"))$w/g$i
                  done
                  [ "$(ls \(v.path("w"))$w | wc -l)" = 150 ]
                ) & done
                wait
                """
            let file = v.root + "/writers.sh"
            try script.write(toFile: file, atomically: true, encoding: .utf8)
            let result = try sh("bash " + file)
            #expect(result.status == 0, "\(result.output)")
            #expect(try v.stats().ioUringRequests > 8 * 150 * 3)
            try v.stop()
        }
    }

    /// The kernel holds every request once io_uring is granted until each queue has a
    /// ring entry: a daemon that cannot make rings (here io_uring is switched off for
    /// the whole machine, as a seccomp profile would for a container) must not ask for
    /// io_uring, or its mount hangs. It serves over /dev/fuse instead.
    @Test func withoutRingsTheMountServesOverDevFuse() async throws {
        let knob = "/proc/sys/kernel/io_uring_disabled"
        let before = try String(contentsOfFile: knob, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        try await withRingsEnabled {
            try "2".write(toFile: knob, atomically: false, encoding: .utf8)
            defer { try? before.write(toFile: knob, atomically: false, encoding: .utf8) }
            let v = try await MountedVolume()
            defer { v.cleanup() }
            try v.start(extra: ["--io-uring"])
            try writeFile(v.path("plain"), Array("over /dev/fuse".utf8))
            #expect(try readFile(v.path("plain")) == Array("over /dev/fuse".utf8))
            let s = try v.stats()
            #expect(!s.ioUringNegotiated)
            #expect(s.ioUringRequests == 0)
            #expect(s.count("create") >= 1)
            try v.stop()
        }
    }

    @Test func keeperSocketAndIoUringAreRefusedTogether() throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: MountedVolume.binary)
        p.arguments = ["mount", "--store", "file:///nonexistent", "v", "/tmp", "--io-uring", "--keeper-socket", "/tmp/k.sock"]
        let err = Pipe()
        p.standardError = err
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        p.waitUntilExit()
        let message = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(p.terminationStatus != 0)
        #expect(message.contains("--io-uring cannot be used with --keeper-socket"), "\(message)")
    }
}
