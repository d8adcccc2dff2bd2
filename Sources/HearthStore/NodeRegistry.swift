import Crypto
import Foundation

/// A node plugin as the controller knows it: written by `hearth node` at
/// start and refreshed while it runs, so ControllerPublish can tell a real
/// node from a typo (NOT_FOUND) and respect its attach limit, and so the
/// controller can reach it (commit before snapshot).
public struct NodeRecord: Codable, Sendable, Hashable {
    public var id: String
    public var maxVolumes: Int
    public var topology: [String: String]
    /// Where the node answers controller requests (e.g. `http://10.0.0.5:9810`); nil if it does not.
    public var address: String?
    public var updatedAt: Date

    public init(id: String, maxVolumes: Int, topology: [String: String] = [:], address: String? = nil, updatedAt: Date = Date()) {
        self.id = id
        self.maxVolumes = maxVolumes
        self.topology = topology
        self.address = address
        self.updatedAt = updatedAt.wholeSeconds
    }
}

/// Node records under `records/nodes/<key-safe id>`.
public struct NodeRegistry: Sendable {
    public let objects: any ObjectStore

    public init(_ objects: any ObjectStore) { self.objects = objects }

    /// Node ids are Kubernetes node names in practice, but CSI allows any
    /// string up to 256 bytes; reject control characters and empty ids.
    public static func validateNodeID(_ id: String) throws {
        guard (1...256).contains(id.utf8.count), !id.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7f }) else {
            throw StoreError.invalidArgument("invalid node id \(id.debugDescription)")
        }
    }

    /// Node names that are already key-safe are used as they are (readable
    /// listings); anything else becomes its SHA-256.
    static func keySafe(_ id: String) -> String {
        if (try? Identifiers.validateKubernetesName(id, "node")) != nil, id.utf8.count <= 200 { return id }
        return "h-" + ContentHash.of(Data(id.utf8)).hex
    }

    static func key(_ id: String) throws -> String {
        try validateNodeID(id)
        return "records/nodes/\(keySafe(id))"
    }

    public func register(_ record: NodeRecord) async throws {
        _ = try await objects.put(try Self.key(record.id), data: try Records.encoder.encode(record), condition: .none)
    }

    public func node(_ id: String) async throws -> NodeRecord? {
        try await RecordUpdate<NodeRecord>(objects: objects, key: try Self.key(id)).read()
    }

    public func remove(_ id: String) async throws {
        try await objects.delete(try Self.key(id))
    }
}

/// The store's own identity, created once by whoever opens it first. Nodes
/// that see the same id reach the same data: it is the topology segment that
/// tells Kubernetes where a volume is accessible (every node for a shared
/// bucket, one node for a local directory).
public enum StoreIdentity {
    static let key = "meta/store-id"
    public static let topologyKey = "topology.hearth.csi.dev/store"

    public static func id(of objects: any ObjectStore) async throws -> String {
        struct Entry: Codable { var id: String }
        do {
            return try Records.decode(Entry.self, try await objects.get(key), key: key).id
        } catch StoreError.notFound {
            let fresh = Identifiers.generate("store")
            do {
                _ = try await objects.put(key, data: try Records.encoder.encode(Entry(id: fresh)), condition: .ifAbsent)
                return fresh
            } catch StoreError.alreadyExists {
                return try Records.decode(Entry.self, try await objects.get(key), key: key).id
            }
        }
    }
}
