/// The kube-scheduler extender API (k8s.io/kube-scheduler/extender/v1) on the wire.
///
/// The Go types carry no JSON tags, so the keys are the Go field names (`Pod`,
/// `Nodes`, `NodeNames`, `FailedNodes`, `FailedAndUnresolvableNodes`, `Error`,
/// `Host`, `Score`); nil pointers and maps travel as `null`. kube-scheduler sends
/// either `Nodes` (a whole v1.NodeList) or, when the extender is configured
/// `nodeCacheCapable`, `NodeNames`, and reads the answer in the same form.

/// Only the parts of a v1.Pod the extender reads; everything else is ignored.
public struct Pod: Decodable, Sendable {
    public var metadata: ObjectMeta
    public var spec: PodSpec?

    public init(metadata: ObjectMeta, spec: PodSpec?) {
        self.metadata = metadata
        self.spec = spec
    }

    /// The pod's PersistentVolumeClaims, with whether each is mounted read-only.
    /// Generic ephemeral volumes count: their claim is named `<pod>-<volume>`.
    public var claims: [PodClaim] {
        let namespace = metadata.namespace ?? "default"
        return (spec?.volumes ?? []).compactMap { volume in
            if let source = volume.persistentVolumeClaim {
                return PodClaim(namespace: namespace, name: source.claimName, readOnly: source.readOnly ?? false)
            }
            if volume.ephemeral != nil, let pod = metadata.name {
                return PodClaim(namespace: namespace, name: "\(pod)-\(volume.name)", readOnly: false)
            }
            return nil
        }
    }
}

/// metav1.ObjectMeta, the fields the extender needs.
public struct ObjectMeta: Decodable, Sendable {
    public var name: String?
    public var namespace: String?
    public var annotations: [String: String]?

    public init(name: String? = nil, namespace: String? = nil, annotations: [String: String]? = nil) {
        self.name = name
        self.namespace = namespace
        self.annotations = annotations
    }
}

/// v1.PodSpec, only its volumes.
public struct PodSpec: Decodable, Sendable {
    public var volumes: [PodVolume]?

    public init(volumes: [PodVolume]?) { self.volumes = volumes }
}

/// v1.Volume: a claim reference, a generic ephemeral volume, or something else.
public struct PodVolume: Decodable, Sendable {
    public var name: String
    public var persistentVolumeClaim: ClaimSource?
    public var ephemeral: JSONValue?

    public init(name: String, persistentVolumeClaim: ClaimSource? = nil, ephemeral: JSONValue? = nil) {
        self.name = name
        self.persistentVolumeClaim = persistentVolumeClaim
        self.ephemeral = ephemeral
    }

    public struct ClaimSource: Decodable, Sendable {
        public var claimName: String
        public var readOnly: Bool?

        public init(claimName: String, readOnly: Bool? = nil) {
            self.claimName = claimName
            self.readOnly = readOnly
        }
    }
}

/// A claim as the extender uses it: which PVC, and whether the pod writes to it.
public struct PodClaim: Sendable, Hashable {
    public var namespace: String
    public var name: String
    public var readOnly: Bool

    public init(namespace: String, name: String, readOnly: Bool) {
        self.namespace = namespace
        self.name = name
        self.readOnly = readOnly
    }
}

/// A node in `Nodes.items`: decoders choose how much of it to keep.
public protocol ExtenderNode: Codable, Sendable {
    var name: String { get }
}

/// Only `metadata.name`: what prioritize needs, and the cheapest to decode from a
/// 5,000-node list.
public struct NodeName: ExtenderNode {
    public var name: String

    public init(_ name: String) { self.name = name }

    private enum Keys: String, CodingKey { case metadata, name }

    public init(from decoder: any Decoder) throws {
        let metadata = try decoder.container(keyedBy: Keys.self).nestedContainer(keyedBy: Keys.self, forKey: .metadata)
        name = try metadata.decode(String.self, forKey: .name)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: Keys.self)
        var metadata = container.nestedContainer(keyedBy: Keys.self, forKey: .metadata)
        try metadata.encode(name, forKey: .name)
    }
}

/// The whole node object, kept to be returned unchanged by filter in the `Nodes` form.
public struct FullNode: ExtenderNode {
    public var name: String
    public var object: JSONValue

    public init(from decoder: any Decoder) throws {
        object = try JSONValue(from: decoder)
        guard let name = object["metadata", "name"]?.stringValue else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath,
                                                    debugDescription: "node without metadata.name"))
        }
        self.name = name
    }

    public func encode(to encoder: any Encoder) throws { try object.encode(to: encoder) }
}

/// v1.NodeList: `metadata` (a ListMeta, echoed back) and `items`.
public struct NodeList<Node: ExtenderNode>: Codable, Sendable {
    public var metadata: JSONValue?
    public var items: [Node]

    public init(metadata: JSONValue? = .object([:]), items: [Node]) {
        self.metadata = metadata
        self.items = items
    }

    private enum Keys: String, CodingKey { case metadata, items }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: Keys.self)
        metadata = try container.decodeIfPresent(JSONValue.self, forKey: .metadata)
        items = try container.decodeIfPresent([Node].self, forKey: .items) ?? []  // Go: nil slice → null
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: Keys.self)
        try container.encode(metadata ?? .object([:]), forKey: .metadata)
        try container.encode(items, forKey: .items)
    }
}

/// extenderv1.ExtenderArgs.
public struct ExtenderArgs<Node: ExtenderNode>: Decodable, Sendable {
    public var pod: Pod?
    public var nodes: NodeList<Node>?
    public var nodeNames: [String]?

    /// Keys match case-insensitively, as Go's `encoding/json` does: today's
    /// kube-scheduler writes `Pod`/`Nodes`/`NodeNames`, schedulers before the
    /// extender/v1 package wrote `pod`/`nodes`/`nodenames`.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: AnyKey.self)
        for key in container.allKeys {
            switch key.stringValue.lowercased() {
            case "pod": pod = try container.decodeIfPresent(Pod.self, forKey: key)
            case "nodes": nodes = try container.decodeIfPresent(NodeList<Node>.self, forKey: key)
            case "nodenames": nodeNames = try container.decodeIfPresent([String].self, forKey: key)
            default: continue
            }
        }
    }

    /// The candidate names, whichever form carried them; `NodeNames` wins when both do.
    public var candidateNames: [String] {
        nodeNames ?? nodes?.items.map(\.name) ?? []
    }
}

/// extenderv1.ExtenderFilterResult. Encoded as Go encodes it: every key present,
/// the unused form `null`.
public struct ExtenderFilterResult: Codable, Sendable {
    public var nodes: NodeList<FullNode>?
    public var nodeNames: [String]?
    public var failedNodes: [String: String]
    public var failedAndUnresolvableNodes: [String: String]
    public var error: String

    public init(nodes: NodeList<FullNode>? = nil, nodeNames: [String]? = nil, failedNodes: [String: String] = [:],
                failedAndUnresolvableNodes: [String: String] = [:], error: String = "") {
        self.nodes = nodes
        self.nodeNames = nodeNames
        self.failedNodes = failedNodes
        self.failedAndUnresolvableNodes = failedAndUnresolvableNodes
        self.error = error
    }

    private enum Keys: String, CodingKey {
        case nodes = "Nodes", nodeNames = "NodeNames", failedNodes = "FailedNodes"
        case failedAndUnresolvableNodes = "FailedAndUnresolvableNodes", error = "Error"
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: Keys.self)
        nodes = try container.decodeIfPresent(NodeList<FullNode>.self, forKey: .nodes)
        nodeNames = try container.decodeIfPresent([String].self, forKey: .nodeNames)
        failedNodes = try container.decodeIfPresent([String: String].self, forKey: .failedNodes) ?? [:]
        failedAndUnresolvableNodes = try container.decodeIfPresent([String: String].self,
                                                                   forKey: .failedAndUnresolvableNodes) ?? [:]
        error = try container.decodeIfPresent(String.self, forKey: .error) ?? ""
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: Keys.self)
        if let nodes { try container.encode(nodes, forKey: .nodes) } else { try container.encodeNil(forKey: .nodes) }
        if let nodeNames { try container.encode(nodeNames, forKey: .nodeNames) } else { try container.encodeNil(forKey: .nodeNames) }
        try container.encode(failedNodes, forKey: .failedNodes)
        try container.encode(failedAndUnresolvableNodes, forKey: .failedAndUnresolvableNodes)
        try container.encode(error, forKey: .error)
    }
}

/// extenderv1.HostPriority; a HostPriorityList is a bare JSON array of these.
public struct HostPriority: Codable, Sendable, Hashable {
    public var host: String
    /// 0...``Scoring/maxScore`` (MaxExtenderPriority); kube-scheduler multiplies it by
    /// the extender's configured weight.
    public var score: Int64

    public init(host: String, score: Int64) {
        self.host = host
        self.score = score
    }

    private enum CodingKeys: String, CodingKey { case host = "Host", score = "Score" }
}
