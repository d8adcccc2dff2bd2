import Foundation
import HearthFUSE
import HearthStore

#if canImport(Glibc)
import Glibc
#endif

/// What a successor daemon needs to take a live FUSE session over after a crash:
/// every node id the kernel was told about, every change to the namespace since the
/// volume was opened, every open handle. Kept as an append-only log in the node's
/// data directory, written *before* the reply that makes the kernel rely on it
/// (SIGKILL leaves no chance to write anything later).
///
/// Records are absolute assignments ("name N in P is node I", "node I has these
/// attributes", "N in P is gone"), never deltas, so replaying the whole log over the
/// volume's current head converges to the state the dead daemon had, whichever
/// prefix of it the head already committed. No fsync: the log must survive the
/// daemon, not the machine (a machine crash takes the mount with it).
///
/// Only used when the daemon has an fd keeper (`--keeper-socket`); a plain
/// `hearth mount` pays nothing.
final class Journal: Sendable {
    // Appends are single write(2)s with O_APPEND, which the kernel serialises.
    let path: String
    private let fd: Int32

    init(path: String) throws {
        self.path = path
        fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw FuseError(errno: errno) }
    }

    deinit { close(fd) }

    func append(_ record: JournalRecord) {
        var line = record.jsonLine
        line.append(0x0a)
        write(line)
    }

    /// Appends `records` with one write(2): a commit journals thousands at once. A
    /// daemon killed inside the write leaves a prefix of them, whose torn last line
    /// the replay skips.
    func append(contentsOf records: [JournalRecord]) {
        var lines: [UInt8] = []
        for record in records {
            lines += record.jsonLine
            lines.append(0x0a)
        }
        write(lines)
    }

    /// Writes all of `bytes` at the end of the log (a short write continues).
    private func write(_ bytes: [UInt8]) {
        var offset = 0
        while offset < bytes.count {
            let written = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + offset, $0.count - offset) }
            if written < 0 && errno == EINTR { continue }
            guard written > 0 else { return }
            offset += written
        }
    }

    /// Every whole record in the log at `path` (a torn last line is skipped).
    static func read(_ path: String) -> [JournalRecord] {
        guard let data = FileManager.default.contents(atPath: path) else { return [] }
        let decoder = JSONDecoder()
        return data.split(separator: 0x0a).compactMap { line in
            line.withUnsafeBytes { JournalRecord(jsonLine: $0) } ?? (try? decoder.decode(JournalRecord.self, from: Data(line)))
        }
    }
}

/// One journal line. `op` says which fields are set. Written by ``jsonLine``,
/// read with `JSONDecoder`: the field names are the format.
struct JournalRecord: Codable {
    enum Op: String, Codable {
        /// `name` in directory `parent` is node `ino` (lookup, create, link, rename).
        case entry
        /// Node `ino` (first linked in `parent`) has attributes `attrs`.
        case node
        /// `name` in `parent` is removed.
        case unlink
        /// Handle `fh` is open on `ino` (`handleMode`, `writing`, `backing`).
        case open
        /// Handle `fh` was released.
        case close
    }

    var op: Op
    var parent: UInt64?
    var name: String?
    var ino: UInt64?
    var attrs: NodeAttributes?
    var fh: UInt64?
    var handleMode: UInt8?
    var writing: Bool?
    var backing: Int32?

    static func entry(_ parent: UInt64, _ name: String, _ ino: UInt64) -> JournalRecord {
        JournalRecord(op: .entry, parent: parent, name: name, ino: ino)
    }

    static func unlink(_ parent: UInt64, _ name: String) -> JournalRecord {
        JournalRecord(op: .unlink, parent: parent, name: name)
    }
}

/// A node's attributes as the journal records them.
struct NodeAttributes: Codable {
    var kind: UInt8
    var mode: UInt32
    var uid: UInt32
    var gid: UInt32
    var rdev: UInt64
    var size: Int64
    var atimeNs: Int64
    var mtimeNs: Int64
    var ctimeNs: Int64
    var nlink: UInt32
    var symlinkTarget: String?
    /// The working copy holding the file's uncommitted bytes.
    var workingCopy: String?
}

extension Inode {
    var journalAttributes: NodeAttributes {
        NodeAttributes(kind: kind.rawValue, mode: mode, uid: uid, gid: gid, rdev: rdev, size: size, atimeNs: atimeNs,
                       mtimeNs: mtimeNs, ctimeNs: ctimeNs, nlink: nlink, symlinkTarget: symlinkTarget, workingCopy: work?.path)
    }
}

extension OpenMode {
    var journalCode: UInt8 {
        switch self {
        case .cached: 0
        case .passthrough: 1
        case .passthroughDirect: 2
        }
    }

    init(journalCode: UInt8) {
        switch journalCode {
        case 1: self = .passthrough
        case 2: self = .passthroughDirect
        default: self = .cached
        }
    }
}

extension VolumeFileSystem {
    /// Logs `record` if this daemon keeps a journal (lock held, before replying).
    func journal(_ record: @autoclosure () -> JournalRecord) {
        journalLog?.append(record())
    }

    /// Logs `node`'s attributes (lock held).
    func journalNode(_ node: Inode) {
        journalLog?.append(nodeRecord(node))
    }

    /// Logs each node's attributes with one write (lock held).
    func journalNodes(_ nodes: [Inode]) {
        guard let journalLog, !nodes.isEmpty else { return }
        journalLog.append(contentsOf: nodes.map(nodeRecord))
    }

    private func nodeRecord(_ node: Inode) -> JournalRecord {
        JournalRecord(op: .node, parent: node.parents.first, ino: node.ino, attrs: node.journalAttributes)
    }
}
