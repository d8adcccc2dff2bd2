import Foundation

/// A shell command running in the background, its output kept in a file: the I/O
/// (fio, a metadata storm) that must carry on across a daemon kill or a node
/// plugin upgrade, shared by the FS and E2E tests.
public final class BackgroundCommand: @unchecked Sendable {
    // @unchecked: `process` is only asked whether it runs and how it ended
    // (thread-safe in Foundation), and the output is read once it exited.
    public let process = Process()
    public let outputPath: String

    public struct TimedOut: Error, CustomStringConvertible {
        public var description: String
    }

    public init(_ command: String, output: String) throws {
        outputPath = output
        _ = FileManager.default.createFile(atPath: output, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: output))
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", command]
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
    }

    /// Waits for the command; its exit status and output.
    public func finish(timeout: Duration = .seconds(300)) async throws -> (Int32, String) {
        let giveUp = ContinuousClock.now + timeout
        while process.isRunning {
            guard ContinuousClock.now < giveUp else {
                process.terminate()
                throw TimedOut(description: "timed out: \((try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? "")")
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        return (process.terminationStatus, (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? "")
    }
}

/// fio as the recovery tests run it.
public enum Fio {
    /// `jobs` jobs of 4 KiB random reads and writes, every block verified (crc32c),
    /// terse output (see ``errors(_:)``); with `runtime`, going on for that long.
    public static func mixedWithVerify(directory: String, size: String, jobs: Int = 4, runtime: Duration? = nil) -> String {
        "fio --name=mixed --directory=\(directory) --numjobs=\(jobs) --size=\(size) --bs=4k --rw=randrw --rwmixread=50 "
            + "--ioengine=psync --verify=crc32c --verify_backlog=64 --verify_fatal=1 --do_verify=1 --invalidate=0 "
            + "--verify_state_save=0 --group_reporting --output-format=terse --terse-version=3"
            + (runtime.map { " --time_based --runtime=\($0.components.seconds)" } ?? "")
    }

    /// fio's terse line: field 5 is the error count of the job group.
    public static func errors(_ output: String) -> String? {
        guard let line = output.split(separator: "\n").last(where: { $0.hasPrefix("3;") }) else { return nil }
        let fields = line.split(separator: ";", omittingEmptySubsequences: false)
        return fields.count > 4 ? String(fields[4]) : nil
    }
}
