import Foundation
import Testing

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
}
