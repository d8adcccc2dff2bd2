import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Where a gRPC server listens or a client connects, in the CSI drivers'
/// spelling: `unix:///path/csi.sock`, `unix:/path`, `tcp://host:port` or `host:port`.
public enum RPCEndpoint: Sendable, Equatable, CustomStringConvertible {
    case unix(path: String)
    case tcp(host: String, port: Int)

    public init(parsing text: String) throws {
        if text.hasPrefix("unix://") {
            let path = String(text.dropFirst("unix://".count))
            guard path.hasPrefix("/") else {
                throw RPCError(.invalidArgument, "endpoint \(text): unix:// needs an absolute path (unix:///path/to.sock)")
            }
            self = .unix(path: path)
        } else if text.hasPrefix("unix:") {
            let path = String(text.dropFirst("unix:".count))
            guard !path.isEmpty else { throw RPCError(.invalidArgument, "endpoint \(text): empty socket path") }
            self = .unix(path: path)
        } else {
            let rest = text.hasPrefix("tcp://") ? String(text.dropFirst("tcp://".count)) : text
            guard let colon = rest.lastIndex(of: ":"), let port = Int(rest[rest.index(after: colon)...]),
                  (0...65535).contains(port)
            else {
                throw RPCError(.invalidArgument, "endpoint \(text): expected unix:///path, tcp://host:port or host:port")
            }
            var host = String(rest[..<colon])
            if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
            guard !host.isEmpty else { throw RPCError(.invalidArgument, "endpoint \(text): missing host") }
            self = .tcp(host: host, port: port)
        }
    }

    /// The address as the C core spells it.
    var coreAddress: String {
        switch self {
        case .unix(let path): "unix:\(path)"
        case .tcp(let host, let port): host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        }
    }

    public var description: String {
        switch self {
        case .unix(let path): "unix://\(path)"
        case .tcp: "tcp://\(coreAddress)"
        }
    }
}

/// Socket-file housekeeping for unix endpoints.
enum UnixSocketFile {
    /// Removes a socket file left by a server that is gone. A socket that
    /// still accepts connections belongs to a live server: that is an error,
    /// never silently stolen. Anything that is not a socket is left alone.
    static func removeIfStale(_ path: String) throws {
        var info = stat()
        guard lstat(path, &info) == 0 else { return }
        guard (info.st_mode & S_IFMT) == S_IFSOCK else {
            throw RPCError(.failedPrecondition, "\(path) exists and is not a socket; refusing to replace it")
        }
        if acceptsConnections(path) {
            throw RPCError(.failedPrecondition, "\(path): another server is listening on this socket")
        }
        guard unlink(path) == 0 || errno == ENOENT else {
            throw RPCError(.internal, "cannot remove stale socket \(path): \(String(cString: strerror(errno)))")
        }
    }

    static func acceptsConnections(_ path: String) -> Bool {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard path.utf8.count < capacity else { return false }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: path.utf8)
            raw[path.utf8.count] = 0
        }
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        return result == 0
    }

    static func setMode(_ path: String, _ mode: mode_t) throws {
        guard chmod(path, mode) == 0 else {
            throw RPCError(.internal, "cannot chmod \(path): \(String(cString: strerror(errno)))")
        }
    }
}
