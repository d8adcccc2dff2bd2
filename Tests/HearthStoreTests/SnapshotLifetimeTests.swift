import Foundation
import HearthStore
import Testing

/// Issue 7's lifetimes: a volume, its snapshot, a volume restored from the
/// snapshot and a clone of that restore share chunks. Whatever order they
/// are deleted in (all 24 on a directory, 8 on S3), with a collection after
/// every step, what is left reads back whole, and once everything is gone
/// nothing of their data remains.
@Suite("Snapshot lifetimes: deletion orders")
struct SnapshotLifetimeTests {
    enum Thing: String, CaseIterable, CustomStringConvertible {
        case volume, snapshot, restored, cloneOfRestored
        var description: String { rawValue }
    }

    static let orders: [[Thing]] = permutations(Thing.allCases)

    static func permutations(_ items: [Thing]) -> [[Thing]] {
        guard items.count > 1 else { return [items] }
        return items.indices.flatMap { i in
            var rest = items
            let first = rest.remove(at: i)
            return permutations(rest).map { [first] + $0 }
        }
    }

    /// All 24 orders on a directory; on S3 the 4 rotations and their reverses
    /// (each thing deleted first once and last once), which keeps the shared
    /// moto server responsive for the fault-injection tests running beside.
    static func orders(for backend: Backend) -> [[Thing]] {
        guard backend == .s3 else { return orders }
        let all = Thing.allCases
        let rotations = all.indices.map { Array(all[$0...] + all[..<$0]) }
        return rotations + rotations.map { $0.reversed() }
    }

    @Test(arguments: Backend.allCases)
    func deletionOrdersKeepTheRestWhole(_ backend: Backend) async throws {
        #expect(Self.orders.count == 24)
        #expect(Set(Self.orders(for: .s3).map { $0.first! }).count == 4)
        for order in Self.orders(for: backend) {
            let store = try await backend.makeStore()
            let catalog = Catalog(store)
            let source = try await catalog.createVolume(name: "src", capacityBytes: 1 << 20)
            let root = try await GarbageCollectionTests.commitFiles(catalog, volume: source.id, seed: 42, files: 3)
            let snapshot = try await catalog.createSnapshot(name: "snap", sourceVolumeID: source.id)
            // The source moves on: the snapshot alone now pins `root`.
            let later = try await GarbageCollectionTests.commitFiles(catalog, volume: source.id, seed: 43, files: 2)
            let restored = try await catalog.createVolume(name: "restored", capacityBytes: 1 << 20, source: .snapshot(snapshot.id))
            let clone = try await catalog.createVolume(name: "clone", capacityBytes: 1 << 20, source: .volume(restored.id))
            // The clone is copy-on-write: its own commit leaves the restore untouched.
            let cloneRoot = try await GarbageCollectionTests.commitFiles(catalog, volume: clone.id, seed: 44, files: 1)

            var alive = Set(Thing.allCases)
            for thing in order {
                switch thing {
                case .volume: try await catalog.deleteVolume(source.id)
                case .snapshot: try await catalog.deleteSnapshot(snapshot.id)
                case .restored: try await catalog.deleteVolume(restored.id)
                case .cloneOfRestored: try await catalog.deleteVolume(clone.id)
                }
                alive.remove(thing)
                _ = try await GarbageCollector(store, grace: .zero).run()
                let survivors: [(String, ContentHash, UInt64, Int)] = alive.map {
                    switch $0 {
                    case .volume: ("volume", later, 43, 2)
                    case .snapshot: ("snapshot", root, 42, 3)
                    case .restored: ("restored", root, 42, 3)
                    case .cloneOfRestored: ("clone", cloneRoot, 44, 1)
                    }
                }
                for (name, survivorRoot, seed, files) in survivors {
                    let reader = VolumeReader(content: catalog.content, root: survivorRoot)
                    for i in 0..<files {
                        #expect(try await reader.read("/d/f\(i)") == testBytes(4096 * 2 + 100, seed: seed * 1000 + UInt64(i)),
                                "\(name) after deleting \(order.prefix(while: { $0 != thing }) + [thing])")
                    }
                }
                #expect(try await StoreChecker(store).run().problems.isEmpty, "after deleting \(thing) in \(order)")
            }
            #expect(try await store.listAll(prefix: "chunks/").isEmpty, "chunks left after deleting all in \(order)")
            #expect(try await store.listAll(prefix: "trees/").isEmpty, "trees left after deleting all in \(order)")
        }
    }

    @Test(arguments: Backend.allCases)
    func cloneOfACloneIsO1AndCopyOnWrite(_ backend: Backend) async throws {
        let store = try await backend.makeStore()
        let catalog = Catalog(store)
        let source = try await catalog.createVolume(name: "src", capacityBytes: 1 << 20)
        let root = try await GarbageCollectionTests.commitFiles(catalog, volume: source.id, seed: 7, files: 2)
        let objectsBefore = try await store.listAll(prefix: "").count
        let first = try await catalog.createVolume(name: "clone-1", capacityBytes: 1 << 20, source: .volume(source.id))
        let second = try await catalog.createVolume(name: "clone-2", capacityBytes: 1 << 20, source: .volume(first.id))
        // O(1): records only (volume, name index, head per clone), no data objects copied.
        let added = try await store.listAll(prefix: "").count - objectsBefore
        #expect(added <= 8, "a clone wrote \(added) objects")
        #expect(try await catalog.heads.read(second.id).head.rootHash == root)
        // Writes to the middle clone and to the source reach neither the other clones nor the source.
        let firstRoot = try await GarbageCollectionTests.commitFiles(catalog, volume: first.id, seed: 8, files: 1)
        _ = try await GarbageCollectionTests.commitFiles(catalog, volume: source.id, seed: 9, files: 1)
        #expect(try await catalog.heads.read(second.id).head.rootHash == root)
        #expect(try await catalog.heads.read(first.id).head.rootHash == firstRoot)
        try await catalog.deleteVolume(source.id)
        try await catalog.deleteVolume(first.id)
        _ = try await GarbageCollector(store, grace: .zero).run()
        let reader = VolumeReader(content: catalog.content, root: root)
        for i in 0..<2 {
            #expect(try await reader.read("/d/f\(i)") == testBytes(4096 * 2 + 100, seed: 7 * 1000 + UInt64(i)))
        }
    }
}
