import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// An S3 server on a free 127.0.0.1 port for the end-to-end runs: moto by
/// default; rclone's, which checks SigV4 keys strictly, where keys matter.
struct S3TestServer {
    let process: Process
    let port: Int
    var endpoint: String { "http://127.0.0.1:\(port)" }

    static func start() async throws -> S3TestServer {
        try await start { ["moto_server", "-H", "127.0.0.1", "-p", "\($0)"] }
    }

    /// rclone serving `root` (each directory a bucket), accepting only `keys`
    /// (access key id, secret).
    static func rclone(root: String, keys: [(String, String)]) async throws -> S3TestServer {
        try await start { port in
            ["rclone", "serve", "s3", "--addr", "127.0.0.1:\(port)", root] + keys.flatMap { ["--auth-key", "\($0),\($1)"] }
        }
    }

    static func start(_ command: (Int) -> [String]) async throws -> S3TestServer {
        let port = try freeTCPPort()
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = command(port)
        process.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
        process.standardError = FileHandle(forWritingAtPath: "/dev/null")
        try process.run()
        let server = S3TestServer(process: process, port: port)
        let giveUp = ContinuousClock.now + .seconds(30)
        while ContinuousClock.now < giveUp {
            if (try? await server.request("GET", "/")) != nil { return server }
            guard process.isRunning else { throw E2EError("\(command(port)[0]) exited; is it installed (.ci/setup)?") }
            try await Task.sleep(for: .milliseconds(100))
        }
        server.stop()
        throw E2EError("\(command(port)[0]) did not answer on port \(port)")
    }

    /// moto accepts unsigned requests unless told otherwise: enough to make a bucket.
    func createBucket(_ name: String) async throws {
        _ = try await request("PUT", "/\(name)")
    }

    func request(_ method: String, _ path: String) async throws -> Int {
        var request = URLRequest(url: URL(string: endpoint + path)!)
        request.httpMethod = method
        let (_, response) = try await URLSession.shared.data(for: request)
        return (response as? HTTPURLResponse)?.statusCode ?? 0
    }

    /// moto (werkzeug) may ignore SIGTERM while serving: SIGKILL after a grace.
    func stop() {
        process.terminate()
        for _ in 0..<50 where process.isRunning { usleep(20_000) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }
}

func freeTCPPort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let ok = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
    }
    guard ok else { throw E2EError("no free port") }
    return Int(UInt16(bigEndian: address.sin_port))
}
