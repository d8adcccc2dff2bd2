import Foundation
import HearthStore
import Testing

/// The ObjectStore contract, proved on both backends with the same tests.
@Suite("ObjectStore contract")
struct ObjectStoreTests {
    @Test(arguments: Backend.allCases)
    func putGetHeadRangeDeleteRoundTrip(_ backend: Backend) async throws {
        let store = try await backend.makeStore()
        let data = testBytes(100_000, seed: 1)
        let etag = try await store.put("a/b/object", data: data, condition: .none)
        #expect(!etag.isEmpty)
        #expect(try await store.get("a/b/object") == data)
        #expect(try await store.get("a/b/object", range: 10..<20) == data.subdata(in: 10..<20))
        #expect(try await store.get("a/b/object", range: 99_990..<200_000) == data.subdata(in: 99_990..<100_000))
        let info = try await store.head("a/b/object")
        #expect(info.size == 100_000)
        #expect(info.etag == etag)
        #expect(abs(info.lastModified.timeIntervalSinceNow) < 120)
        try await store.put("empty", data: Data(), condition: .none)
        #expect(try await store.get("empty") == Data())
        try await store.delete("a/b/object")
        await #expect(throws: StoreError.notFound("a/b/object")) { try await store.get("a/b/object") }
        await #expect(throws: StoreError.notFound("a/b/object")) { try await store.head("a/b/object") }
        try await store.delete("a/b/object")  // deleting an absent key succeeds
    }

    @Test(arguments: Backend.allCases)
    func createIfAbsentRefusesExistingKey(_ backend: Backend) async throws {
        let store = try await backend.makeStore()
        try await store.put("k", data: Data("one".utf8), condition: .ifAbsent)
        await #expect(throws: StoreError.alreadyExists("k")) {
            try await store.put("k", data: Data("two".utf8), condition: .ifAbsent)
        }
        #expect(try await store.get("k") == Data("one".utf8))
    }

    @Test(arguments: Backend.allCases)
    func compareAndSwapLetsExactlyOneOfTwoWritersWin(_ backend: Backend) async throws {
        let store = try await backend.makeStore()
        let first = try await store.put("head", data: Data("v1".utf8), condition: .ifAbsent)
        // Two writers both read v1 and try to replace it.
        let second = try await store.put("head", data: Data("v2-a".utf8), condition: .ifMatch(first))
        await #expect(throws: StoreError.conflict("head")) {
            try await store.put("head", data: Data("v2-b".utf8), condition: .ifMatch(first))
        }
        #expect(try await store.get("head") == Data("v2-a".utf8))
        #expect(second != first)
        let third = try await store.put("head", data: Data("v3".utf8), condition: .ifMatch(second))
        #expect(third != second)
        if backend == .directory {
            // Identical bytes still get a new tag here; S3 tags are content MD5s,
            // which is why every head carries a generation (see docs/store.md).
            let fourth = try await store.put("head", data: Data("v3".utf8), condition: .ifMatch(third))
            #expect(fourth != third)
        }
        await #expect(throws: StoreError.self) {
            try await store.put("absent", data: Data(), condition: .ifMatch(third))
        }
    }

    /// Directory only: on S3 the atomicity of conditional writes is the server's
    /// guarantee (and moto's threaded server does not make it).
    @Test func concurrentCompareAndSwapHasOneWinner() async throws {
        let store = try await Backend.directory.makeStore()
        let etag = try await store.put("race", data: Data("0".utf8), condition: .ifAbsent)
        let results = await withTaskGroup(of: Bool.self) { group in
            for i in 0..<8 {
                group.addTask {
                    (try? await store.put("race", data: Data("\(i)".utf8), condition: .ifMatch(etag))) != nil
                }
            }
            return await group.reduce(into: [Bool]()) { $0.append($1) }
        }
        #expect(results.filter { $0 }.count == 1)
    }

    @Test(arguments: Backend.allCases)
    func listingIsOrderedPagedAndPrefixed(_ backend: Backend) async throws {
        let store = try await backend.makeStore()
        let keys = (0..<25).map { String(format: "p/%02d", $0) } + ["p.x", "p/a.b", "p/a/c", "q/1"]
        for key in keys { try await store.put(key, data: Data(key.utf8), condition: .none) }
        var seen: [String] = []
        var token: String? = nil
        repeat {
            let page = try await store.list(prefix: "p/", startAfter: nil, continuationToken: token, limit: 7)
            #expect(page.objects.count <= 7)
            seen += page.objects.map(\.key)
            token = page.nextContinuationToken
        } while token != nil
        let expected = keys.filter { $0.hasPrefix("p/") }.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
        #expect(seen == expected)
        let after = try await store.list(prefix: "p/", startAfter: "p/20", continuationToken: nil, limit: 100)
        #expect(after.objects.map(\.key) == expected.filter { $0 > "p/20" })
        #expect(after.nextContinuationToken == nil)
        let sizes = try await store.list(prefix: "q/", startAfter: nil, continuationToken: nil, limit: 10)
        #expect(sizes.objects.map(\.size) == [3])
    }

    @Test(arguments: Backend.allCases)
    func garbageKeysAreRejectedBeforeReachingTheBackend(_ backend: Backend) async throws {
        let store = try await backend.makeStore()
        for key in ["", "/abs", "a/../b", "..", "a//b", "a/./b", "sp ace", "nul\u{0}", "ü"] {
            await #expect(throws: StoreError.self) { try await store.put(key, data: Data(), condition: .none) }
            await #expect(throws: StoreError.self) { try await store.get(key) }
        }
    }

    @Test func directoryStoreSurvivesReopenAndKeepsNoTempFiles() async throws {
        let root = temporaryDirectory()
        let store = try DirectoryStore(root: root)
        try await store.put("x/y", data: Data("hello".utf8), condition: .ifAbsent)
        _ = try? await store.put("x/y", data: Data("again".utf8), condition: .ifAbsent)
        let reopened = try DirectoryStore(root: root)
        #expect(try await reopened.get("x/y") == Data("hello".utf8))
        let temps = try FileManager.default.contentsOfDirectory(atPath: root.appendingPathComponent("tmp").path)
        #expect(temps.isEmpty)
    }

    /// Deferred content reads back before the flush (from its temp file) and after it
    /// is under its key with no temp file left, for a batch synced object by object
    /// (a few) and one synced with syncfs (many).
    @Test(arguments: [3, DirectoryStore.individualSyncLimit + 40])
    func deferredContentAppearsWholeAtTheFlush(_ count: Int) async throws {
        let root = temporaryDirectory()
        let store = try DirectoryStore(root: root)
        let objects = (0..<count).map { ("chunks/t\($0 % 7)/c\($0)", testBytes(100 + $0, seed: UInt64($0))) }
        for (key, data) in objects { try await store.putContent(key, data: data) }
        #expect(try await store.get(objects[0].0) == objects[0].1)
        try await store.flush()
        let stored = root.appendingPathComponent("objects").path
        for (key, _) in objects { #expect(FileManager.default.fileExists(atPath: stored + "/" + key), "\(key) linked") }
        for (key, data) in objects { #expect(try await store.get(key) == data, "\(key)") }
        let temps = try FileManager.default.contentsOfDirectory(atPath: root.appendingPathComponent("tmp").path)
        #expect(temps.isEmpty, "temp files left: \(temps.count)")
    }

    /// A batch keeps each name once, says when it is full, and every object it
    /// held reads back verified after the flush, including one stored before it
    /// and one added twice.
    @Test(arguments: Backend.allCases)
    func contentBatchStoresEachObjectOnce(_ backend: Backend) async throws {
        let content = ContentStore(try await backend.makeStore())
        let earlier = try await content.put(.chunk, Data("stored before".utf8))
        var batch = ContentBatch()
        var expected: [(ContentHash, Data)] = []
        for i in 0..<(ContentBatch.maxObjects - 1) {
            let data = testBytes(50 + i, seed: UInt64(i))
            let hash = ContentHash.of(data)
            let added = batch.add(.chunk, data, hash: hash)
            #expect(added)
            expected.append((hash, data))
        }
        #expect(!batch.isFull)
        let again = batch.add(.chunk, expected[7].1, hash: expected[7].0)
        #expect(!again, "a name already in the batch")
        let stored = batch.add(.chunk, Data("stored before".utf8), hash: earlier)
        #expect(stored)
        #expect(batch.isFull && batch.objects.count == ContentBatch.maxObjects)
        try await content.put(batch)
        try await content.objects.flush()
        for (hash, data) in expected { #expect(try await content.get(.chunk, hash) == data) }
        #expect(try await content.get(.chunk, earlier) == Data("stored before".utf8))
        var big = ContentBatch()
        big.add(.chunk, Data(count: ContentBatch.maxBytes), hash: ContentHash.of(Data(count: ContentBatch.maxBytes)))
        #expect(big.isFull, "the byte bound")
    }

    @Test func storeURLsParseAndRejectNonsense() throws {
        #expect(try StoreLocation("file:///var/x") == .directory("/var/x"))
        #expect(try StoreLocation("s3://bucket/pre/fix") == .s3(bucket: "bucket", prefix: "pre/fix/"))
        #expect(try StoreLocation("s3://bucket") == .s3(bucket: "bucket", prefix: ""))
        for bad in ["http://x", "file://relative", "s3://UPPER/x", "s3://b/../x", "nonsense"] {
            #expect(throws: StoreError.self) { try StoreLocation(bad) }
        }
    }

    @Test func credentialsNeverAppearInDescriptions() throws {
        let credentials = S3Credentials(accessKeyID: "AKIDEXAMPLE", secretAccessKey: "wJalrXUtnFEMI/K7MDENG", sessionToken: "tok3n")
        for text in ["\(credentials)", String(describing: credentials), String(reflecting: credentials)] {
            #expect(!text.contains("wJalrXUtnFEMI"))
            #expect(!text.contains("tok3n"))
            #expect(text.contains("AKIDEXAMPLE"))
        }
        let file = temporaryDirectory().appendingPathComponent("credentials")
        try "[default]\naws_access_key_id = AK\naws_secret_access_key = SK\n".write(to: file, atomically: true, encoding: .utf8)
        #expect(try S3Credentials.fromFile(file.path) == S3Credentials(accessKeyID: "AK", secretAccessKey: "SK"))
        #expect(S3Credentials.fromEnvironment(["AWS_ACCESS_KEY_ID": "A", "AWS_SECRET_ACCESS_KEY": "B"])?.accessKeyID == "A")
        #expect(S3Credentials.fromEnvironment([:]) == nil)
    }
}
