import Foundation

/// The content of one regular file: its size, its chunk size and one hash per chunk.
///
/// Files are cut into **fixed-size** chunks (1 MiB by default, recorded per file so
/// the default can change without rewriting old files): a write in the middle of a
/// large file (databases, VM images) re-uploads only the chunks it touched, and the
/// chunk holding byte `n` is `n / chunkSize`, so a reader fetches exactly the chunks a
/// read needs. See docs/store.md for why not content-defined chunking.
///
/// A chunk of all zeros is recorded as ``ContentHash/zero`` and never stored (holes).
/// The last chunk may be short; every other chunk is exactly `chunkSize` bytes.
public struct Manifest: Sendable, Hashable {
    public static let defaultChunkSize = 1 << 20
    /// Chunk sizes are bounded so a hostile manifest cannot make a reader allocate
    /// gigabytes for one chunk.
    public static let chunkSizeRange = 4096...(64 << 20)

    public var size: Int64
    public var chunkSize: Int
    public var chunks: [ContentHash]

    public init(size: Int64, chunkSize: Int, chunks: [ContentHash]) {
        self.size = size
        self.chunkSize = chunkSize
        self.chunks = chunks
    }

    /// An empty file.
    public static func empty(chunkSize: Int = Manifest.defaultChunkSize) -> Manifest {
        Manifest(size: 0, chunkSize: chunkSize, chunks: [])
    }

    /// How many chunks a file of `size` bytes has.
    public static func chunkCount(size: Int64, chunkSize: Int) -> Int {
        Int((size + Int64(chunkSize) - 1) / Int64(chunkSize))
    }

    /// Byte length of chunk `index`.
    public func length(ofChunk index: Int) -> Int {
        let start = Int64(index) * Int64(chunkSize)
        return Int(min(Int64(chunkSize), size - start))
    }

    /// Indexes of the chunks overlapping `range` (clipped to the file).
    public func chunkIndexes(covering range: Range<Int64>) -> Range<Int> {
        let lower = max(range.lowerBound, 0)
        let upper = min(range.upperBound, size)
        guard upper > lower else { return 0..<0 }
        return Int(lower / Int64(chunkSize))..<Int((upper - 1) / Int64(chunkSize) + 1)
    }

    private static let magic = "HMF"
    private static let version: UInt8 = 1

    /// `HMF` 1 | chunk size | size | count | 32-byte hashes.
    public func encoded() -> Data {
        var w = BinaryWriter(capacity: 24 + chunks.count * 32)
        w.bytes(Self.magic.utf8)
        w.u8(Self.version)
        w.varint(chunkSize)
        w.varint(UInt64(size))
        w.varint(chunks.count)
        for hash in chunks { w.hash(hash) }
        return w.data
    }

    /// Decodes and validates; throws ``StoreError/corrupt(key:reason:)`` on anything
    /// inconsistent (wrong magic, truncation, a chunk count that does not match the size).
    public static func decode(_ data: Data, key: String = "manifest") throws -> Manifest {
        var r = BinaryReader(data, key: key)
        try r.expectMagic(magic, version: version)
        let chunkSize = try r.bounded(UInt64(chunkSizeRange.upperBound), "chunk size")
        guard chunkSizeRange.contains(chunkSize) else { throw r.fail("chunk size \(chunkSize) out of range") }
        let size = try r.bounded(UInt64(Int64.max / 2), "file size")
        let count = try r.bounded(UInt64(r.remaining / 32), "chunk count")
        guard count == chunkCount(size: Int64(size), chunkSize: chunkSize) else {
            throw r.fail("\(count) chunks do not fit size \(size)")
        }
        var chunks: [ContentHash] = []
        chunks.reserveCapacity(count)
        for _ in 0..<count { chunks.append(try r.hash()) }
        guard r.isAtEnd else { throw r.fail("trailing bytes") }
        return Manifest(size: Int64(size), chunkSize: chunkSize, chunks: chunks)
    }
}
