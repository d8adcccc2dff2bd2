import Foundation
import HearthFUSE
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite("FUSE worker pool", .serialized)
struct WorkerPoolTests {
    /// Reads that reach the daemon (passthrough off, page cache dropped) are data
    /// operations: their worker hands the read turn on, and when no worker is free
    /// to take it the pool grows, never past --max-workers. Every byte read is right.
    @Test(.timeLimit(.minutes(2)))
    func concurrentReadsGrowThePoolToItsLimitAndNoFurther() async throws {
        let v = try await MountedVolume()
        defer { v.cleanup() }
        try v.start(extra: ["--passthrough", "off", "--max-workers", "3"])
        for i in 0..<6 {
            let bytes = patternBytes(8 << 20, seed: 40 + UInt64(i))
            try writeFile(v.path("f\(i)"), bytes, sync: true)
            try Data(bytes).write(to: URL(fileURLWithPath: v.root + "/expected\(i)"))
        }
        // xargs waits for its readers with waitpid: dash's `wait` slept forever
        // under the test runner (its sigsuspend never saw SIGCHLD).
        let script = """
        for round in 1 2 3; do
          echo 3 > /proc/sys/vm/drop_caches
          seq 0 5 | xargs -P 6 -I{} sh -c 'cat \(v.mountpoint)/f{} > \(v.root)/out{}' || exit 1
          for i in 0 1 2 3 4 5; do cmp \(v.root)/out$i \(v.root)/expected$i || exit 1; done
        done
        """
        let result = try sh(script)
        #expect(result.status == 0, "\(result.output)")
        let stats = try v.stats()
        #expect(stats.count("read") > 6 * 3)
        #expect(stats.workers == 3, "\(stats.workers) workers after 6 concurrent readers with --max-workers 3")
        try v.stop()
    }

    /// The worker serving an FSYNC waits for a commit of 256 MiB; it hands the read
    /// turn on first, so requests of other processes (CREATE always reaches the
    /// daemon) are served meanwhile rather than queued behind the commit.
    @Test(.timeLimit(.minutes(2)))
    func requestsAreServedWhileAnFsyncWaitsForItsCommit() async throws {
        let v = try await MountedVolume()
        defer { v.cleanup() }
        try v.start()
        try writeFile(v.path("big"), patternBytes(256 << 20, seed: 50))
        let fd = open(v.path("big"), O_RDWR)
        #expect(fd >= 0)
        let synced = Atomic<Int32>(-2)
        let fsyncer = Thread { synced.store(fsync(fd), ordering: .releasing) }
        fsyncer.start()
        // Let the FSYNC reach the daemon before the creates start.
        usleep(50_000)
        try FileManager.default.createDirectory(atPath: v.path("meanwhile"), withIntermediateDirectories: false)
        for i in 0..<20 { try writeFile(v.path("meanwhile/f\(i)"), [UInt8(i)]) }
        #expect(synced.load(ordering: .acquiring) == -2, "the creates waited for the fsync's commit")
        while synced.load(ordering: .acquiring) == -2 { usleep(10_000) }
        #expect(synced.load(ordering: .acquiring) == 0)
        close(fd)
        #expect(try FileManager.default.contentsOfDirectory(atPath: v.path("meanwhile")).count == 20)
        try v.stop()
    }

    /// The poll window's rule (haltpoll's): idle gaps within the limit grow the
    /// window to the limit in a few requests; gaps beyond it shrink it to nothing,
    /// so a slow, steady caller does not keep a CPU polling.
    @Test func pollWindowGrowsForBurstsAndShrinksForSparseRequests() {
        let rule = PollWindowRule(limitNs: 200_000)
        var window: UInt64 = 200_000
        var steps = 0
        while window > 0 {
            window = rule.next(after: window, idleNs: 1_000_000)  // a request every ms
            steps += 1
        }
        #expect(steps <= 6, "\(steps) sparse requests to stop polling")
        window = rule.next(after: window, idleNs: 30_000)  // a burst: 30 µs gaps
        #expect(window == PollWindowRule.floorNs)
        for _ in 0..<5 { window = rule.next(after: window, idleNs: 30_000) }
        #expect(window == 200_000)
        #expect(rule.next(after: 200_000, idleNs: 5_000) == 200_000, "never past the limit")
        #expect(PollWindowRule(limitNs: 0).next(after: 0, idleNs: 5_000) == 0, "--poll-window 0 never polls")
    }
}
