import Foundation
@testable import HearthFS
import Testing

/// The journal's hand-written JSON must read back, through the same
/// `JSONDecoder` the successor uses, as exactly the record written; and a line
/// written by `JSONEncoder` (an older daemon's journal) must still read.
@Suite("Journal lines")
struct JournalLineTests {
    static let names = ["plain", "quote\"d", "back\\slash", "new\nline", "tab\tand\u{1}ctl\u{1f}", "ünïcødé 文件 🗂",
                        "/slashes/", "", "del\u{7f}"]

    static func records() -> [JournalRecord] {
        var records: [JournalRecord] = []
        for name in names {
            records.append(.entry(1, name, UInt64.max))
            records.append(.unlink(UInt64(1) << 62, name))
            let attrs = NodeAttributes(kind: 3, mode: 0o120777, uid: UInt32.max, gid: 0, rdev: UInt64.max, size: Int64.max,
                                       atimeNs: Int64.min, mtimeNs: -1, ctimeNs: 1_700_000_000_123_456_789, nlink: 2,
                                       symlinkTarget: name, workingCopy: "/var/cache/work/v/\(name)")
            records.append(JournalRecord(op: .node, parent: 1, ino: 42, attrs: attrs))
        }
        records.append(JournalRecord(op: .node, ino: 7, attrs: NodeAttributes(kind: 1, mode: 0o644, uid: 0, gid: 0, rdev: 0,
                                                                             size: 0, atimeNs: 0, mtimeNs: 0, ctimeNs: 0, nlink: 1)))
        records.append(JournalRecord(op: .open, ino: 9, fh: UInt64.max, handleMode: 2, writing: true, backing: -1))
        records.append(JournalRecord(op: .open, ino: 9, fh: 3, handleMode: 0, writing: false, backing: Int32.max))
        records.append(JournalRecord(op: .close, fh: 3))
        return records
    }

    @Test func handWrittenLinesReadBackAsTheRecordWritten() throws {
        let decoder = JSONDecoder()
        let records = Self.records()
        #expect(Set(records.map(\.op)) == Set(JournalRecord.Op.allCases))
        for record in records {
            let line = record.jsonLine
            #expect(!line.contains(0x0a), "one line: \(record)")
            let decoded = try decoder.decode(JournalRecord.self, from: Data(line))
            #expect(decoded == record, "\(String(decoding: line, as: UTF8.self))")
        }
    }

    @Test func linesWrittenByJSONEncoderStillRead() throws {
        let decoder = JSONDecoder()
        for record in Self.records() {
            let old = try JSONEncoder().encode(record)
            #expect(try decoder.decode(JournalRecord.self, from: old) == record)
        }
    }

    /// Through the journal file itself, as a successor reads it: appended, then
    /// every whole record in order, a torn last line skipped.
    @Test func aJournalFileReadsBackInOrder() throws {
        let path = NSTemporaryDirectory() + "journal-\(UInt64.random(in: 0...UInt64.max))"
        defer { unlink(path) }
        let journal = try Journal(path: path)
        let records = Self.records()
        for record in records { journal.append(record) }
        let handle = try #require(FileHandle(forWritingAtPath: path))
        handle.seekToEndOfFile()
        handle.write(Data("{\"op\":\"entry\",\"par".utf8))
        try handle.close()
        #expect(Journal.read(path) == records)
    }
}
