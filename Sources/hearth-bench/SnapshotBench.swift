import ArgumentParser
import CSIProto
import Foundation

/// CreateSnapshot and restore latency against the amount of data in the
/// volume, through a real `hearth serve`: Hearth pins a root, so both should
/// stay flat; a tar copy of the same bytes (what hostpath-style drivers do)
/// is timed beside for scale.
struct SnapshotBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "snapshot",
        abstract: "CreateSnapshot and restore latency for volumes of growing size, beside a tar copy of the same data.")

    @Option(help: "The hearth binary to serve CSI with.")
    var hearth = ".build/release/hearth"

    @Option(help: "Volume data sizes in MiB (comma-separated).")
    var sizes = "10,1024,10240"

    @Option(help: "Snapshots and restores timed per size.")
    var repeats = 5

    @Option(help: "Largest size (MiB) also copied with tar beside (a native copy is written for it).")
    var tarLimit = 1024

    func run() async throws {
        let sizesMiB = sizes.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !sizesMiB.isEmpty else { throw ValidationError("--sizes: e.g. 10,1024") }
        let fixture = try await ServeFixture(hearth: hearth, maxVolumes: 4 + sizesMiB.count * (repeats + 1), label: "snapbench")
        var rows: [[String]] = []
        do {
            for size in sizesMiB { rows.append(try await measure(size, fixture)) }
        } catch {
            await fixture.stop()
            throw error
        }
        await fixture.stop()
        print("CreateSnapshot and restore (CreateVolume from the snapshot, then NodeStage and the first 4 KiB read)")
        print("over \(repeats) runs per size, hearth serve on the embedded store (\(hearth))")
        let header = ["data", "write+commit s", "snapshot p50 ms", "snapshot max ms", "restore p50 ms", "restore max ms",
                      "stage+read p50 ms", "tar copy ms"]
        print(header.map { pad($0, 19) }.joined())
        for row in rows { print(row.map { pad($0, 19) }.joined()) }
    }

    /// Fills a fresh volume with `mebibytes` of distinct data through its FUSE
    /// mount (fsync'd, so committed), then times snapshots and restores.
    func measure(_ mebibytes: Int, _ fixture: ServeFixture) async throws -> [String] {
        let volume = try await fixture.createVolume("data-\(mebibytes)", bytes: Int64(mebibytes + 64) << 20)
        let mount = try await fixture.stage(volume.volumeID)
        let native = mebibytes <= tarLimit ? fixture.directory + "/native-\(mebibytes)" : nil
        let t0 = ContinuousClock.now
        try fill(mount + "/data.bin", mebibytes: mebibytes, alsoTo: native.map { $0 + "/data.bin" })
        let fillSeconds = (ContinuousClock.now - t0).microseconds / 1e6
        // Records are fsync'd: measuring while the kernel still writes back
        // gigabytes of the fill would time the disk queue, not the snapshot.
        sync()
        try await Task.sleep(for: .seconds(2))

        var snapshots: [Double] = [], restores: [Double] = [], stages: [Double] = []
        for run in 0..<repeats {
            var request = Csi_V1_CreateSnapshotRequest()
            request.name = "snap-\(mebibytes)-\(run)"
            request.sourceVolumeID = volume.volumeID
            var t = ContinuousClock.now
            let snapshot = try await fixture.call("Controller/CreateSnapshot", request, Csi_V1_CreateSnapshotResponse.self).snapshot
            snapshots.append((ContinuousClock.now - t).microseconds)
            guard snapshot.sizeBytes >= Int64(mebibytes) << 20 else {
                throw ValidationError("snapshot of \(mebibytes) MiB reports \(snapshot.sizeBytes) bytes")
            }

            t = ContinuousClock.now
            let restored = try await fixture.createVolume("restore-\(mebibytes)-\(run)", bytes: volume.capacityBytes,
                                                          from: snapshot.snapshotID)
            restores.append((ContinuousClock.now - t).microseconds)
            t = ContinuousClock.now
            let restoredMount = try await fixture.stage(restored.volumeID)
            try checkFirstBlock(restoredMount + "/data.bin")
            stages.append((ContinuousClock.now - t).microseconds)
            try await fixture.unstage(restored.volumeID)
        }
        try await fixture.unstage(volume.volumeID)

        var tarMilliseconds = "-"
        if let native {
            let t = ContinuousClock.now
            try tarCopy(native, to: native + ".copy")
            tarMilliseconds = String(format: "%.0f", (ContinuousClock.now - t).microseconds / 1000)
            try? FileManager.default.removeItem(atPath: native)
            try? FileManager.default.removeItem(atPath: native + ".copy")
        }
        let snap = LatencySummary(snapshots), restore = LatencySummary(restores), stage = LatencySummary(stages)
        return [mebibytes >= 1024 ? "\(mebibytes / 1024) GiB" : "\(mebibytes) MiB", String(format: "%.1f", fillSeconds),
                String(format: "%.2f", snap.p50), String(format: "%.2f", snap.max),
                String(format: "%.2f", restore.p50), String(format: "%.2f", restore.max),
                String(format: "%.1f", stage.p50), tarMilliseconds]
    }

    /// Distinct 1 MiB blocks (each starts with its index), so nothing dedups.
    func fill(_ path: String, mebibytes: Int, alsoTo native: String?) throws {
        var files = [try FileHandle(forWritingTo: create(path))]
        if let native {
            try FileManager.default.createDirectory(atPath: (native as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            files.append(try FileHandle(forWritingTo: create(native)))
        }
        var block = [UInt8](repeating: 0, count: 1 << 20)
        for index in 0..<mebibytes {
            block.withUnsafeMutableBytes { raw in
                let words = raw.bindMemory(to: UInt64.self)
                var x = UInt64(index) &* 0x9E37_79B9_7F4A_7C15 | 1
                for i in words.indices {
                    x ^= x << 13; x ^= x >> 7; x ^= x << 17
                    words[i] = x
                }
                words[0] = UInt64(index)
            }
            for file in files { try file.write(contentsOf: block) }
        }
        for file in files {
            try file.synchronize()
            try file.close()
        }
    }

    func create(_ path: String) throws -> URL {
        guard FileManager.default.createFile(atPath: path, contents: nil) else { throw ValidationError("cannot create \(path)") }
        return URL(fileURLWithPath: path)
    }

    /// The restored volume serves the first block of the source's data.
    func checkFirstBlock(_ path: String) throws {
        guard let handle = FileHandle(forReadingAtPath: path) else { throw ValidationError("restored volume lacks \(path)") }
        defer { try? handle.close() }
        let head = try handle.read(upToCount: 4096) ?? Data()
        guard head.count == 4096, head.prefix(8).allSatisfy({ $0 == 0 }) else {
            throw ValidationError("restored data differs from the source's")
        }
    }

    /// `tar -c | tar -x` of a directory, as hostpath-style snapshot drivers copy.
    func tarCopy(_ source: String, to target: String) throws {
        try FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: true)
        let shell = Process()
        shell.executableURL = URL(fileURLWithPath: "/bin/sh")
        shell.arguments = ["-c", "tar -C \"$1\" -cf - . | tar -C \"$2\" -xf - && sync", "sh", source, target]
        try shell.run()
        shell.waitUntilExit()
        guard shell.terminationStatus == 0 else { throw ValidationError("tar copy failed") }
    }
}
