import Foundation
import HearthRPC
import Synchronization
import XCTest

/// Many calls at once with random client cancellations and short deadlines:
/// each must end with a status its situation allows, the server must keep
/// answering, and resident memory must level off across rounds.
final class StressTests: XCTestCase {
    enum Kind: CaseIterable { case plain, shortDeadline, cancelled }

    func testTenThousandCallsWithCancellationsAndDeadlines() async throws {
        let server = try EchoServer(endpoints: [.unix(path: temporarySocketPath("stress"))])
        let channel = RPCChannel(endpoint: server.dialEndpoint)
        let rounds = 5
        let callsPerRound = 2_000
        let concurrency = 100
        var rss: [Int] = []
        var tally: [String: Int] = [:]
        for round in 1...rounds {
            let counts = try await runRound(channel: channel, calls: callsPerRound, concurrency: concurrency)
            for (k, v) in counts { tally[k, default: 0] += v }
            // The server still answers promptly after the round.
            let reply = try await channel.unary("/test.Echo/Echo", Array("alive".utf8), timeout: .seconds(5))
            XCTAssertEqual(reply.message, Array("alive".utf8))
            rss.append(residentBytes())
            print("stress round \(round): \(callsPerRound) calls, rss \(rss.last! / 1024) KiB, \(counts.sorted { $0.key < $1.key })")
        }
        print("stress total: \(rounds * callsPerRound) calls at concurrency \(concurrency): \(tally.sorted { $0.key < $1.key })")
        XCTAssertEqual(tally.values.reduce(0, +), rounds * callsPerRound)
        XCTAssertEqual(tally["wrong"] ?? 0, 0, "calls ended with a status their situation does not allow")
        XCTAssertGreaterThan(tally["cancelled"] ?? 0, 0, "some cancellations must have landed")
        XCTAssertGreaterThan(tally["deadline"] ?? 0, 0, "some deadlines must have expired")
        // Memory levels off: after the warm-up rounds (allocator caches, and
        // the quarantine under AddressSanitizer), growth stays small.
        let growth = rss[rounds - 1] - rss[2]
        print("stress rss growth from round 3 to \(rounds): \(growth / 1024) KiB")
        XCTAssertLessThan(growth, 24 * 1024 * 1024, "resident memory keeps growing: \(rss)")
        try await waitFor { server.observed.running == 0 }
        await channel.close()
        await server.server.shutdown(grace: .seconds(2))
    }

    private func runRound(channel: RPCChannel, calls: Int, concurrency: Int) async throws -> [String: Int] {
        let next = Ticket()
        return await withTaskGroup(of: [String: Int].self) { group in
            for _ in 0..<concurrency {
                group.addTask {
                    var counts: [String: Int] = [:]
                    while true {
                        let i = next.take()
                        if i > calls { break }
                        counts[await Self.oneCall(channel, Kind.allCases[i % 3]), default: 0] += 1
                    }
                    return counts
                }
            }
            var total: [String: Int] = [:]
            for await counts in group { for (k, v) in counts { total[k, default: 0] += v } }
            return total
        }
    }

    /// Runs one call and classifies how it ended: "ok", "deadline",
    /// "cancelled", or "wrong" when the status is impossible for its kind.
    private static func oneCall(_ channel: RPCChannel, _ kind: Kind) async -> String {
        let sleep = Int.random(in: 0...8)
        do {
            switch kind {
            case .plain:
                let reply = try await channel.unary("/test.Echo/Sleep", Array("\(sleep)".utf8), timeout: .seconds(30))
                return reply.message == Array("slept \(sleep)".utf8) ? "ok" : "wrong"
            case .shortDeadline:
                _ = try await channel.unary("/test.Echo/Sleep", Array("\(sleep)".utf8), timeout: .milliseconds(Int.random(in: 1...6)))
                return "ok"
            case .cancelled:
                let task = Task { try await channel.unary("/test.Echo/Sleep", Array("\(sleep)".utf8), timeout: .seconds(30)) }
                try? await Task.sleep(for: .microseconds(Int.random(in: 0...6000)))
                task.cancel()
                _ = try await task.value
                return "ok"
            }
        } catch let error as RPCError {
            switch (kind, error.code) {
            case (.shortDeadline, .deadlineExceeded): return "deadline"
            case (.cancelled, .cancelled): return "cancelled"
            default: return "wrong"
            }
        } catch {
            return "wrong"
        }
    }
}

/// Hands out 1, 2, 3, … to concurrent workers.
final class Ticket: Sendable {
    private let counter = Atomic<Int>(0)
    func take() -> Int { counter.add(1, ordering: .relaxed).newValue }
}

/// This process's resident set size in bytes (from /proc/self/statm).
func residentBytes() -> Int {
    guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
    let fields = text.split(separator: " ")
    guard fields.count > 1, let pages = Int(fields[1]) else { return 0 }
    return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
}
