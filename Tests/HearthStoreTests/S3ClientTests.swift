import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import HearthStore
import Testing

/// The S3 client against real servers: moto behind a fault-injecting proxy, and
/// `rclone serve s3`, which verifies SigV4 signatures strictly.
@Suite("S3 client", .serialized)
struct S3ClientTests {
    /// A fault proxy in front of the shared moto.
    struct Proxy {
        let server: ServerProcess

        static func start(stallSeconds: Double = 3) async throws -> Proxy {
            let upstream = try await Moto.shared.endpoint()
            let script = supportScript("fault_proxy.py")
            let server = try await ServerProcess.start("python3") {
                [script, String($0), upstream.absoluteString, String(stallSeconds)]
            }
            return Proxy(server: server)
        }

        func plan(_ query: String) async throws {
            let url = URL(string: "http://127.0.0.1:\(server.port)/__fault__?\(query)")!
            let (data, _) = try await URLSession.shared.data(from: url)
            #expect(String(decoding: data, as: UTF8.self).contains("forwarded"))
        }
    }

    @Test func transientFaultsAreRetriedWithoutCorruption() async throws {
        let proxy = try await Proxy.start(stallSeconds: 3)
        defer { proxy.server.stop() }
        // A generous total: moto is shared with the other suites running in
        // parallel, and under load one exchange can take seconds.
        let retry = RetryPolicy(maxAttempts: 6, maxTotal: .seconds(90), baseDelay: .milliseconds(20),
                                maxDelay: .milliseconds(200), requestTimeout: .seconds(1))
        let bucket = Backend.uniqueBucket()
        let store = try await Backend.makeS3Store(endpoint: proxy.server.endpoint, retry: retry, bucket: bucket)
        let content = ContentStore(store)
        let data = testBytes(300_000, seed: 11)
        let writer = try FileWriter(content: content, chunkSize: 65536, parallelism: 1)

        try await proxy.plan("plan=503,drop,500,stall,429")
        let manifest = try await writer.write(data)
        try await proxy.plan("plan=drop,truncate,503,stall,corrupt,truncate")
        let reader = VolumeReader(content: content, root: try await content.putTree(.empty), parallelism: 1)
        #expect(try await reader.read(manifest, range: 0..<Int64(data.count)) == data)
        try await proxy.plan("plan=500,drop")
        #expect(try await store.listAll(prefix: "chunks/").count == manifest.chunks.count)

        // Once the budget is spent the error says so, with the last cause.
        try await proxy.plan("always=503")
        let clock = ContinuousClock()
        let started = clock.now
        do {
            _ = try await store.get(ObjectKind.chunk.key(manifest.chunks[0]))
            Issue.record("expected unavailable")
        } catch StoreError.unavailable(let message) {
            #expect(message.contains("6 attempt"))
            #expect(message.contains("SlowDown"))
        }
        #expect(clock.now - started < .seconds(10))
        try await proxy.plan("clear=1")
        // Retries did not duplicate or damage anything.
        #expect(try await content.chunk(manifest.chunks[0], length: 65536) == data.prefix(65536))
    }

    @Test func stalledServerIsAbandonedAfterTheTimeBudget() async throws {
        let proxy = try await Proxy.start(stallSeconds: 30)
        defer { proxy.server.stop() }
        let retry = RetryPolicy(maxAttempts: 10, maxTotal: .seconds(3), baseDelay: .milliseconds(20),
                                maxDelay: .milliseconds(100), requestTimeout: .milliseconds(700))
        let store = try await Backend.makeS3Store(endpoint: proxy.server.endpoint, retry: retry)
        try await proxy.plan("always=stall")
        let clock = ContinuousClock()
        let started = clock.now
        await #expect(throws: StoreError.self) { try await store.get("some/key") }
        #expect(clock.now - started < .seconds(6))
        try await proxy.plan("clear=1")
    }

    @Test func multipartUploadRoundTripsAndRespectsCreateIfAbsent() async throws {
        let endpoint = try await Moto.shared.endpoint()
        let store = try await Backend.makeS3Store(endpoint: endpoint, multipartThreshold: 6 << 20)
        let data = testBytes(11 << 20, seed: 12)  // three parts of 5 MiB, 5 MiB, 1 MiB
        let etag = try await store.put("big/object", data: data, condition: .ifAbsent)
        #expect(!etag.isEmpty)
        #expect(try await store.get("big/object") == data)
        #expect(try await store.get("big/object", range: 5_242_870..<5_242_890) == data.subdata(in: 5_242_870..<5_242_890))
        #expect(try await store.head("big/object").size == Int64(data.count))
        await #expect(throws: StoreError.alreadyExists("big/object")) {
            try await store.put("big/object", data: data, condition: .ifAbsent)
        }
    }

    @Test func missingBucketIsAClearError() async throws {
        let endpoint = try await Moto.shared.endpoint()
        let store = try await Backend.makeS3Store(endpoint: endpoint, createBucket: false)
        do {
            _ = try await store.get("x")
            Issue.record("expected an error")
        } catch StoreError.notFound(let message) {
            #expect(message.contains("bucket"))
        }
    }

    /// rclone verifies SigV4 strictly: correct keys work end to end (proving the
    /// signer), wrong ones fail fast with the server's message and no retries.
    @Test func signaturesAreAcceptedByAStrictServerAndWrongCredentialsFailClearly() async throws {
        let root = temporaryDirectory()
        let server = try await ServerProcess.start("rclone") {
            ["serve", "s3", "--auth-key", "hearthkey,hearthsecret", "--addr", "127.0.0.1:\($0)", root.path]
        }
        defer { server.stop() }
        let good = S3Credentials(accessKeyID: "hearthkey", secretAccessKey: "hearthsecret")
        let bucket = Backend.uniqueBucket()
        let store = try await Backend.makeS3Store(endpoint: server.endpoint, credentials: good, bucket: bucket)
        let data = testBytes(70_000, seed: 13)
        try await store.put("chunks/ab/odd-name_1.x", data: data, condition: .none)
        #expect(try await store.get("chunks/ab/odd-name_1.x") == data)
        #expect(try await store.list(prefix: "chunks/", startAfter: nil, continuationToken: nil, limit: 10).objects.count == 1)

        let bad = S3Credentials(accessKeyID: "hearthkey", secretAccessKey: "wrong-secret")
        let badStore = try await Backend.makeS3Store(endpoint: server.endpoint, credentials: bad, bucket: bucket, createBucket: false)
        let clock = ContinuousClock()
        let started = clock.now
        do {
            _ = try await badStore.get("chunks/ab/odd-name_1.x")
            Issue.record("wrong credentials were accepted")
        } catch StoreError.authentication(let message) {
            #expect(!message.isEmpty)
            #expect(!message.contains("wrong-secret"))
        }
        #expect(clock.now - started < .seconds(2))  // not retried
    }
}
