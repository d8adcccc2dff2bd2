import Foundation
import HearthStore
import Testing

/// Files, trees, heads and integrity on both backends.
@Suite("Volume data model")
struct VolumeDataTests {
    static let chunk = 64 << 10  // small chunks keep multi-chunk files cheap in tests

    @Test(arguments: Backend.allCases)
    func emptySmallAndMultiChunkFilesRoundTrip(_ backend: Backend) async throws {
        let content = ContentStore(try await backend.makeStore())
        let writer = try FileWriter(content: content, chunkSize: Self.chunk, parallelism: 4)
        var builder = TreeBuilder()
        let files: [(String, Data)] = [
            ("empty", Data()),
            ("small", Data("hello, hearth".utf8)),
            ("exact", testBytes(Self.chunk * 2, seed: 2)),
            ("multi", testBytes(Self.chunk * 5 + 1234, seed: 3)),
        ]
        for (name, data) in files {
            let manifest = try await writer.write(data)
            #expect(manifest.size == Int64(data.count))
            #expect(manifest.chunks.count == Manifest.chunkCount(size: Int64(data.count), chunkSize: Self.chunk))
            try builder.add(TreeEntry(name: name, kind: .file, mode: 0o640, uid: 1000, gid: 1000, mtimeNs: 1_700_000_000_123_456_789,
                                      inode: 42, xattrs: ["user.tag": Data("x".utf8)]), manifest: manifest)
        }
        var sub = TreeBuilder()
        try sub.add(TreeEntry(name: "link", kind: .symlink, mode: 0o777, size: 5, symlinkTarget: "../small"))
        try sub.add(TreeEntry(name: "dev", kind: .charDevice, mode: 0o600, rdev: 0x0103))
        try builder.addDirectory(TreeEntry(name: "dir", kind: .directory, mode: 0o755), sub)
        let root = try await builder.write(to: content)

        let reader = VolumeReader(content: content, root: root)
        for (name, data) in files {
            #expect(try await reader.read("/\(name)") == data)
        }
        let multi = files[3].1
        let range: Range<Int64> = Int64(Self.chunk - 10)..<Int64(Self.chunk * 3 + 7)
        #expect(try await reader.read("/multi", range: range) == multi.subdata(in: Int(range.lowerBound)..<Int(range.upperBound)))
        #expect(try await reader.read("/multi", range: 0..<0) == Data())
        let entry = try #require(try await reader.resolve("/small"))
        #expect(entry.mode == 0o640 && entry.uid == 1000 && entry.inode == 42 && entry.mtimeNs == 1_700_000_000_123_456_789)
        #expect(entry.xattrs["user.tag"] == Data("x".utf8))
        #expect(try await reader.list("/dir").map(\.name) == ["dev", "link"])
        #expect(try await reader.resolve("/dir/link")?.symlinkTarget == "../small")
        #expect(try await reader.resolve("/dir/dev")?.rdev == 0x0103)
        await #expect(throws: StoreError.notFound("/nope")) { try await reader.resolve("/nope") }
    }

    @Test(arguments: Backend.allCases)
    func identicalContentIsStoredOnceAndZeroChunksNotAtAll(_ backend: Backend) async throws {
        let store = try await backend.makeStore()
        let content = ContentStore(store)
        let writer = try FileWriter(content: content, chunkSize: Self.chunk)
        let block = testBytes(Self.chunk, seed: 9)
        // Four identical chunks, a hole, then the same block again.
        let data = block + block + block + block + Data(count: Self.chunk) + block
        let first = try await writer.write(data)
        let second = try await writer.write(data)
        #expect(first == second)
        #expect(Set(first.chunks).count == 2)
        #expect(first.chunks[4] == .zero)
        try await store.flush()
        let chunks = try await store.listAll(prefix: "chunks/")
        #expect(chunks.count == 1)
        let reader = VolumeReader(content: content, root: try await content.putTree(.empty))
        #expect(try await reader.read(first, range: 0..<Int64(data.count)) == data)
    }

    @Test(arguments: Backend.allCases)
    func twoWritersCommittingFromTheSameHeadConflict(_ backend: Backend) async throws {
        let store = try await backend.makeStore()
        let content = ContentStore(store)
        let heads = VolumeHeads(store)
        try await heads.create("vol-test", root: try await content.putTree(.empty), logicalBytes: 0)
        let base = try await heads.read("vol-test")

        func rootWith(_ name: String) async throws -> ContentHash {
            var builder = TreeBuilder()
            try builder.add(TreeEntry(name: name, kind: .file), manifest: try await FileWriter(content: content).write(Data(name.utf8)))
            return try await builder.write(to: content)
        }
        let rootA = try await rootWith("a")
        let rootB = try await rootWith("b")
        let committed = try await heads.commit("vol-test", root: rootA, logicalBytes: 1, expected: base)
        #expect(committed.head.generation == 2)
        await #expect(throws: StoreError.conflict("volumes/vol-test/head")) {
            try await heads.commit("vol-test", root: rootB, logicalBytes: 1, expected: base)
        }
        // The loser rebases on the new head and succeeds.
        let rebased = try await heads.commit("vol-test", root: rootB, logicalBytes: 1, expected: try await heads.read("vol-test"))
        #expect(rebased.head.generation == 3)
        #expect(try await heads.read("vol-test").head.rootHash == rootB)
    }

    @Test(arguments: Backend.allCases)
    func corruptedObjectsAreDetectedAndNeverReturned(_ backend: Backend) async throws {
        let store = try await backend.makeStore()
        let content = ContentStore(store)
        let data = testBytes(Self.chunk * 2, seed: 5)
        let manifest = try await FileWriter(content: content, chunkSize: Self.chunk).write(data)
        let victim = manifest.chunks[1]
        try await store.flush()
        // Flip bytes in the stored chunk behind the store's back (same length).
        var bad = try await store.get(ObjectKind.chunk.key(victim))
        bad[100] ^= 0xFF
        try await overwriteBehindTheStore(store, key: ObjectKind.chunk.key(victim), data: bad)
        let reader = VolumeReader(content: content, root: try await content.putTree(.empty))
        await #expect(throws: StoreError.self) { try await reader.read(manifest, range: 0..<Int64(data.count)) }
        // The untouched first chunk still reads.
        #expect(try await reader.read(manifest, range: 0..<10) == data.prefix(10))
        do {
            _ = try await content.chunk(victim, length: Self.chunk)
            Issue.record("corrupt chunk was returned")
        } catch StoreError.corrupt(let key, _) {
            #expect(key == ObjectKind.chunk.key(victim))
        }
        // A garbage tree object is reported as corrupt, not a crash.
        let treeHash = try await content.putTree(.empty)
        try await store.flush()
        try await overwriteBehindTheStore(store, key: ObjectKind.tree.key(treeHash), data: Data("garbage".utf8))
        await #expect(throws: StoreError.self) { try await content.tree(treeHash) }
    }

    @Test func treeAndManifestEncodingsRoundTripAndRejectGarbage() throws {
        var entries: [TreeEntry] = []
        for i in 0..<50 {
            let kind: EntryKind = i % 2 == 0 ? .file : .directory
            let xattrs: [String: Data] = i == 3 ? ["user.a": Data([0, 1, 2])] : [:]
            let size = Int64(i * 1000)
            let mtime = Int64(i) << 40
            entries.append(TreeEntry(
                name: "file-\(i)-ü", kind: kind, mode: 0o644, uid: UInt32(i), gid: 7, size: size, atimeNs: -5,
                mtimeNs: mtime, ctimeNs: 3, inode: UInt64(i + 2), nlink: 2, xattrs: xattrs,
                child: ContentHash.of(Data("\(i)".utf8))))
        }
        let tree = try Tree(entries: entries.reversed())
        let encoded = tree.encoded()
        #expect(try Tree.decode(encoded) == tree)
        #expect(encoded.count < 50 * 80)  // compact: well under JSON's size

        let manifest = Manifest(size: 3 * 4096 + 1, chunkSize: 4096,
                                chunks: (0..<4).map { ContentHash.of(Data([UInt8($0)])) })
        #expect(try Manifest.decode(manifest.encoded()) == manifest)

        // Every truncation and a sweep of single-byte corruptions must throw, not trap.
        for cut in 0..<encoded.count {
            #expect(throws: StoreError.self) { try Tree.decode(encoded.prefix(cut)) }
        }
        let manifestBlob = manifest.encoded()
        for cut in 0..<manifestBlob.count {
            #expect(throws: StoreError.self) { try Manifest.decode(manifestBlob.prefix(cut)) }
        }
        #expect(throws: StoreError.self) { try Manifest.decode(manifestBlob + [0]) }
        for blob in [encoded, manifestBlob] {
            for i in stride(from: 0, to: blob.count, by: 3) {
                var mutated = blob
                mutated[i] ^= 0xA5
                _ = try? Tree.decode(mutated)
                _ = try? Manifest.decode(mutated)
            }
        }
        for seed in 0..<200 {
            let noise = testBytes(seed % 97, seed: UInt64(seed))
            _ = try? Tree.decode(Data("HTR".utf8) + [1] + noise)
            _ = try? Manifest.decode(Data("HMF".utf8) + [1] + noise)
        }
        #expect(throws: StoreError.self) { try Tree(entries: [TreeEntry(name: "..", kind: .fifo)]) }
        #expect(throws: StoreError.self) { try Tree(entries: [TreeEntry(name: "a/b", kind: .fifo)]) }
        #expect(throws: StoreError.self) {
            try Tree(entries: [TreeEntry(name: "a", kind: .fifo), TreeEntry(name: "a", kind: .socket)])
        }
    }
}

/// Replaces an object's bytes without going through the content-addressed layer, as
/// bit rot or a buggy tool would: on disk directly, in the bucket by a raw PUT.
func overwriteBehindTheStore(_ store: any ObjectStore, key: String, data: Data) async throws {
    if let directory = store as? DirectoryStore {
        let path = directory.root.appendingPathComponent("objects/\(key)").path
        let handle = try #require(FileHandle(forWritingAtPath: path))
        try handle.truncate(atOffset: 0)
        try handle.write(contentsOf: data)
        try handle.close()
    } else {
        try await store.put(key, data: data, condition: .none)
    }
}
