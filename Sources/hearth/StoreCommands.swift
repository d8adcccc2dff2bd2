import ArgumentParser
import Foundation
import HearthStore

/// `hearth store gc|check`: maintenance of the object store itself.
struct StoreCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "store",
        abstract: "Garbage-collect and verify the object store.",
        subcommands: [GC.self, Check.self])

    struct GC: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "gc",
            abstract: "Delete objects no volume or snapshot references, older than the grace period.")

        @OptionGroup var options: StoreOptions

        @Option(help: "Never delete objects younger than this (writes in progress): e.g. 1h, 30m.")
        var grace: String = "1h"

        @Flag(help: "Report what would be deleted without deleting.")
        var dryRun = false

        @Flag(help: "Allow a grace under 15m: safe only while nothing writes to the store.")
        var unsafeShortGrace = false

        func run() async throws {
            let grace = try Console.parseDuration(self.grace)
            // Writers freshen a reused object only once it is 10 minutes old; a
            // shorter grace could take one a writer is about to commit.
            guard grace >= .seconds(900) || unsafeShortGrace else {
                throw ValidationError("--grace \(self.grace) is under 15m: writers reusing old chunks could lose them; add --unsafe-short-grace if nothing writes now")
            }
            let collector = GarbageCollector(
                try options.open(), grace: grace, dryRun: dryRun,
                progress: { Console.progress("\($0.phase): \($0.done)") })
            let report = try await collector.run()
            Console.endProgress()
            if options.json {
                try Console.printJSON(report)
                return
            }
            Console.printTable(["", "OBJECTS", "BYTES"], [
                ["reachable", String(report.reachableObjects), Console.bytes(report.reachableBytes)],
                ["young (kept)", String(report.youngObjects), "-"],
                [dryRun ? "would delete" : "deleted", String(report.deletedObjects), Console.bytes(report.deletedBytes)],
            ])
            print("roots: \(report.roots)")
        }
    }

    struct Check: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Read every reachable object and verify it against its hash.")

        @OptionGroup var options: StoreOptions

        func run() async throws {
            let checker = StoreChecker(try options.open(), progress: { Console.progress("\($0.phase): \($0.done)") })
            let report = try await checker.run()
            Console.endProgress()
            if options.json {
                try Console.printJSON(report)
            } else {
                print("roots \(report.roots), trees \(report.trees), manifests \(report.manifests), chunks \(report.chunks), verified \(Console.bytes(report.bytesVerified))")
                for problem in report.problems { print("PROBLEM: \(problem)") }
                print(report.problems.isEmpty ? "store is consistent" : "\(report.problems.count) problem(s) found")
            }
            if !report.problems.isEmpty { throw ExitCode(2) }
        }
    }
}
