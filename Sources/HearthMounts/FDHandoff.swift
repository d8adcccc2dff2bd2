import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Passing a /dev/fuse fd between a FUSE daemon and the node plugin's fd keeper over a
/// unix socket (SCM_RIGHTS).
///
/// Why the node plugin keeps the fd at all: when the daemon dies, the kernel keeps
/// the connection (and the mount, and every request the daemon had read but not
/// answered) as long as *some* process holds the device file. The keeper is that
/// process, and a successor daemon fetches the fd from it instead of mounting again.
///
/// The protocol is one byte per connection: `P` (put) carries the fd as ancillary
/// data and is answered `K`; `G` (get) is answered `Y` with a duplicate of the fd, or
/// `N` when the keeper holds none. Lives here because both the daemon (`hearth mount`)
/// and the node plugin (HearthCSI) speak it, and both already depend on this module.
public enum FDHandoff {
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
        public init(description: String) { self.description = description }
    }

    /// Hands `fd` to the keeper listening at `socketPath`; returns once it holds it.
    public static func put(_ fd: Int32, to socketPath: String) throws {
        let sock = try connect(socketPath)
        defer { close(sock) }
        try send(sock, byte: UInt8(ascii: "P"), fd: fd)
        guard try receive(sock).byte == UInt8(ascii: "K") else { throw Failure(description: "keeper refused the fd") }
    }

    /// The fd the keeper at `socketPath` holds (a duplicate, ours to close), or nil
    /// if it holds none (a fresh start).
    public static func get(from socketPath: String) throws -> Int32? {
        let sock = try connect(socketPath)
        defer { close(sock) }
        try send(sock, byte: UInt8(ascii: "G"), fd: nil)
        let (byte, fd) = try receive(sock)
        guard byte == UInt8(ascii: "Y") else { return nil }
        guard let fd else { throw Failure(description: "keeper answered without an fd") }
        return fd
    }

    public static func connect(_ path: String) throws -> Int32 {
        let sock = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard sock >= 0 else { throw Failure(description: "socket: \(String(cString: strerror(errno)))") }
        var addr = try address(path)
        let ok = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(sock, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard ok == 0 else {
            let message = String(cString: strerror(errno))
            close(sock)
            throw Failure(description: "connect \(path): \(message)")
        }
        return sock
    }

    /// A listening socket at `path` (any old socket file is replaced).
    public static func listen(_ path: String) throws -> Int32 {
        unlink(path)
        let sock = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard sock >= 0 else { throw Failure(description: "socket: \(String(cString: strerror(errno)))") }
        var addr = try address(path)
        let bound = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(sock, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard bound == 0, Glibc.listen(sock, 16) == 0 else {
            let message = String(cString: strerror(errno))
            close(sock)
            throw Failure(description: "listen \(path): \(message)")
        }
        chmod(path, 0o600)
        return sock
    }

    private static func address(_ path: String) throws -> sockaddr_un {
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else { throw Failure(description: "socket path too long: \(path)") }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        return addr
    }

    // struct cmsghdr on 64-bit Linux: size_t cmsg_len; int cmsg_level; int cmsg_type;
    // then the data, 8-aligned. CMSG_* are macros Swift cannot call.
    private static let cmsgHeader = 16
    private static let cmsgSpace = 24  // CMSG_SPACE(sizeof(int))
    private static let cmsgLen = 20  // CMSG_LEN(sizeof(int))

    /// Sends one byte, with `fd` attached when given.
    public static func send(_ sock: Int32, byte: UInt8, fd: Int32?) throws {
        try sendBytes(sock, [byte], fd: fd)
    }

    /// Receives one byte and the fd attached to it, if any (close-on-exec).
    public static func receive(_ sock: Int32) throws -> (byte: UInt8, fd: Int32?) {
        let (bytes, fd) = try receiveBytes(sock, count: 1)
        return (bytes[0], fd)
    }

    /// Sends `bytes` (one sendmsg, retried for the rest), with `fd` attached to the first.
    static func sendBytes(_ sock: Int32, _ bytes: [UInt8], fd: Int32?) throws {
        var payload = bytes
        let control = UnsafeMutableRawBufferPointer.allocate(byteCount: cmsgSpace, alignment: 8)
        defer { control.deallocate() }
        control.initializeMemory(as: UInt8.self, repeating: 0)
        if let fd {
            control.storeBytes(of: UInt64(cmsgLen), toByteOffset: 0, as: UInt64.self)
            control.storeBytes(of: Int32(SOL_SOCKET), toByteOffset: 8, as: Int32.self)
            control.storeBytes(of: Int32(SCM_RIGHTS), toByteOffset: 12, as: Int32.self)
            control.storeBytes(of: fd, toByteOffset: cmsgHeader, as: Int32.self)
        }
        let sent = withMessage(&payload, control: fd == nil ? nil : control) { sendmsg(sock, &$0, Int32(MSG_NOSIGNAL)) }
        guard sent > 0 else { throw Failure(description: "sendmsg: \(String(cString: strerror(errno)))") }
        if sent < bytes.count { try FDFrames.writeAll(sock, Array(bytes[sent...])) }
    }

    /// Runs `call` (sendmsg or recvmsg) on one message over `payload`, with `control`
    /// as its ancillary buffer when given; retried on EINTR.
    private static func withMessage(_ payload: inout [UInt8], control: UnsafeMutableRawBufferPointer?,
                                    _ call: (inout msghdr) -> Int) -> Int {
        payload.withUnsafeMutableBytes { p in
            var iov = iovec(iov_base: p.baseAddress, iov_len: p.count)
            return withUnsafeMutablePointer(to: &iov) { iovp in
                var msg = msghdr()
                msg.msg_iov = iovp
                msg.msg_iovlen = 1
                if let control {
                    msg.msg_control = control.baseAddress
                    msg.msg_controllen = control.count
                }
                var n: Int
                repeat { n = call(&msg) } while n < 0 && errno == EINTR
                return n
            }
        }
    }

    /// Receives exactly `count` bytes and the fd attached to the first of them, if any
    /// (close-on-exec).
    static func receiveBytes(_ sock: Int32, count: Int) throws -> (bytes: [UInt8], fd: Int32?) {
        var payload = [UInt8](repeating: 0, count: count)
        let control = UnsafeMutableRawBufferPointer.allocate(byteCount: cmsgSpace, alignment: 8)
        defer { control.deallocate() }
        control.initializeMemory(as: UInt8.self, repeating: 0)
        var controlLength = 0
        let received = withMessage(&payload, control: control) { msg in
            let n = recvmsg(sock, &msg, Int32(MSG_CMSG_CLOEXEC))
            controlLength = Int(msg.msg_controllen)
            return n
        }
        var fd: Int32?
        if controlLength >= cmsgLen,
           control.load(fromByteOffset: 8, as: Int32.self) == SOL_SOCKET,
           control.load(fromByteOffset: 12, as: Int32.self) == Int32(SCM_RIGHTS) {
            fd = control.load(fromByteOffset: cmsgHeader, as: Int32.self)
        }
        guard received > 0 else {
            if let fd { close(fd) }
            throw Failure(description: received == 0 ? "peer closed" : "recvmsg: \(String(cString: strerror(errno)))")
        }
        if received < count {
            do {
                payload.replaceSubrange(received..., with: try FDFrames.readAll(sock, count: count - received))
            } catch {
                if let fd { close(fd) }
                throw error
            }
        }
        return (payload, fd)
    }
}
