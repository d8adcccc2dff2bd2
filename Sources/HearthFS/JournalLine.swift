import HearthStore

/// The JSON line of a ``JournalRecord``, written by hand.
///
/// The journal is written under the namespace lock before every reply that makes
/// the kernel rely on a change, so its encoding is on the path of every create,
/// unlink and open of a node plugin's volume. `JSONEncoder` (a new encoder, boxed
/// values, a dictionary per record) took 11% of the daemon's samples in a burst of
/// small files, about as much as everything else the daemon did for them. This
/// writes the same JSON, keys in the same names and nil fields left out, so
/// `JSONDecoder` reads it as before, and journals written by an older daemon (an
/// upgrade takes a session over with its journal) read the same way.
extension JournalRecord {
    /// The record as one line of JSON, without the newline.
    var jsonLine: [UInt8] {
        var json = JSONLine()
        json.open()
        json.field("op", string: op.rawValue)
        if let parent { json.field("parent", parent) }
        if let name { json.field("name", string: name) }
        if let ino { json.field("ino", ino) }
        if let attrs {
            json.key("attrs")
            json.open()
            json.field("kind", UInt64(attrs.kind))
            json.field("mode", UInt64(attrs.mode))
            json.field("uid", UInt64(attrs.uid))
            json.field("gid", UInt64(attrs.gid))
            json.field("rdev", attrs.rdev)
            json.field("size", signed: attrs.size)
            json.field("atimeNs", signed: attrs.atimeNs)
            json.field("mtimeNs", signed: attrs.mtimeNs)
            json.field("ctimeNs", signed: attrs.ctimeNs)
            json.field("nlink", UInt64(attrs.nlink))
            if let target = attrs.symlinkTarget { json.field("symlinkTarget", string: target) }
            if let copy = attrs.workingCopy { json.field("workingCopy", string: copy) }
            json.close()
        }
        if let fh { json.field("fh", fh) }
        if let handleMode { json.field("handleMode", UInt64(handleMode)) }
        if let writing { json.field("writing", bool: writing) }
        if let backing { json.field("backing", signed: Int64(backing)) }
        json.close()
        return json.bytes
    }
}

/// Appends JSON tokens; commas go in by themselves.
private struct JSONLine {
    var bytes: [UInt8] = []
    private var first = true

    init() { bytes.reserveCapacity(256) }

    mutating func open() {
        bytes.append(UInt8(ascii: "{"))
        first = true
    }

    mutating func close() {
        bytes.append(UInt8(ascii: "}"))
        first = false
    }

    mutating func key(_ name: String) {
        if !first { bytes.append(UInt8(ascii: ",")) }
        first = false
        quoted(name)
        bytes.append(UInt8(ascii: ":"))
    }

    mutating func field(_ name: String, _ value: UInt64) {
        key(name)
        bytes.append(contentsOf: String(value).utf8)
    }

    mutating func field(_ name: String, signed value: Int64) {
        key(name)
        bytes.append(contentsOf: String(value).utf8)
    }

    mutating func field(_ name: String, bool value: Bool) {
        key(name)
        bytes.append(contentsOf: (value ? "true" : "false").utf8)
    }

    mutating func field(_ name: String, string value: String) {
        key(name)
        quoted(value)
    }

    /// A JSON string literal (``JSONStringEscaping``).
    private mutating func quoted(_ value: String) {
        bytes.append(UInt8(ascii: "\""))
        if JSONStringEscaping.needsEscaping(value.utf8) {
            bytes.append(contentsOf: JSONStringEscaping.escaped(value))
        } else {
            bytes.append(contentsOf: value.utf8)
        }
        bytes.append(UInt8(ascii: "\""))
    }
}

/// Reading lines back: a successor replays the whole journal before it answers
/// the first request after a crash, and `JSONDecoder` took ~0.9 s of a 1.2 s
/// takeover after a burst of 20,000 files (80,000 records). This reads the flat
/// objects the journal holds; anything else (a `null`, a fraction, an unknown
/// key, a journal from another writer) is left to `JSONDecoder`.
extension JournalRecord {
    init?(jsonLine line: UnsafeRawBufferPointer) {
        var reader = JSONLineReader(line)
        var op: Op?
        var record = JournalRecord(op: .close)
        let whole = reader.object { reader, key in
            switch key {
            case "op": guard let raw = reader.string(), let value = Op(rawValue: raw) else { return false }
                op = value
            case "parent": guard let value = reader.unsigned() else { return false }
                record.parent = value
            case "name": guard let value = reader.string() else { return false }
                record.name = value
            case "ino": guard let value = reader.unsigned() else { return false }
                record.ino = value
            case "fh": guard let value = reader.unsigned() else { return false }
                record.fh = value
            case "handleMode": guard let value = reader.unsigned().flatMap({ UInt8(exactly: $0) }) else { return false }
                record.handleMode = value
            case "writing": guard let value = reader.bool() else { return false }
                record.writing = value
            case "backing": guard let value = reader.signed().flatMap({ Int32(exactly: $0) }) else { return false }
                record.backing = value
            case "attrs": guard let value = NodeAttributes(reading: &reader) else { return false }
                record.attrs = value
            default: return false
            }
            return true
        }
        guard whole, reader.atEnd, let op else { return nil }
        record.op = op
        self = record
    }
}

extension NodeAttributes {
    fileprivate init?(reading reader: inout JSONLineReader) {
        var numbers: [String: Int64] = [:]
        var unsignedRdev: UInt64?
        var symlinkTarget: String?, workingCopy: String?
        let whole = reader.object { reader, key in
            switch key {
            case "kind", "mode", "uid", "gid", "nlink", "size", "atimeNs", "mtimeNs", "ctimeNs":
                guard let value = reader.signed() else { return false }
                numbers[key] = value
            case "rdev": guard let value = reader.unsigned() else { return false }
                unsignedRdev = value
            case "symlinkTarget": guard let value = reader.string() else { return false }
                symlinkTarget = value
            case "workingCopy": guard let value = reader.string() else { return false }
                workingCopy = value
            default: return false
            }
            return true
        }
        guard whole, let rdev = unsignedRdev,
              let kind = numbers["kind"].flatMap({ UInt8(exactly: $0) }),
              let mode = numbers["mode"].flatMap({ UInt32(exactly: $0) }),
              let uid = numbers["uid"].flatMap({ UInt32(exactly: $0) }),
              let gid = numbers["gid"].flatMap({ UInt32(exactly: $0) }),
              let nlink = numbers["nlink"].flatMap({ UInt32(exactly: $0) }),
              let size = numbers["size"], let atimeNs = numbers["atimeNs"], let mtimeNs = numbers["mtimeNs"],
              let ctimeNs = numbers["ctimeNs"] else { return nil }
        self.init(kind: kind, mode: mode, uid: uid, gid: gid, rdev: rdev, size: size, atimeNs: atimeNs, mtimeNs: mtimeNs,
                  ctimeNs: ctimeNs, nlink: nlink, symlinkTarget: symlinkTarget, workingCopy: workingCopy)
    }
}

/// A cursor over one line of JSON. Every read returns nil (or false) on anything
/// it does not expect, never guesses.
private struct JSONLineReader {
    private let bytes: UnsafeRawBufferPointer
    private var at = 0

    init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    var atEnd: Bool {
        mutating get {
            skipSpaces()
            return at == bytes.count
        }
    }

    private mutating func skipSpaces() {
        while at < bytes.count, [0x20, 0x09, 0x0d].contains(bytes[at]) { at += 1 }
    }

    private mutating func take(_ byte: UInt8) -> Bool {
        skipSpaces()
        guard at < bytes.count, bytes[at] == byte else { return false }
        at += 1
        return true
    }

    /// `{ "key": value, ... }`, each value read by `member`; false if anything
    /// is off or `member` refuses a key.
    mutating func object(_ member: (inout JSONLineReader, String) -> Bool) -> Bool {
        guard take(UInt8(ascii: "{")) else { return false }
        if take(UInt8(ascii: "}")) { return true }
        repeat {
            guard let key = string(), take(UInt8(ascii: ":")), member(&self, key) else { return false }
        } while take(UInt8(ascii: ","))
        return take(UInt8(ascii: "}"))
    }

    mutating func bool() -> Bool? {
        skipSpaces()
        for (word, value) in [("true", true), ("false", false)] where matches(word) {
            at += word.utf8.count
            return value
        }
        return nil
    }

    private func matches(_ word: String) -> Bool {
        let utf8 = Array(word.utf8)
        guard at + utf8.count <= bytes.count else { return false }
        return (0..<utf8.count).allSatisfy { bytes[at + $0] == utf8[$0] }
    }

    mutating func unsigned() -> UInt64? {
        skipSpaces()
        var value: UInt64 = 0
        let start = at
        while at < bytes.count, bytes[at] >= 0x30, bytes[at] <= 0x39 {
            let (times, o1) = value.multipliedReportingOverflow(by: 10)
            let (sum, o2) = times.addingReportingOverflow(UInt64(bytes[at] - 0x30))
            guard !o1, !o2 else { return nil }
            value = sum
            at += 1
        }
        // A fraction or an exponent is not an integer this journal wrote.
        guard at > start, at == bytes.count || ![UInt8(ascii: "."), UInt8(ascii: "e"), UInt8(ascii: "E")].contains(bytes[at])
        else { return nil }
        return value
    }

    mutating func signed() -> Int64? {
        let negative = take(UInt8(ascii: "-"))
        guard let magnitude = unsigned() else { return nil }
        if negative {
            return magnitude <= UInt64(Int64.max) + 1 ? Int64(truncatingIfNeeded: 0 &- magnitude) : nil
        }
        return Int64(exactly: magnitude)
    }

    /// A string with JSON's escapes; nil for invalid UTF-8 or a lone surrogate.
    mutating func string() -> String? {
        guard take(UInt8(ascii: "\"")) else { return nil }
        var out: [UInt8] = []
        while at < bytes.count {
            let byte = bytes[at]
            at += 1
            switch byte {
            case UInt8(ascii: "\""):
                return String(validating: out, as: UTF8.self)
            case UInt8(ascii: "\\"):
                guard at < bytes.count else { return nil }
                let escape = bytes[at]
                at += 1
                switch escape {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(escape)
                case UInt8(ascii: "b"): out.append(0x08)
                case UInt8(ascii: "f"): out.append(0x0c)
                case UInt8(ascii: "n"): out.append(0x0a)
                case UInt8(ascii: "r"): out.append(0x0d)
                case UInt8(ascii: "t"): out.append(0x09)
                case UInt8(ascii: "u"):
                    guard var scalar = hex4() else { return nil }
                    if (0xd800..<0xdc00).contains(scalar) {
                        guard take(UInt8(ascii: "\\")), at < bytes.count, bytes[at] == UInt8(ascii: "u") else { return nil }
                        at += 1
                        guard let low = hex4(), (0xdc00..<0xe000).contains(low) else { return nil }
                        scalar = 0x10000 + ((scalar - 0xd800) << 10) + (low - 0xdc00)
                    }
                    guard let unicode = Unicode.Scalar(scalar) else { return nil }
                    out.append(contentsOf: String(Character(unicode)).utf8)
                default: return nil
                }
            case 0..<0x20:
                return nil
            default:
                out.append(byte)
            }
        }
        return nil
    }

    private mutating func hex4() -> UInt32? {
        guard at + 4 <= bytes.count else { return nil }
        var value: UInt32 = 0
        for _ in 0..<4 {
            let byte = bytes[at]
            at += 1
            let digit: UInt8
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
            default: return nil
            }
            value = value << 4 | UInt32(digit)
        }
        return value
    }
}
