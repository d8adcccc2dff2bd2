import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Reads a file under /proc whole.
///
/// Why not `String(contentsOfFile:)`: /proc files report size 0, and Foundation then
/// reads one page and stops. /proc/self/mountinfo is longer than a page on any node
/// running a few pods, and the mounts past the first page (the newest: ours) would
/// silently be missing.
public enum ProcFile {
    public static func read(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 64 << 10)
        while true {
            let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n >= 0 else { return nil }
            if n == 0 { break }
            bytes += buffer[0..<n]
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
