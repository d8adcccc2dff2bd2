import Foundation

/// Appends the compact binary encoding used by manifests and trees: LEB128 varints
/// for unsigned numbers, zig-zag varints for signed ones, length-prefixed bytes.
///
/// A volume may hold millions of files; varints keep typical entries (small uids,
/// modes, sizes) at one or two bytes per field, and encoding never allocates per field.
struct BinaryWriter {
    /// Bytes, not `Data`: appending one byte to `Data` goes through its
    /// representation switch and `replaceSubrange` each time, which made encoding
    /// a 10,000-entry directory a third of a small-file commit's own CPU time.
    private var buffer: [UInt8] = []

    init(capacity: Int = 256) {
        buffer.reserveCapacity(capacity)
    }

    var data: Data { Data(buffer) }

    mutating func bytes(_ bytes: some Sequence<UInt8>) { buffer.append(contentsOf: bytes) }

    mutating func u8(_ v: UInt8) { buffer.append(v) }

    mutating func varint(_ value: UInt64) {
        var v = value
        while v >= 0x80 {
            buffer.append(UInt8(truncatingIfNeeded: v) | 0x80)
            v >>= 7
        }
        buffer.append(UInt8(v))
    }

    mutating func varint(_ value: Int) { varint(UInt64(value)) }

    mutating func signed(_ value: Int64) {
        varint(UInt64(bitPattern: (value << 1) ^ (value >> 63)))
    }

    mutating func lengthPrefixed(_ bytes: some Collection<UInt8>) {
        varint(bytes.count)
        buffer.append(contentsOf: bytes)
    }

    /// The 32 bytes of ``ContentHash/bytes``, without building that array.
    mutating func hash(_ hash: ContentHash) {
        for word in [hash.w0, hash.w1, hash.w2, hash.w3] {
            withUnsafeBytes(of: word.bigEndian) { buffer.append(contentsOf: $0) }
        }
    }
}

/// Reads what ``BinaryWriter`` wrote. Every read is bounds-checked and throws
/// ``StoreError/corrupt(key:reason:)`` on truncated or malformed input: stored
/// objects come from disk or the network and must never crash the reader.
struct BinaryReader {
    private let bytes: [UInt8]
    private(set) var offset = 0
    let key: String

    init(_ data: Data, key: String) {
        bytes = [UInt8](data)
        self.key = key
    }

    var remaining: Int { bytes.count - offset }
    var isAtEnd: Bool { offset == bytes.count }

    func fail(_ reason: String) -> StoreError {
        .corrupt(key: key, reason: "\(reason) at byte \(offset)")
    }

    mutating func u8() throws -> UInt8 {
        guard offset < bytes.count else { throw fail("truncated") }
        defer { offset += 1 }
        return bytes[offset]
    }

    mutating func take(_ count: Int) throws -> ArraySlice<UInt8> {
        guard count >= 0, count <= remaining else { throw fail("truncated (wanted \(count) bytes)") }
        defer { offset += count }
        return bytes[offset..<offset + count]
    }

    mutating func varint() throws -> UInt64 {
        var result: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            let byte = try u8()
            if shift == 63 && byte > 1 { throw fail("varint overflow") }
            result |= UInt64(byte & 0x7f) << shift
            if byte & 0x80 == 0 { return result }
            shift += 7
            if shift > 63 { throw fail("varint too long") }
        }
    }

    /// A varint that must fit `limit` (counts, lengths, sizes).
    mutating func bounded(_ limit: UInt64, _ what: String) throws -> Int {
        let v = try varint()
        guard v <= limit else { throw fail("\(what) \(v) exceeds \(limit)") }
        return Int(v)
    }

    mutating func signed() throws -> Int64 {
        let v = try varint()
        return Int64(bitPattern: (v >> 1) ^ (0 &- (v & 1)))
    }

    mutating func lengthPrefixed(max: Int, _ what: String) throws -> ArraySlice<UInt8> {
        let count = try bounded(UInt64(max), "\(what) length")
        return try take(count)
    }

    mutating func hash() throws -> ContentHash {
        ContentHash(bytes: try take(32))!
    }

    mutating func expectMagic(_ magic: String, version: UInt8) throws {
        guard try take(magic.utf8.count).elementsEqual(magic.utf8) else { throw fail("bad magic, not a \(magic) object") }
        let v = try u8()
        guard v == version else { throw fail("unsupported \(magic) version \(v)") }
    }
}
