import Crypto
import Foundation

/// A SHA-256 digest naming a content-addressed object (chunk, manifest or tree).
///
/// Stored as four words rather than a byte array: the garbage collector keeps a set
/// of millions of these, and a value type with no heap allocation hashes and
/// compares fast.
public struct ContentHash: Sendable, Hashable, Comparable, CustomStringConvertible {
    public let w0: UInt64, w1: UInt64, w2: UInt64, w3: UInt64

    /// The all-zero digest. In manifests it marks a hole: a chunk of zeros that is
    /// never stored (sparse files, zero-filled images).
    public static let zero = ContentHash(w0: 0, w1: 0, w2: 0, w3: 0)

    init(w0: UInt64, w1: UInt64, w2: UInt64, w3: UInt64) {
        self.w0 = w0
        self.w1 = w1
        self.w2 = w2
        self.w3 = w3
    }

    /// From exactly 32 bytes (big-endian words, so ordering matches hex ordering).
    public init?<C: Collection>(bytes: C) where C.Element == UInt8 {
        guard bytes.count == 32 else { return nil }
        var words: [UInt64] = [0, 0, 0, 0]
        for (i, byte) in bytes.enumerated() {
            words[i / 8] = words[i / 8] << 8 | UInt64(byte)
        }
        self.init(w0: words[0], w1: words[1], w2: words[2], w3: words[3])
    }

    /// Parses 64 lowercase hex digits.
    public init?(hex: some StringProtocol) {
        guard hex.utf8.count == 64 else { return nil }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(32)
        var high: UInt8? = nil
        for c in hex.utf8 {
            let v: UInt8
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): v = c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): v = c - UInt8(ascii: "a") + 10
            default: return nil
            }
            if let h = high {
                bytes.append(h << 4 | v)
                high = nil
            } else {
                high = v
            }
        }
        self.init(bytes: bytes)
    }

    /// SHA-256 of `data`.
    public static func of(_ data: Data) -> ContentHash {
        ContentHash(bytes: Array(SHA256.hash(data: data)))!
    }

    public var bytes: [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(32)
        for word in [w0, w1, w2, w3] {
            for shift in stride(from: 56, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: word >> UInt64(shift))) }
        }
        return out
    }

    public var hex: String { SigV4Signer.hex(bytes) }

    public var description: String { hex }

    public var isZero: Bool { self == .zero }

    public static func < (a: ContentHash, b: ContentHash) -> Bool {
        (a.w0, a.w1, a.w2, a.w3) < (b.w0, b.w1, b.w2, b.w3)
    }
}

/// The three kinds of content-addressed objects and where each lives in the store.
///
/// Keys fan out by the first byte (`chunks/ab/abcd…`) so a directory backend never
/// holds millions of entries in one directory and S3 spreads load across partitions.
public enum ObjectKind: String, Sendable, CaseIterable {
    case chunk = "chunks"
    case manifest = "manifests"
    case tree = "trees"

    public func key(_ hash: ContentHash) -> String {
        let hex = hash.hex
        return "\(rawValue)/\(hex.prefix(2))/\(hex)"
    }

    /// The hash named by a key of this kind, or nil for anything else (temp files,
    /// foreign objects), which the garbage collector then leaves alone.
    public func hash(fromKey key: String) -> ContentHash? {
        let parts = key.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0] == rawValue, let hash = ContentHash(hex: parts[2]),
              parts[1] == parts[2].prefix(2) else { return nil }
        return hash
    }
}
