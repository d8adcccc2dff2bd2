import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Bursts of small files (untar, builds, the metadata benchmark): each gets a working
/// copy that a commit retires; dropped copies are kept as spares and reused
/// (`SpareWorkingCopies`), given back to the cache after the namespace lock is
/// released (`CacheRelease`), and dirty directories are encoded outside the lock
/// (`TreeSnapshot`). None of that may lose or mix up a byte.
@Suite("Small-file bursts", .serialized)
struct SmallFileBurstTests {
    @Test(arguments: [[], ["--passthrough", "off"]])
    func burstOfSmallFilesInNewNestedDirectoriesSurvivesRemount(extra: [String]) async throws {
        let v = try await MountedVolume()
        defer { v.cleanup() }
        try v.start(extra: extra)
        // New directories at three depths in one commit: each parent's tree needs the
        // hash its new subdirectory gets in that same commit.
        let dirs = ["burst", "burst/a", "burst/a/b"]
        for dir in dirs { try FileManager.default.createDirectory(atPath: v.path(dir), withIntermediateDirectories: false) }
        func content(_ dir: String, _ i: Int) -> [UInt8] { Array("\(dir)/f\(i) round".utf8) + patternBytes(i % 5 * 1000, seed: UInt64(i)) }
        for dir in dirs {
            for i in 0..<150 { try writeFile(v.path("\(dir)/f\(i)"), content(dir, i)) }
        }
        // fsync commits and waits: every closed file's working copy is then retired.
        try writeFile(v.path("burst/synced"), Array("synced".utf8), sync: true)
        let work = v.cacheDir + "/work/" + v.volumeID
        let spares = (try FileManager.default.contentsOfDirectory(atPath: work)).filter { $0.hasPrefix("spare.") }
        #expect(!spares.isEmpty, "retired working copies are kept for reuse")

        // Remove every other file, then a second burst that reuses the spares.
        for dir in dirs {
            for i in stride(from: 0, to: 150, by: 2) { #expect(unlink(v.path("\(dir)/f\(i)")) == 0) }
            for i in 150..<250 { try writeFile(v.path("\(dir)/f\(i)"), content(dir, i)) }
        }
        // A reused spare must start empty: a short file over a longer old one.
        for dir in dirs {
            for i in 150..<250 { #expect(try readFile(v.path("\(dir)/f\(i)")) == content(dir, i)) }
        }

        try v.stop()
        try v.start(extra: extra)
        for dir in dirs {
            let names = Set(try FileManager.default.contentsOfDirectory(atPath: v.path(dir)))
            for i in 0..<250 {
                let kept = i >= 150 || i % 2 == 1
                #expect(names.contains("f\(i)") == kept, "\(dir)/f\(i)")
                if kept { #expect(try readFile(v.path("\(dir)/f\(i)")) == content(dir, i)) }
            }
        }
        #expect(try readFile(v.path("burst/synced")) == Array("synced".utf8))
        try v.stop()
    }
}
