import ArgumentParser
import Foundation
import HearthTestSupport

/// `hearth-bench upgrade`: the pause applications see while the node plugin is
/// replaced (issue 8, item 3). One volume is staged through `hearth serve`; fio runs
/// 4 jobs of 4 KiB random reads and writes with crc32c verification on it while a
/// new `hearth serve` takes the volume over from the running one, again and again.
/// The pause of each upgrade is the longest statfs issued during it (statfs always
/// reaches the daemon).
struct UpgradeBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "upgrade", abstract: "Node plugin upgrades under fio with verification: pause p50 / max.")

    @Option(help: "The hearth binary to serve CSI with.")
    var hearth: String = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("hearth").path

    @Option(help: "How many times the node plugin is replaced.")
    var upgrades: Int = 10

    func run() async throws {
        let fixture = try await ServeFixture(hearth: hearth, maxVolumes: 4, label: "upgrade-bench")
        do {
            try await measure(fixture)
        } catch {
            await fixture.stop()
            throw error
        }
        await fixture.stop()
    }

    private func measure(_ fixture: ServeFixture) async throws {
        let volume = try await fixture.createVolume("upgrade-bench", bytes: 4 << 30)
        let mount = try await fixture.stage(volume.volumeID)
        try FileManager.default.createDirectory(atPath: mount + "/fio", withIntermediateDirectories: true)
        let fio = Process()
        fio.executableURL = URL(fileURLWithPath: "/bin/sh")
        let output = fixture.directory + "/fio.out"
        let job = Fio.mixedWithVerify(directory: mount + "/fio", size: "64m", runtime: .seconds(upgrades * 4 + 6))
        fio.arguments = ["-c", "\(job) > \(output) 2>&1"]
        try fio.run()
        try await Task.sleep(for: .seconds(2))

        var pauses: [Double] = []
        for _ in 0..<upgrades {
            let probe = StatfsProbe(mount)
            try await fixture.upgradeServer()
            try await Task.sleep(for: .milliseconds(500))
            pauses.append(probe.stop())
            guard fio.isRunning else { break }
        }
        fio.waitUntilExit()
        let result = (try? String(contentsOfFile: output, encoding: .utf8)) ?? ""
        let errors = Fio.errors(result) ?? "?"
        let sorted = pauses.sorted()
        print("| upgrades | p50 pause ms | max pause ms | fio exit | fio errors |")
        print("|---|---|---|---|---|")
        print(String(format: "| %d | %.1f | %.1f | %d | %@ |", pauses.count, (sorted.isEmpty ? 0 : sorted[sorted.count / 2]) * 1000,
                     (sorted.last ?? 0) * 1000, fio.terminationStatus, errors))
        if fio.terminationStatus != 0 || errors != "0" { print(result) }
        try await fixture.unstage(volume.volumeID)
    }
}
