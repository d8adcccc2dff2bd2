import Foundation
import HearthStore
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The collector against a writer that reuses old, unreachable chunks (a
/// deleted volume's data written again): the reuse freshens them, and the
/// sweep deletes only what is still stale when its turn comes, so the new
/// version never names a chunk the collector took.
@Suite("Collector races: dedup reuse of unreachable objects")
struct CollectorRaceTests {
    /// The worst interleaving, forced: the sweep has listed the old chunks as
    /// garbage and pauses; the writer uploads a version made of them (dedup
    /// hits, nothing rewritten); the sweep deletes; the writer commits.
    @Test func aWriterReusingUnreachableChunksDuringTheSweepLosesNothing() async throws {
        let root = temporaryDirectory()
        let store = try DirectoryStore(root: root)
        let catalog = Catalog(store)
        let old = try await catalog.createVolume(name: "old", capacityBytes: 1)
        _ = try await GarbageCollectionTests.commitFiles(catalog, volume: old.id, seed: 5, files: 6)
        try await catalog.deleteVolume(old.id)
        try backdate(root.path + "/objects", by: 7200)
        let reuse = try await catalog.createVolume(name: "reuse", capacityBytes: 1)

        let (listed, sweepListed) = AsyncStream.makeStream(of: Void.self)
        let uploaded = DispatchSemaphore(value: 0)
        let lastKind = "sweep \(ObjectKind.allCases.last!.rawValue)"
        let collector = GarbageCollector(store, grace: .seconds(3600), progress: { progress in
            guard progress.phase == lastKind else { return }
            sweepListed.yield()
            _ = uploaded.wait(timeout: .now() + 30)  // test only: hold the sweep before its deletes
        })
        async let collected = collector.run()
        var events = listed.makeAsyncIterator()
        _ = await events.next()
        let writer = try FileWriter(content: catalog.content, chunkSize: 4096)
        var builder = TreeBuilder(), sub = TreeBuilder()
        for i in 0..<6 {
            try sub.add(TreeEntry(name: "f\(i)", kind: .file),
                        manifest: try await writer.write(testBytes(4096 * 2 + 100, seed: 5000 + UInt64(i))))
        }
        try builder.addDirectory(TreeEntry(name: "d", kind: .directory), sub)
        let reusedRoot = try await builder.write(to: catalog.content)
        uploaded.signal()
        let report = try await collected
        sweepListed.finish()
        try await catalog.heads.commit(reuse.id, root: reusedRoot, logicalBytes: builder.logicalBytes,
                                       expected: try await catalog.heads.read(reuse.id))
        #expect(report.youngObjects > 0, "the reused objects were spared")

        let reader = VolumeReader(content: catalog.content, root: reusedRoot)
        for i in 0..<6 {
            #expect(try await reader.read("/d/f\(i)") == testBytes(4096 * 2 + 100, seed: 5000 + UInt64(i)))
        }
        #expect(try await StoreChecker(store).run().problems.isEmpty)
    }

    @Test(arguments: Backend.allCases)
    func freshenedObjectsAreNotStale(_ backend: Backend) async throws {
        let store = try await backend.makeStore()
        try await store.put("chunks/aa/kept", data: Data("kept".utf8), condition: .ifAbsent)
        try await store.put("chunks/aa/gone", data: Data("gone".utf8), condition: .ifAbsent)
        try await Task.sleep(for: .milliseconds(1100))  // S3 times have one-second resolution
        let cutoff = Date()
        try await Task.sleep(for: .milliseconds(1100))
        try await store.freshen("chunks/aa/kept")
        #expect(try await store.deleteIfStale("chunks/aa/kept", cutoff: cutoff) == false)
        #expect(try await store.get("chunks/aa/kept") == Data("kept".utf8))
        #expect(try await store.deleteIfStale("chunks/aa/gone", cutoff: cutoff) == true)
        await #expect(throws: StoreError.notFound("chunks/aa/gone")) { try await store.get("chunks/aa/gone") }
        #expect(try await store.deleteIfStale("chunks/aa/gone", cutoff: cutoff) == false)
        await #expect(throws: StoreError.self) { try await store.freshen("chunks/aa/gone") }
    }

    /// Temp files a crashed writer left a day ago are removed when the store opens.
    @Test func abandonedTempFilesAreRemovedAtOpen() throws {
        let root = temporaryDirectory()
        _ = try DirectoryStore(root: root)
        let abandoned = root.path + "/tmp/abandoned", live = root.path + "/tmp/live"
        FileManager.default.createFile(atPath: abandoned, contents: Data("x".utf8))
        FileManager.default.createFile(atPath: live, contents: Data("y".utf8))
        try backdate(root.path + "/tmp/abandoned", by: 2 * 86400)
        _ = try DirectoryStore(root: root)
        #expect(!FileManager.default.fileExists(atPath: abandoned))
        #expect(FileManager.default.fileExists(atPath: live))
    }

    /// Sets the modification time of `path` (and everything under it) `seconds` back.
    func backdate(_ path: String, by seconds: Int) throws {
        var paths = [path]
        if let enumerator = FileManager.default.enumerator(atPath: path) {
            paths += enumerator.compactMap { $0 as? String }.map { path + "/" + $0 }
        }
        var times = [timespec(tv_sec: time(nil) - seconds, tv_nsec: 0), timespec(tv_sec: time(nil) - seconds, tv_nsec: 0)]
        for item in paths where utimensat(AT_FDCWD, item, &times, 0) != 0 {
            throw StoreError.io("backdate \(item): errno \(errno)")
        }
    }
}

