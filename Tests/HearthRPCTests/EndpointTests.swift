import Foundation
import HearthRPC
import XCTest

final class EndpointTests: XCTestCase {
    func testParsesTheCSISpellings() throws {
        XCTAssertEqual(try RPCEndpoint(parsing: "unix:///csi/csi.sock"), .unix(path: "/csi/csi.sock"))
        XCTAssertEqual(try RPCEndpoint(parsing: "unix:/csi/csi.sock"), .unix(path: "/csi/csi.sock"))
        XCTAssertEqual(try RPCEndpoint(parsing: "tcp://127.0.0.1:10000"), .tcp(host: "127.0.0.1", port: 10000))
        XCTAssertEqual(try RPCEndpoint(parsing: "localhost:9"), .tcp(host: "localhost", port: 9))
        XCTAssertEqual(try RPCEndpoint(parsing: "tcp://[::1]:80"), .tcp(host: "::1", port: 80))
        for bad in ["", "unix://relative", "unix:", "tcp://host", "host:99999", ":80", "tcp://h:x"] {
            XCTAssertThrowsError(try RPCEndpoint(parsing: bad), bad)
        }
    }

    func testStaleSocketIsReplacedAndGetsMode0600() async throws {
        let path = temporarySocketPath("stale")
        // A socket file nobody listens on, as a crashed server leaves it.
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: path.utf8)
            raw[path.utf8.count] = 0
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        XCTAssertEqual(bound, 0)
        close(fd)
        XCTAssertTrue(FileManager.default.fileExists(atPath: path))

        let server = try EchoServer(endpoints: [.unix(path: path)])
        var info = stat()
        XCTAssertEqual(stat(path, &info), 0)
        XCTAssertEqual(info.st_mode & 0o777, 0o600)
        let channel = RPCChannel(endpoint: .unix(path: path))
        let reply = try await channel.unary("/test.Echo/Echo", [42])
        XCTAssertEqual(reply.message, [42])

        // A second server on a live socket is refused instead of stealing it.
        XCTAssertThrowsError(try EchoServer(endpoints: [.unix(path: path)])) { error in
            XCTAssertEqual((error as? RPCError)?.code, .failedPrecondition)
        }
        await channel.close()
        await server.server.shutdown(grace: .seconds(1))
        XCTAssertFalse(FileManager.default.fileExists(atPath: path), "the socket file is removed at shutdown")
    }

    func testConfigurableSocketMode() async throws {
        let path = temporarySocketPath("mode")
        var options = RPCServerOptions()
        options.socketMode = 0o660
        let server = try EchoServer(endpoints: [.unix(path: path)], options: options)
        var info = stat()
        XCTAssertEqual(stat(path, &info), 0)
        XCTAssertEqual(info.st_mode & 0o777, 0o660)
        await server.server.shutdown(grace: .seconds(1))
    }

    func testRegularFileAtSocketPathIsNotDeleted() throws {
        let path = temporarySocketPath("file")
        FileManager.default.createFile(atPath: path, contents: Data("keep".utf8))
        defer { unlink(path) }
        XCTAssertThrowsError(try EchoServer(endpoints: [.unix(path: path)]))
        XCTAssertEqual(FileManager.default.contents(atPath: path), Data("keep".utf8))
    }
}
