import Foundation
import HearthStore
import Testing

@Suite("Catalog: volume and snapshot records")
struct CatalogTests {
    @Test(arguments: Backend.allCases)
    func createIsIdempotentByNameAndRejectsMismatchedRecreate(_ backend: Backend) async throws {
        let catalog = Catalog(try await backend.makeStore())
        let pvc = PVCReference(namespace: "default", name: "data-0")
        let first = try await catalog.createVolume(name: "pvc-123", capacityBytes: 1 << 30, parameters: ["tier": "fast"], pvc: pvc)
        let again = try await catalog.createVolume(name: "pvc-123", capacityBytes: 1 << 30, parameters: ["tier": "fast"], pvc: pvc)
        #expect(first == again)
        await #expect(throws: StoreError.self) {
            try await catalog.createVolume(name: "pvc-123", capacityBytes: 2 << 30, parameters: ["tier": "fast"])
        }
        #expect(try await catalog.volume(named: "pvc-123") == first)
        #expect(try await catalog.volume(pvc: pvc) == first)
        #expect(try await catalog.volume(first.id) == first)
        let head = try await catalog.heads.read(first.id)
        #expect(head.head.generation == 1)

        let grown = try await catalog.setCapacity(first.id, capacityBytes: 4 << 30)
        #expect(grown.capacityBytes == 4 << 30)

        try await catalog.deleteVolume(first.id)
        try await catalog.deleteVolume(first.id)  // idempotent
        await #expect(throws: StoreError.notFound("volume \(first.id)")) { try await catalog.volume(first.id) }
        #expect(try await catalog.volume(named: "pvc-123") == nil)
        #expect(try await catalog.volume(pvc: pvc) == nil)
        let recreated = try await catalog.createVolume(name: "pvc-123", capacityBytes: 1, parameters: [:])
        #expect(recreated.id != first.id)
    }

    @Test(arguments: Backend.allCases)
    func snapshotsPinRootsAndRestoreIntoNewVolumes(_ backend: Backend) async throws {
        let store = try await backend.makeStore()
        let catalog = Catalog(store)
        let volume = try await catalog.createVolume(name: "src", capacityBytes: 1 << 20)
        var builder = TreeBuilder()
        try builder.add(TreeEntry(name: "f", kind: .file),
                        manifest: try await FileWriter(content: catalog.content).write(Data("snapshot me".utf8)))
        let root = try await builder.write(to: catalog.content)
        try await catalog.heads.commit(volume.id, root: root, logicalBytes: 11, expected: try await catalog.heads.read(volume.id))

        let snapshot = try await catalog.createSnapshot(name: "snap-1", sourceVolumeID: volume.id, groupID: "group-1")
        #expect(snapshot.rootHash == root && snapshot.logicalBytes == 11 && snapshot.groupID == "group-1")
        #expect(try await catalog.createSnapshot(name: "snap-1", sourceVolumeID: volume.id) == snapshot)
        let other = try await catalog.createVolume(name: "other", capacityBytes: 1)
        await #expect(throws: StoreError.self) { try await catalog.createSnapshot(name: "snap-1", sourceVolumeID: other.id) }

        let restored = try await catalog.createVolume(name: "restored", capacityBytes: 1 << 20, source: .snapshot(snapshot.id))
        let restoredRoot = try #require(try await catalog.heads.read(restored.id).head.rootHash)
        #expect(try await VolumeReader(content: catalog.content, root: restoredRoot).read("/f") == Data("snapshot me".utf8))
        let clone = try await catalog.createVolume(name: "clone", capacityBytes: 1 << 20, source: .volume(volume.id))
        #expect(try await catalog.heads.read(clone.id).head.rootHash == root)

        #expect(try await catalog.listSnapshots(sourceVolumeID: volume.id).records == [snapshot])
        #expect(try await catalog.listSnapshots(sourceVolumeID: other.id).records.isEmpty)
        try await catalog.deleteSnapshot(snapshot.id)
        try await catalog.deleteSnapshot(snapshot.id)
        #expect(try await catalog.listSnapshots().records.isEmpty)
        await #expect(throws: StoreError.notFound("volume vol-doesnotexist")) {
            try await catalog.createSnapshot(name: "x", sourceVolumeID: "vol-doesnotexist")
        }
    }

    @Test(arguments: Backend.allCases)
    func paginationOverMoreThanAThousandRecordsIsCompleteAndStable(_ backend: Backend) async throws {
        let catalog = Catalog(try await backend.makeStore())
        let count = 1030
        let created = try await withThrowingTaskGroup(of: String.self) { group in
            var ids: [String] = []
            var next = 0
            while next < count || !group.isEmpty {
                while next < count && next - ids.count < 16 {
                    let i = next
                    next += 1
                    group.addTask { try await catalog.createVolume(name: "v\(i)", capacityBytes: Int64(i)).id }
                }
                if let id = try await group.next() { ids.append(id) }
            }
            return ids
        }
        #expect(Set(created).count == count)
        var listed: [String] = []
        var token: String? = nil
        var pages = 0
        repeat {
            let page = try await catalog.listVolumes(maxEntries: 100, token: token)
            #expect(page.records.count <= 100)
            listed += page.records.map(\.id)
            token = page.nextToken
            pages += 1
        } while token != nil
        #expect(pages == 11)
        #expect(listed == created.sorted())
        // maxEntries 0: the server picks the page size, still complete with tokens.
        let firstPage = try await catalog.listVolumes()
        #expect(firstPage.records.count == 1000)
        let rest = try await catalog.listVolumes(token: firstPage.nextToken)
        #expect(rest.records.count == 30 && rest.nextToken == nil)
    }

    @Test(arguments: Backend.allCases)
    func garbageIdsAndTokensAreRejected(_ backend: Backend) async throws {
        let catalog = Catalog(try await backend.makeStore())
        for id in ["", "../../etc", "vol/../x", "VOL-UPPER", "-lead", String(repeating: "a", count: 65), "vol x", "vol\u{0}"] {
            await #expect(throws: StoreError.self) { try await catalog.volume(id) }
            await #expect(throws: StoreError.self) { try await catalog.deleteVolume(id) }
            await #expect(throws: StoreError.self) { try await catalog.snapshot(id) }
        }
        for token in ["not base64 !", "Li4vLi4vZXRj", "cmVjb3Jkcy92b2x1bWVzLy4uLw", "====", String(repeating: "A", count: 5000)] {
            do {
                _ = try await catalog.listVolumes(maxEntries: 10, token: token)
                Issue.record("token \(token) accepted")
            } catch StoreError.invalidArgument {}
        }
        await #expect(throws: StoreError.self) {
            try await catalog.createVolume(name: "x", capacityBytes: 1, pvc: PVCReference(namespace: "../kube-system", name: "a"))
        }
        #expect(Identifiers.generate("vol").count == 24)
        try Identifiers.validate(Identifiers.generate("snap"))
    }
}
