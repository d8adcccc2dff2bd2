import Foundation
import HearthCache
import HearthFS
import HearthFUSE
import HearthStore
import Testing

/// A successor rebuilds its namespace from the journal's JSON lines before it
/// answers anything. The lines are read by a reader of their own (JSONDecoder took
/// most of a takeover's pause) with JSONDecoder behind it for anything else; both
/// must give the same records. Journals written here by hand, in this daemon's
/// style and in JSONEncoder's (other key orders, `\/`, `\n`, surrogate pairs), are
/// replayed into a volume through the public API, and every name must resolve to
/// the node and attributes journaled.
@Suite("Journal replay")
struct JournalReplayTests {
    struct File {
        var ino: UInt64
        var name: String
        /// How the name is written in the line, escapes and all.
        var json: String
        var size: Int64
    }

    static let files = [
        File(ino: 1 << 40, name: "plain", json: "plain", size: 1),
        File(ino: (1 << 40) + 1, name: "quote\"d \\ /slash/", json: #"quote\"d \\ \/slash\/"#, size: 22),
        File(ino: (1 << 40) + 2, name: "new\nline\ttab\u{1}", json: #"new\nline\ttab\u0001"#, size: 333),
        File(ino: (1 << 40) + 3, name: "ünïcødé 文件", json: "ünïcødé 文件", size: 4444),
        File(ino: (1 << 40) + 4, name: "escaped é 🗂", json: #"escaped \u00e9 \ud83d\uddc2"#, size: 1 << 40),
        File(ino: (1 << 40) + 5, name: "fraction", json: "fraction", size: 7),
    ]

    static func lines() -> [String] {
        var lines: [String] = []
        for (i, file) in files.enumerated() {
            let attrs = #"{"kind":1,"mode":33188,"uid":1000,"gid":4294967295,"rdev":0,"size":\#(file.size),"atimeNs":-1,"mtimeNs":\#(Int64.min),"ctimeNs":1700000000123456789,"nlink":1}"#
            if i % 2 == 0 {
                // This daemon's order.
                lines.append(#"{"op":"node","parent":1,"ino":\#(file.ino),"attrs":\#(attrs)}"#)
                lines.append(#"{"op":"entry","parent":1,"name":"\#(file.json)","ino":\#(file.ino)}"#)
            } else {
                // Another order, with spaces, as another encoder might write.
                lines.append(#"{ "attrs" : \#(attrs), "ino" : \#(file.ino), "op" : "node", "parent" : 1 }"#)
                lines.append(#"{"ino":\#(file.ino),"name":"\#(file.json)","parent":1,"op":"entry"}"#)
            }
        }
        // Left to JSONDecoder: a null, and a size written as a fraction.
        lines.append(#"{"op":"close","fh":5,"name":null}"#)
        lines[lines.count - 3] = lines[lines.count - 3].replacingOccurrences(of: #""size":7,"#, with: #""size":7.0,"#)
        // A line nobody can read is skipped, as a torn last line is.
        lines.append(#"{"op":"entry","parent":1,"na"#)
        return lines
    }

    @Test func journaledNamesResolveAfterAReplay() async throws {
        let root = NSTemporaryDirectory() + "journal-replay-\(UInt64.random(in: 0...UInt64.max))"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: root) }
        let store = try DirectoryStore(root: URL(fileURLWithPath: root + "/store"))
        let volume = try await Catalog(store).createVolume(name: "replay", capacityBytes: 1 << 50).id
        let cache = try NodeCache(directory: root + "/cache", limitBytes: 1 << 30)
        let fs = try await VolumeFileSystem.open(store, cache: cache, config: VolumeConfiguration(volumeID: volume, capacityBytes: 1 << 50),
                                                 keepWorkingCopies: true)
        let journal = root + "/journal.log"
        let lines = Self.lines()
        try Data(lines.joined(separator: "\n").utf8).write(to: URL(fileURLWithPath: journal))

        let summary = try fs.restore(journalAt: journal)
        #expect(summary.records == lines.count - 1, "every line but the torn one")
        let ctx = RequestContext(unique: 1, uid: 0, gid: 0, pid: 0)
        for file in Self.files {
            let entry = try fs.lookup(ctx, parent: 1, name: file.name)
            #expect(entry.attributes.ino == file.ino, "\(file.name.debugDescription)")
            #expect(entry.attributes.size == UInt64(file.size), "\(file.name.debugDescription)")
            #expect(entry.attributes.gid == UInt32.max && entry.attributes.mode == 0o100644)
            #expect(entry.attributes.mtimeNs == Int64.min && entry.attributes.atimeNs == -1)
        }
        try fs.shutdown()
    }
}
