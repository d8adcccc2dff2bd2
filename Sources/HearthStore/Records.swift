import Crypto
import Foundation

/// The single validator and generator for volume, snapshot and group ids.
///
/// Ids become parts of object keys (`records/volumes/<id>`), so an id that came in
/// through a CSI request must never be able to name another key: only lowercase
/// letters, digits and `-`, 1...64 characters, starting with a letter or digit.
public enum Identifiers {
    public static func validate(_ id: String) throws {
        guard (1...64).contains(id.utf8.count), id.utf8.first != UInt8(ascii: "-") else {
            throw StoreError.invalidArgument("invalid id \(id.debugDescription)")
        }
        for byte in id.utf8 {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"): continue
            default: throw StoreError.invalidArgument("invalid id \(id.debugDescription)")
            }
        }
    }

    /// `<prefix>-` and 20 base32 characters: 100 random bits, no coordination needed.
    public static func generate(_ prefix: String) -> String {
        let alphabet = Array("abcdefghijklmnopqrstuvwxyz234567")
        var generator = SystemRandomNumberGenerator()
        return prefix + "-" + String((0..<20).map { _ in alphabet[Int(generator.next() % 32)] })
    }

    /// Kubernetes namespaces and object names (DNS subdomain: lowercase, digits, `-`,
    /// `.`) as used in the PVC index; the same key-safety concern as ids.
    static func validateKubernetesName(_ name: String, _ what: String) throws {
        guard (1...253).contains(name.utf8.count), name != ".", name != "..",
              name.utf8.allSatisfy({ ($0 >= 0x61 && $0 <= 0x7a) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2d || $0 == 0x2e })
        else { throw StoreError.invalidArgument("invalid \(what) \(name.debugDescription)") }
    }
}

/// Where a volume's initial content came from (CSI `VolumeContentSource`).
public enum ContentSource: Codable, Sendable, Hashable {
    case snapshot(String)
    case volume(String)
}

/// A PVC's namespace and name, recorded so the scheduler extender can map a pod's
/// claims to volumes without asking the API server.
public struct PVCReference: Codable, Sendable, Hashable {
    public var namespace: String
    public var name: String

    public init(namespace: String, name: String) {
        self.namespace = namespace
        self.name = name
    }
}

/// A volume as the CSI controller sees it. Small JSON at `records/volumes/<id>`.
public struct VolumeRecord: Codable, Sendable, Hashable {
    public var id: String
    public var name: String
    public var capacityBytes: Int64
    public var parameters: [String: String]
    public var pvc: PVCReference?
    public var contentSource: ContentSource?
    public var createdAt: Date

    public init(id: String, name: String, capacityBytes: Int64, parameters: [String: String] = [:],
                pvc: PVCReference? = nil, contentSource: ContentSource? = nil, createdAt: Date = Date()) {
        self.id = id
        self.name = name
        self.capacityBytes = capacityBytes
        self.parameters = parameters
        self.pvc = pvc
        self.contentSource = contentSource
        self.createdAt = createdAt.wholeSeconds
    }
}

/// A snapshot pins a root hash: O(1) to take, portable to any node.
public struct SnapshotRecord: Codable, Sendable, Hashable {
    public var id: String
    public var name: String
    public var sourceVolumeID: String
    public var root: String
    public var logicalBytes: Int64
    public var createdAt: Date
    public var groupID: String?

    public init(id: String, name: String, sourceVolumeID: String, root: ContentHash, logicalBytes: Int64,
                createdAt: Date = Date(), groupID: String? = nil) {
        self.id = id
        self.name = name
        self.sourceVolumeID = sourceVolumeID
        self.root = root.hex
        self.logicalBytes = logicalBytes
        self.createdAt = createdAt.wholeSeconds
        self.groupID = groupID
    }

    public var rootHash: ContentHash? { ContentHash(hex: root) }
}

extension Date {
    /// Records store ISO 8601 seconds; truncating at creation makes a record equal
    /// to itself after a round trip through the store (idempotent re-creates compare).
    var wholeSeconds: Date { Date(timeIntervalSince1970: timeIntervalSince1970.rounded(.down)) }
}

/// An index entry: the id a name (or PVC) maps to.
struct IndexEntry: Codable, Sendable, Hashable {
    var id: String
}

/// One page of records and the token for the next page.
public struct RecordPage<Record: Sendable>: Sendable {
    public var records: [Record]
    /// nil on the last page.
    public var nextToken: String?
}

/// Key layout and JSON coding of records, in one place.
public enum Records {
    // Fresh coders per use: cheap, and no shared mutable state between tasks.
    static var encoder: JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        e.dateEncodingStrategy = .iso8601
        return e
    }

    static var decoder: JSONDecoder {
        let d = JSONDecoder()
        d.dateDecodingStrategy = .iso8601
        return d
    }

    static let volumePrefix = "records/volumes/"
    static let snapshotPrefix = "records/snapshots/"

    static func volumeKey(_ id: String) throws -> String {
        try Identifiers.validate(id)
        return volumePrefix + id
    }

    static func snapshotKey(_ id: String) throws -> String {
        try Identifiers.validate(id)
        return snapshotPrefix + id
    }

    /// Names are arbitrary strings (CSI allows any UTF-8), so the index key is their
    /// SHA-256: fixed length, key-safe, no escaping rules to get wrong.
    static func volumeNameKey(_ name: String) -> String {
        "index/volume-name/" + ContentHash.of(Data(name.utf8)).hex
    }

    static func snapshotNameKey(_ name: String) -> String {
        "index/snapshot-name/" + ContentHash.of(Data(name.utf8)).hex
    }

    static func pvcKey(_ pvc: PVCReference) throws -> String {
        try Identifiers.validateKubernetesName(pvc.namespace, "PVC namespace")
        try Identifiers.validateKubernetesName(pvc.name, "PVC name")
        return "index/pvc/\(pvc.namespace)/\(pvc.name)"
    }

    /// Pagination tokens are the last key returned, base64url-encoded: stable across
    /// inserts and deletes (a listing resumes after that key), opaque to clients.
    static func token(forKey key: String) -> String {
        Data(key.utf8).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    /// Decodes a token and checks it names a key under `prefix`; anything else is
    /// ``StoreError/invalidArgument(_:)`` (CSI maps it to ABORTED).
    static func key(fromToken token: String, prefix: String) throws -> String {
        var base64 = token.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while base64.count % 4 != 0 { base64 += "=" }
        guard token.utf8.count <= 2048, !token.contains("="), !token.contains("+"), !token.contains("/"),
              let data = Data(base64Encoded: base64), let key = String(data: data, encoding: .utf8),
              key.hasPrefix(prefix), (try? Identifiers.validate(String(key.dropFirst(prefix.count)))) != nil
        else { throw StoreError.invalidArgument("invalid pagination token") }
        return key
    }

    static func decode<T: Decodable>(_ type: T.Type, _ data: Data, key: String) throws -> T {
        do {
            return try decoder.decode(type, from: data)
        } catch {
            throw StoreError.corrupt(key: key, reason: "not a valid \(type) record")
        }
    }
}
