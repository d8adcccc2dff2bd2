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

    /// A JSON string: quote, backslash and control characters escaped; the rest
    /// as UTF-8, which JSON allows unescaped.
    private mutating func quoted(_ value: String) {
        bytes.append(UInt8(ascii: "\""))
        for byte in value.utf8 {
            switch byte {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"):
                bytes.append(UInt8(ascii: "\\"))
                bytes.append(byte)
            case 0..<0x20:
                bytes.append(contentsOf: "\\u00".utf8)
                bytes.append(Self.hexDigits[Int(byte >> 4)])
                bytes.append(Self.hexDigits[Int(byte & 0xf)])
            default:
                bytes.append(byte)
            }
        }
        bytes.append(UInt8(ascii: "\""))
    }

    private static let hexDigits = Array("0123456789abcdef".utf8)
}
