import HearthStore
import Logging
import Synchronization

/// A Hearth volume a pod's claim is bound to, as scoring needs it.
public struct ResolvedVolume: Sendable, Hashable {
    public var id: String
    /// The volume's logical size from the store; nil when unknown (then the largest
    /// size a node reported stands in).
    public var logicalBytes: Int64?

    public init(id: String, logicalBytes: Int64?) {
        self.id = id
        self.logicalBytes = logicalBytes
    }
}

/// Maps a PVC to the Hearth volume behind it. A protocol so the extender can be
/// tested and benchmarked without a store or a cluster.
public protocol VolumeResolver: Sendable {
    /// The Hearth volume bound to `claim`; nil when the claim is not a Hearth volume
    /// (another driver, not bound yet, or unknown).
    func volume(for claim: PVCReference) async throws -> ResolvedVolume?
}

/// Resolves claims through the PVC index CreateVolume writes into the store
/// (`Catalog.volume(pvc:)`), falling back to the Kubernetes API (PVC → PV → CSI
/// volume handle) for statically provisioned volumes, which have no index entry.
///
/// Answers are cached: a claim's binding never changes while it exists, so positive
/// answers live `claimTTL`; negative ones (a foreign driver, or not yet bound) only
/// `negativeTTL`, so a claim bound a moment later is seen soon. Sizes change as
/// volumes are written and live `sizeTTL`.
public final class CatalogVolumeResolver: VolumeResolver {
    public static let driverName = "hearth.csi.dev"

    private let catalog: Catalog
    private let kubernetes: KubernetesClient?
    private let claimTTL: Duration
    private let negativeTTL: Duration
    private let sizeTTL: Duration
    private let logger: Logger
    private let claims = Mutex([PVCReference: (id: String?, until: ContinuousClock.Instant)]())
    private let sizes = Mutex([String: (bytes: Int64?, until: ContinuousClock.Instant)]())

    public init(catalog: Catalog, kubernetes: KubernetesClient?, claimTTL: Duration = .seconds(300),
                negativeTTL: Duration = .seconds(10), sizeTTL: Duration = .seconds(30),
                logger: Logger = Logger(label: "hearth.scheduler.resolver")) {
        self.catalog = catalog
        self.kubernetes = kubernetes
        self.claimTTL = claimTTL
        self.negativeTTL = negativeTTL
        self.sizeTTL = sizeTTL
        self.logger = logger
    }

    public func volume(for claim: PVCReference) async throws -> ResolvedVolume? {
        guard let id = try await volumeID(for: claim) else { return nil }
        return ResolvedVolume(id: id, logicalBytes: try await logicalBytes(of: id))
    }

    private func volumeID(for claim: PVCReference) async throws -> String? {
        let now = ContinuousClock.now
        if let cached = claims.withLock({ $0[claim] }), cached.until > now { return cached.id }
        var id = try await catalog.volume(pvc: claim)?.id
        if id == nil, let kubernetes {
            id = try await kubernetes.csiVolumeHandle(namespace: claim.namespace, claim: claim.name,
                                                      driver: Self.driverName)
        }
        let until = now + (id == nil ? negativeTTL : claimTTL)
        claims.withLock { $0[claim] = (id, until) }
        return id
    }

    private func logicalBytes(of id: String) async throws -> Int64? {
        let now = ContinuousClock.now
        if let cached = sizes.withLock({ $0[id] }), cached.until > now { return cached.bytes }
        var bytes: Int64?
        do {
            bytes = try await catalog.heads.read(id).head.logicalBytes
        } catch StoreError.notFound {
            bytes = nil
        }
        sizes.withLock { $0[id] = (bytes, now + sizeTTL) }
        return bytes
    }
}

/// A fixed table of claims, for tests, benchmarks and `--no-store` dry runs.
public struct StaticVolumeResolver: VolumeResolver {
    public var volumes: [PVCReference: ResolvedVolume]

    public init(_ volumes: [PVCReference: ResolvedVolume]) { self.volumes = volumes }

    public func volume(for claim: PVCReference) async throws -> ResolvedVolume? { volumes[claim] }
}
