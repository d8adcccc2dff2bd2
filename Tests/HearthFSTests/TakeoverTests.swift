import Foundation
import HearthTestSupport
import HearthCSI
import Logging
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Issue 8's crash recovery on real mounts: the node plugin's ``DaemonSupervisor``
/// with an fd keeper runs `hearth mount`; the test kills the daemon with SIGKILL
/// while applications work on the mount. They must see a pause, never an error.
@Suite(.serialized)
struct TakeoverTests {
    /// A volume served the way `hearth node` serves it: supervised, fd kept.
    final class Supervised: @unchecked Sendable {
        // @unchecked: used by one test at a time; the supervisor is Sendable.
        let volume: MountedVolume
        let supervisor: DaemonSupervisor

        init() async throws {
            volume = try await MountedVolume()
            var launch = DaemonLaunch(
                executable: MountedVolume.binary,
                arguments: ["--store", "file://" + volume.store, "--cache-dir", volume.cacheDir, "--cache-size", "2GiB",
                            "--commit-interval", "1s"],
                logDirectory: volume.root + "/logs")
            launch.keeperDirectory = volume.root + "/run"
            var logger = Logger(label: "test.supervisor")
            logger.logLevel = .error
            supervisor = DaemonSupervisor(launch: launch, logger: logger)
            try await supervisor.start(volumeID: volume.volumeID, mountpoint: volume.mountpoint, readOnly: false)
            // The fd reaches the keeper once INIT is answered: the first request does it.
            _ = try await Self.statfs(volume.mountpoint)
            let giveUp = ContinuousClock.now + .seconds(10)
            while !FileManager.default.fileExists(atPath: volume.cacheDir + "/sessions/\(volume.volumeID)/session.json") {
                guard ContinuousClock.now < giveUp else { throw HarnessError("the daemon never saved its session") }
                try await Task.sleep(for: .milliseconds(10))
            }
            try await Task.sleep(for: .milliseconds(100))
        }

        var log: String {
            (try? String(contentsOfFile: supervisor.logPath(volume.volumeID), encoding: .utf8)) ?? "(no log)"
        }

        /// SIGKILL the daemon; returns how long the first request after it waited
        /// (statfs always goes to the daemon: it waits in the kernel until the
        /// successor answers it).
        func killDaemon() async throws -> Duration {
            guard let before = supervisor.state(volume.volumeID) else { throw HarnessError("no daemon") }
            let start = ContinuousClock.now
            kill(before.pid, SIGKILL)
            _ = try await Supervised.statfs(volume.mountpoint)
            let pause = ContinuousClock.now - start
            guard let after = supervisor.state(volume.volumeID), after.restarts == before.restarts + 1, after.pid != before.pid else {
                throw HarnessError("the daemon was not restarted:\n\(log)")
            }
            return pause
        }

        /// statvfs off the cooperative pool (it blocks while no daemon serves).
        static func statfs(_ path: String) async throws -> UInt64 {
            try await withCheckedThrowingContinuation { (done: CheckedContinuation<UInt64, any Error>) in
                Thread {
                    var st = statvfs()
                    if statvfs(path, &st) == 0 {
                        done.resume(returning: UInt64(st.f_blocks))
                    } else {
                        done.resume(throwing: HarnessError("statvfs \(path): errno \(errno)"))
                    }
                }.start()
            }
        }

        func stop() async throws {
            try await supervisor.stop(volume.volumeID)
        }

        func cleanup() {
            _ = umount2(volume.mountpoint, Int32(MNT_DETACH))
            try? FileManager.default.removeItem(atPath: volume.root)
        }
    }

    static func table(_ pauses: [Duration]) -> String {
        let ms = pauses.map { Double($0.components.seconds) * 1000 + Double($0.components.attoseconds) / 1e15 }.sorted()
        let p50 = ms[ms.count / 2], max = ms.last ?? 0
        return String(format: "| kills | p50 pause (ms) | max pause (ms) |\n|---|---|---|\n| %d | %.1f | %.1f |", ms.count, p50, max)
    }

    @Test func fioWithVerifySurvivesAKill() async throws {
        try #require(commandExists("fio"), "fio is needed (Debian's fio package)")
        let mount = try await Supervised()
        defer { mount.cleanup() }
        // Time-based: with passthrough a fixed amount of I/O can finish before the kill.
        let fio = try BackgroundCommand(Fio.mixedWithVerify(directory: mount.volume.mountpoint, size: "64m", runtime: .seconds(6)),
                                        output: mount.volume.root + "/fio.out")
        // Late enough that fio is past its start. A blocking sleep, not Task.sleep:
        // with every test running in parallel on 2 cores, a suspended task can wait
        // longer for a pool thread than fio runs, and then the kill comes after it.
        // Nothing suspends between starting fio and the kill (killDaemon kills first).
        usleep(500_000)
        #expect(fio.process.isRunning, "fio finished before the kill: make it longer")
        let pause = try await mount.killDaemon()
        let (status, output) = try await fio.finish()
        print("fio across kill -9: pause \(pause)\n\(Self.table([pause]))")
        #expect(status == 0, "fio failed:\n\(output)\ndaemon log:\n\(mount.log)")
        #expect(Fio.errors(output) == "0", "fio reported errors:\n\(output)")
        #expect(!output.contains("verify"), "fio verification failed:\n\(output)")
        try await mount.stop()
    }

    @Test func metadataStormSurvivesKills() async throws {
        let mount = try await Supervised()
        defer { mount.cleanup() }
        let dir = mount.volume.mountpoint + "/storm"
        let stop = mount.volume.root + "/storm.stop"
        // Runs until the test has made its kills (a stop file), so that it never ends
        // before them however fast the daemon gets; at least 200 rounds.
        let script = """
            set -e
            mkdir -p \(dir) && cd \(dir)
            i=1
            while [ $i -le 200 ] || [ ! -e \(stop) ]; do
              echo "file $i" > a$i
              mv a$i b$i
              if [ $i -gt 1 ]; then rm b$((i-1)); fi
              if [ $((i % 100)) -eq 0 ]; then mkdir d$i; mv d$i e$i; rmdir e$i; fi
              i=$((i+1))
            done
            ls
            """
        let storm = try BackgroundCommand(script, output: mount.volume.root + "/storm.out")
        var pauses: [Duration] = []
        for _ in 0..<3 {
            try await Task.sleep(for: .milliseconds(700))
            guard storm.process.isRunning else { break }
            pauses.append(try await mount.killDaemon())
        }
        FileManager.default.createFile(atPath: stop, contents: nil)
        let (status, output) = try await storm.finish()
        print("metadata storm across \(pauses.count) kills:\n\(Self.table(pauses))")
        #expect(pauses.count == 3, "the storm ended before the kills:\n\(output)")
        #expect(status == 0, "the storm failed:\n\(output)\ndaemon log:\n\(mount.log)")
        // The one file left is the last round's.
        let last = output.trimmingCharacters(in: .whitespacesAndNewlines)
        let round = Int(last.dropFirst()) ?? 0
        #expect(last.hasPrefix("b") && round >= 200, "left: \(output)")
        // Each successor sweeps its dead predecessor's spares (made ahead, or the
        // storm's retired working copies: about a hundred per daemon). What may stay
        // under a dead daemon's name is a working copy the journal named and a
        // successor adopted, of a file unlinked meanwhile: replayed nodes are kept
        // (the dead daemon's lookup counts are unknown), and with them their copy.
        let work = mount.volume.cacheDir + "/work/" + mount.volume.volumeID
        func deadSpares() -> [String] {
            let spares = ((try? FileManager.default.contentsOfDirectory(atPath: work)) ?? []).filter { $0.hasPrefix("spare.") }
            let byDaemon = Dictionary(grouping: spares) { $0.split(separator: ".")[1] }
            guard let live = byDaemon.max(by: { $0.value.count < $1.value.count })?.key else { return [] }
            return spares.filter { $0.split(separator: ".")[1] != live }
        }
        let deadline = Date().addingTimeInterval(10)
        while deadSpares().count > 3 && Date() < deadline { try await Task.sleep(for: .milliseconds(50)) }
        #expect(deadSpares().count <= 3, "dead daemons' spares left: \(deadSpares().count)")
        try await mount.stop()
        // What the dead daemons journaled reached the store: a fresh mount sees it.
        try mount.volume.start()
        defer { mount.volume.crash() }
        let names = try FileManager.default.contentsOfDirectory(atPath: dir)
        #expect(names == [last])
        #expect(try String(contentsOfFile: dir + "/" + last, encoding: .utf8) == "file \(round)\n")
        try mount.volume.stop()
    }

    /// Names the journal's JSON must escape (quote, backslash, newline, control
    /// characters) and non-ASCII ones, created just before a kill: every line of
    /// the journal parses as JSON and carries the names unchanged, and the
    /// successor, which rebuilt its namespace from those lines, lists them all, with
    /// a symlink's target and a file's bytes intact.
    @Test func namesThatNeedEscapingSurviveAKill() async throws {
        let mount = try await Supervised()
        defer { mount.cleanup() }
        let dir = mount.volume.mountpoint + "/names"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: false)
        let names = ["quote\"d", "back\\slash", "new\nline", "tab\tand\u{1}ctl\u{1f}", "ünïcødé 文件 🗂", "del\u{7f}", "plain"]
        for (i, name) in names.enumerated() {
            #expect(FileManager.default.createFile(atPath: dir + "/" + name, contents: Data("file \(i)\n".utf8)))
        }
        let target = "../names/quote\"d \\ \n"
        try FileManager.default.createSymbolicLink(atPath: dir + "/link", withDestinationPath: target)
        _ = try await mount.killDaemon()

        let journal = mount.volume.cacheDir + "/sessions/\(mount.volume.volumeID)/journal.log"
        let lines = try Data(contentsOf: URL(fileURLWithPath: journal)).split(separator: 0x0a)
        var journaled = Set<String>()
        for line in lines {
            let record = try #require(try JSONSerialization.jsonObject(with: Data(line)) as? [String: Any],
                                      "not JSON: \(String(decoding: line, as: UTF8.self))")
            if let name = record["name"] as? String { journaled.insert(name) }
        }
        #expect(journaled.isSuperset(of: names + ["link"]), "journaled: \(journaled.sorted())")

        let listed = try FileManager.default.contentsOfDirectory(atPath: dir)
        #expect(Set(listed) == Set(names + ["link"]), "after the kill: \(listed)\n\(mount.log)")
        for (i, name) in names.enumerated() {
            #expect(try String(contentsOfFile: dir + "/" + name, encoding: .utf8) == "file \(i)\n", "\(name)")
        }
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: dir + "/link") == target)
        try await mount.stop()
    }

    /// Small files committed and retired before a kill (by the commit, or at their
    /// close after it), and new ones written into their emptied copies: a retired
    /// copy is emptied under the name the journal gave it (no rename), so the
    /// journal must say it is retired before that, or the successor takes an empty
    /// file, or another file's bytes, for the committed file's working copy.
    @Test func filesRetiredBeforeAKillKeepTheirBytes() async throws {
        let mount = try await Supervised()
        defer { mount.cleanup() }
        let dir = mount.volume.mountpoint + "/retired"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: false)
        func bytes(_ i: Int) -> Data { Data("file \(i) ".utf8 + Array(repeating: UInt8(65 + i % 26), count: i % 97)) }
        for i in 0..<300 { #expect(FileManager.default.createFile(atPath: dir + "/f\(i)", contents: bytes(i))) }
        // 50 more are open for reading when the commit below runs: their copies are
        // retired at the reader's close instead (RELEASE of a file with nothing dirty).
        let open = (300..<350).map { i -> Int32 in
            #expect(FileManager.default.createFile(atPath: dir + "/f\(i)", contents: bytes(i)))
            let fd = Glibc.open(dir + "/f\(i)", O_RDONLY)
            #expect(fd >= 0)
            return fd
        }
        // fsync of the directory waits for a commit: every closed copy above is retired.
        let fd = Glibc.open(dir, O_RDONLY)
        #expect(fd >= 0 && fsync(fd) == 0)
        close(fd)
        for fd in open { close(fd) }
        // Give the closes' RELEASEs (asynchronous) time to arrive and retire.
        try await Task.sleep(for: .milliseconds(300))
        for i in 350..<650 { #expect(FileManager.default.createFile(atPath: dir + "/f\(i)", contents: bytes(i))) }
        _ = try await mount.killDaemon()

        for i in 0..<650 {
            #expect(FileManager.default.contents(atPath: dir + "/f\(i)") == bytes(i), "f\(i) after the kill\n\(mount.log)")
        }
        try await mount.stop()
    }

    /// The daemon killed again and again under fio with verification (10 times, or
    /// HEARTH_RECOVERY_KILLS: e2e/bench/recovery.sh runs 20 for the pause table).
    @Test func repeatedKillsUnderFio() async throws {
        try #require(commandExists("fio"), "fio is needed (Debian's fio package)")
        let kills = Int(ProcessInfo.processInfo.environment["HEARTH_RECOVERY_KILLS"] ?? "") ?? 10
        let mount = try await Supervised()
        defer { mount.cleanup() }
        // Time-based, long enough for every kill (each is 400 ms apart plus its pause).
        let fio = try BackgroundCommand(Fio.mixedWithVerify(directory: mount.volume.mountpoint, size: "64m",
                                                            runtime: .seconds(2 * kills + 5)),
                                        output: mount.volume.root + "/fio.out")
        var pauses: [Duration] = []
        for _ in 0..<kills {
            try await Task.sleep(for: .milliseconds(400))
            guard fio.process.isRunning else { break }
            pauses.append(try await mount.killDaemon())
        }
        let (status, output) = try await fio.finish(timeout: .seconds(600))
        print("recovery pause over \(pauses.count) kills (fio 4 jobs randrw with verify running):\n\(Self.table(pauses))")
        #expect(pauses.count == kills, "fio finished after \(pauses.count) of \(kills) kills")
        #expect(status == 0, "fio failed:\n\(output)\ndaemon log:\n\(mount.log)")
        #expect(Fio.errors(output) == "0", "fio reported errors:\n\(output)")
        try await mount.stop()
    }
}
