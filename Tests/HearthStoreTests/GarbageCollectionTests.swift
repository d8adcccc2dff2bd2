import Foundation
import HearthStore
import Synchronization
import Testing

@Suite("Garbage collection and check")
struct GarbageCollectionTests {
    /// Writes a volume version with `files` distinct files and commits it.
    static func commitFiles(_ catalog: Catalog, volume: String, seed: UInt64, files: Int) async throws -> ContentHash {
        let writer = try FileWriter(content: catalog.content, chunkSize: 4096)
        var builder = TreeBuilder()
        var sub = TreeBuilder()
        for i in 0..<files {
            let manifest = try await writer.write(testBytes(4096 * 2 + 100, seed: seed * 1000 + UInt64(i)))
            try sub.add(TreeEntry(name: "f\(i)", kind: .file), manifest: manifest)
        }
        try builder.addDirectory(TreeEntry(name: "d", kind: .directory), sub)
        let root = try await builder.write(to: catalog.content)
        try await catalog.heads.commit(volume, root: root, logicalBytes: builder.logicalBytes,
                                       expected: try await catalog.heads.read(volume))
        return root
    }

    @Test(arguments: Backend.allCases)
    func keepsEverythingReachableAndCollectsTheRest(_ backend: Backend) async throws {
        let store = try await backend.makeStore()
        let catalog = Catalog(store)
        let kept = try await catalog.createVolume(name: "kept", capacityBytes: 1)
        let snapped = try await catalog.createVolume(name: "snapped", capacityBytes: 1)
        let dropped = try await catalog.createVolume(name: "dropped", capacityBytes: 1)
        let keptRoot = try await Self.commitFiles(catalog, volume: kept.id, seed: 1, files: 3)
        let snappedRoot = try await Self.commitFiles(catalog, volume: snapped.id, seed: 2, files: 2)
        _ = try await catalog.createSnapshot(name: "pin", sourceVolumeID: snapped.id)
        _ = try await Self.commitFiles(catalog, volume: snapped.id, seed: 3, files: 2)  // head moves on; snapshot pins old root
        _ = try await Self.commitFiles(catalog, volume: dropped.id, seed: 4, files: 2)
        try await catalog.deleteVolume(dropped.id)

        let before = try await store.listAll(prefix: "chunks/").count
        // A long grace keeps everything: nothing is old enough.
        let young = try await GarbageCollector(store, grace: .seconds(3600)).run()
        #expect(young.deletedObjects == 0 && young.youngObjects > 0)
        let dry = try await GarbageCollector(store, grace: .zero, dryRun: true).run()
        #expect(dry.deletedObjects > 0)
        #expect(try await store.listAll(prefix: "chunks/").count == before)

        let report = try await GarbageCollector(store, grace: .zero).run()
        #expect(report.roots == 3)  // kept head, snapped head, snapshot
        // dropped's 2 files × 3 chunks, 2 manifests and 2 trees are gone, and so is
        // the empty tree every volume started from (no head points at it any more).
        #expect(report.deletedObjects == 2 * 3 + 2 + 2 + 1)
        #expect(report.deletedBytes > 0)
        #expect(try await store.listAll(prefix: "chunks/").count == before - 6)

        for (root, seed, files) in [(keptRoot, UInt64(1), 3), (snappedRoot, 2, 2)] {
            let reader = VolumeReader(content: catalog.content, root: root)
            for i in 0..<files {
                #expect(try await reader.read("/d/f\(i)") == testBytes(4096 * 2 + 100, seed: seed * 1000 + UInt64(i)))
            }
        }
        let check = try await StoreChecker(store).run()
        #expect(check.problems.isEmpty)
        #expect(check.roots == 3)
        #expect(try await GarbageCollector(store, grace: .zero).run().deletedObjects == 0)
    }

    @Test(arguments: Backend.allCases)
    func collectionWhileAnotherTaskWritesNeverLosesCommittedData(_ backend: Backend) async throws {
        let store = try await backend.makeStore()
        let catalog = Catalog(store)
        let volume = try await catalog.createVolume(name: "busy", capacityBytes: 1)
        let committed = CommittedVersions()
        let grace: Duration = .seconds(2)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                for round in 0..<6 {
                    let seed = UInt64(100 + round)
                    let root = try await Self.commitFiles(catalog, volume: volume.id, seed: seed, files: 3)
                    committed.versions.withLock { $0.append((root, seed)) }
                    try await Task.sleep(for: .milliseconds(300))
                }
            }
            group.addTask {
                for _ in 0..<4 {
                    _ = try await GarbageCollector(store, grace: grace).run()
                    try await Task.sleep(for: .milliseconds(250))
                }
            }
            try await group.waitForAll()
        }
        // The latest version is fully intact after every concurrent collection.
        let (root, seed) = try #require(committed.versions.withLock { $0.last })
        #expect(try await catalog.heads.read(volume.id).head.rootHash == root)
        let reader = VolumeReader(content: catalog.content, root: root)
        for i in 0..<3 {
            #expect(try await reader.read("/d/f\(i)") == testBytes(4096 * 2 + 100, seed: seed * 1000 + UInt64(i)))
        }
        #expect(try await StoreChecker(store).run().problems.isEmpty)
        // Once the grace period has passed, superseded versions are collected.
        try await Task.sleep(for: grace)
        let report = try await GarbageCollector(store, grace: grace).run()
        #expect(report.deletedObjects > 0)
        #expect(try await StoreChecker(store).run().problems.isEmpty)
    }

    @Test(arguments: Backend.allCases)
    func checkReportsMissingAndCorruptObjects(_ backend: Backend) async throws {
        let store = try await backend.makeStore()
        let catalog = Catalog(store)
        let volume = try await catalog.createVolume(name: "v", capacityBytes: 1)
        _ = try await Self.commitFiles(catalog, volume: volume.id, seed: 7, files: 2)
        let chunks = try await store.listAll(prefix: "chunks/")
        try await store.delete(chunks[0].key)
        try await overwriteBehindTheStore(store, key: chunks[1].key, data: Data(count: Int(chunks[1].size)))
        let report = try await StoreChecker(store).run()
        #expect(report.problems.count == 2)
        #expect(report.problems.contains { $0.contains("corrupt") })
        #expect(report.problems.contains { $0.contains("not found") })
        // Chunks are leaves the mark never reads; an unreadable tree, though, would
        // make the mark incomplete, so the collector must refuse to sweep.
        let trees = try await store.listAll(prefix: "trees/")
        for tree in trees { try await store.delete(tree.key) }
        await #expect(throws: StoreError.self) { try await GarbageCollector(store, grace: .zero).run() }
    }
}

/// Versions the writer task committed, shared with the test body.
final class CommittedVersions: Sendable {
    let versions = Mutex<[(ContentHash, UInt64)]>([])
}
