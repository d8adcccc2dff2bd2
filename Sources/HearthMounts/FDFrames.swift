import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Length-prefixed messages with an optional fd, over a unix stream socket: what
/// the node plugin upgrade (issue 8, item 3) speaks, where one message carries a
/// daemon's state (JSON) and its /dev/fuse fd together.
///
/// A frame is a kind byte and a 4-byte little-endian length, sent with the fd as
/// SCM_RIGHTS ancillary data (so the fd arrives with the header, never split from
/// it), then the payload.
public enum FDFrames {
    public struct Frame: Sendable {
        public var kind: UInt8
        public var payload: [UInt8]
        /// Ours to close (close-on-exec).
        public var fd: Int32?
    }

    public static func send(_ sock: Int32, kind: UInt8, payload: [UInt8] = [], fd: Int32? = nil) throws {
        var header = [kind]
        withUnsafeBytes(of: UInt32(payload.count).littleEndian) { header += $0 }
        try FDHandoff.sendBytes(sock, header, fd: fd)
        try writeAll(sock, payload)
    }

    /// The next frame; throws when the peer closed (`FDHandoff.Failure`, "peer closed").
    public static func receive(_ sock: Int32) throws -> Frame {
        let (header, fd) = try FDHandoff.receiveBytes(sock, count: 5)
        let length = Int(UInt32(header[1]) | UInt32(header[2]) << 8 | UInt32(header[3]) << 16 | UInt32(header[4]) << 24)
        guard length <= 16 << 20 else {
            if let fd { close(fd) }
            throw FDHandoff.Failure(description: "frame of \(length) bytes: not a Hearth peer")
        }
        do {
            return Frame(kind: header[0], payload: try readAll(sock, count: length), fd: fd)
        } catch {
            if let fd { close(fd) }
            throw error
        }
    }

    static func writeAll(_ sock: Int32, _ bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { Glibc.send(sock, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw FDHandoff.Failure(description: "send: \(String(cString: strerror(errno)))") }
            offset += n
        }
    }

    static func readAll(_ sock: Int32, count: Int) throws -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        var offset = 0
        while offset < count {
            let n = bytes[offset...].withUnsafeMutableBytes { recv(sock, $0.baseAddress, $0.count, 0) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else {
                throw FDHandoff.Failure(description: n == 0 ? "peer closed" : "recv: \(String(cString: strerror(errno)))")
            }
            offset += n
        }
        return bytes
    }
}
