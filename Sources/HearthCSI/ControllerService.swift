import CSIProto
import Foundation
import HearthRPC
import HearthStore
import Logging
import SwiftProtobuf

/// CSI Controller: volumes, publications and snapshots as records in the
/// store. Stateless: every answer comes from the store, so any number of
/// replicas can serve, and every call is idempotent.
public struct ControllerService: Sendable {
    public struct Settings: Sendable {
        /// Capacity given when a request names none.
        public var defaultCapacityBytes: Int64 = 1 << 30
        /// The largest volume a request may ask for (OUT_OF_RANGE beyond).
        public var maxCapacityBytes: Int64 = 1 << 50
        public init() {}
    }

    /// The plugin's store, and the same store under the keys a request's secrets carry.
    let stores: CredentialScopedStores
    private(set) var catalog: Catalog
    private(set) var publications: Publications
    private(set) var nodes: NodeRegistry
    let settings: Settings
    let logger: Logger
    /// Free bytes in the backing store, when it has a bound (a directory's filesystem).
    let availableBytes: @Sendable () async -> Int64?
    let commitRequester: any CommitRequester
    let snapshotWarnings: any SnapshotWarningSink

    public init(store: any ObjectStore, settings: Settings = Settings(), logger: Logger = Logger(label: "hearth.controller"),
                commitRequester: any CommitRequester = NoCommitRequests(),
                snapshotWarnings: any SnapshotWarningSink = LogOnlySnapshotWarnings(),
                availableBytes: @escaping @Sendable () async -> Int64? = { nil }) {
        self.init(stores: CredentialScopedStores(base: store), settings: settings, logger: logger,
                  commitRequester: commitRequester, snapshotWarnings: snapshotWarnings, availableBytes: availableBytes)
    }

    /// A controller whose requests may carry S3 keys in their CSI secrets.
    public init(stores: CredentialScopedStores, settings: Settings = Settings(), logger: Logger = Logger(label: "hearth.controller"),
                commitRequester: any CommitRequester = NoCommitRequests(),
                snapshotWarnings: any SnapshotWarningSink = LogOnlySnapshotWarnings(),
                availableBytes: @escaping @Sendable () async -> Int64? = { nil }) {
        self.stores = stores
        self.snapshotWarnings = snapshotWarnings
        catalog = Catalog(stores.base)
        publications = Publications(stores.base)
        nodes = NodeRegistry(stores.base)
        self.settings = settings
        self.logger = logger
        self.availableBytes = availableBytes
        self.commitRequester = commitRequester
    }

    static let service = "/csi.v1.Controller/"

    public var routes: RPCRoutes {
        var r = RPCRoutes()
        r.csi(Self.service, "CreateVolume", withSecrets { $0.createVolume })
        r.csi(Self.service, "DeleteVolume", withSecrets { $0.deleteVolume })
        r.csi(Self.service, "ControllerPublishVolume", withSecrets { $0.publish })
        r.csi(Self.service, "ControllerUnpublishVolume", withSecrets { $0.unpublish })
        r.csi(Self.service, "ValidateVolumeCapabilities", withSecrets { $0.validateCapabilities })
        r.csi(Self.service, "ListVolumes", listVolumes)
        r.csi(Self.service, "ControllerGetVolume", getVolume)
        r.csi(Self.service, "GetCapacity", getCapacity)
        r.csi(Self.service, "ControllerExpandVolume", withSecrets { $0.expandVolume })
        r.csi(Self.service, "ControllerModifyVolume", withSecrets { $0.modifyVolume })
        r.csi(Self.service, "ControllerGetCapabilities", capabilities)
        r.csi(Self.service, "CreateSnapshot", withSecrets { $0.createSnapshot })
        r.csi(Self.service, "DeleteSnapshot", withSecrets { $0.deleteSnapshot })
        r.csi(Self.service, "ListSnapshots", withSecrets { $0.listSnapshots })
        r.csi(Self.service, "GetSnapshot", withSecrets { $0.getSnapshot })
        return r
    }

    /// This controller working on the store under the keys `secrets` carry
    /// (itself when they carry none).
    func scoped(_ secrets: [String: String]) throws -> ControllerService {
        guard stores.usesCredentials, !secrets.isEmpty else { return self }
        let store = try stores.store(secrets: secrets)
        var scoped = self
        scoped.catalog = Catalog(store)
        scoped.publications = Publications(store)
        scoped.nodes = NodeRegistry(store)
        return scoped
    }

    /// A handler run on the controller scoped to its request's secrets.
    func withSecrets<Request: CSISecretsCarrying, Response>(
        _ method: @escaping @Sendable (ControllerService) -> @Sendable (Request) async throws -> Response
    ) -> @Sendable (Request) async throws -> Response {
        { request in try await method(try self.scoped(request.secrets))(request) }
    }

    // MARK: volumes

    func createVolume(_ request: Csi_V1_CreateVolumeRequest) async throws -> Csi_V1_CreateVolumeResponse {
        try Require.present(request.name, "name")
        try VolumeCapabilities.validate(request.volumeCapabilities)
        let (parameters, pvc) = try VolumeParameters.parse(request.parameters)
        for (key, value) in request.mutableParameters {
            guard VolumeParameters.mutable.contains(key) else {
                throw RPCError(.invalidArgument, "parameter \(key.debugDescription) is not mutable")
            }
            try VolumeParameters.validate(key, value)
        }
        let merged = parameters.merging(request.mutableParameters) { _, new in new }
        let storeID = try await StoreIdentity.id(of: catalog.objects)
        try checkTopology(request, storeID: storeID)

        var source: ContentSource?
        var sourceBytes: Int64 = 0
        if request.hasVolumeContentSource {
            switch request.volumeContentSource.type {
            case .snapshot(let s)?:
                guard Require.looksLikeID(s.snapshotID) else { throw RPCError(.notFound, "snapshot \(s.snapshotID) does not exist") }
                sourceBytes = try await catalog.snapshot(s.snapshotID).logicalBytes
                source = .snapshot(s.snapshotID)
            case .volume(let v)?:
                guard Require.looksLikeID(v.volumeID) else { throw RPCError(.notFound, "volume \(v.volumeID) does not exist") }
                sourceBytes = try await catalog.volume(v.volumeID).capacityBytes
                source = .volume(v.volumeID)
            case nil:
                throw RPCError(.invalidArgument, "volume_content_source names neither a snapshot nor a volume")
            }
        }
        let capacity = try capacity(for: request.hasCapacityRange ? request.capacityRange : nil, atLeast: sourceBytes)
        let record = try await catalog.createVolume(
            name: request.name, capacityBytes: capacity, parameters: merged, pvc: pvc, source: source)
        logger.info("volume ready", metadata: ["name": "\(request.name)", "id": "\(record.id)", "bytes": "\(capacity)"])
        var response = Csi_V1_CreateVolumeResponse()
        response.volume = volume(record, storeID: storeID)
        return response
    }

    /// Capacity from a CSI range: the required bytes (or the default), within the limit.
    func capacity(for range: Csi_V1_CapacityRange?, atLeast minimum: Int64) throws -> Int64 {
        let required = range?.requiredBytes ?? 0
        let limit = range?.limitBytes ?? 0
        guard required >= 0, limit >= 0 else { throw RPCError(.invalidArgument, "capacity_range must not be negative") }
        if limit > 0 && required > limit {
            throw RPCError(.invalidArgument, "capacity_range: required_bytes \(required) exceeds limit_bytes \(limit)")
        }
        var capacity = required > 0 ? required : settings.defaultCapacityBytes
        if limit > 0 { capacity = min(capacity, limit) }
        capacity = max(capacity, minimum)
        if limit > 0 && capacity > limit {
            throw RPCError(.outOfRange, "the source holds \(minimum) bytes, more than limit_bytes \(limit)")
        }
        guard capacity <= settings.maxCapacityBytes else {
            throw RPCError(.outOfRange, "capacity \(capacity) exceeds the largest volume, \(settings.maxCapacityBytes) bytes")
        }
        return capacity
    }

    /// Volumes are reachable wherever the store is: requisite topology must include it.
    func checkTopology(_ request: Csi_V1_CreateVolumeRequest, storeID: String) throws {
        guard request.hasAccessibilityRequirements else { return }
        let requisite = request.accessibilityRequirements.requisite
        guard !requisite.isEmpty else { return }
        let reachable = requisite.contains { topology in
            topology.segments[StoreIdentity.topologyKey].map { $0 == storeID } ?? true
        }
        guard reachable else {
            throw RPCError(.resourceExhausted, "no requisite topology reaches store \(storeID)")
        }
    }

    func volume(_ record: VolumeRecord, storeID: String) -> Csi_V1_Volume {
        var volume = Csi_V1_Volume()
        volume.volumeID = record.id
        volume.capacityBytes = record.capacityBytes
        volume.volumeContext = record.parameters
        var topology = Csi_V1_Topology()
        topology.segments = [StoreIdentity.topologyKey: storeID]
        volume.accessibleTopology = [topology]
        switch record.contentSource {
        case .snapshot(let id)?: volume.contentSource.snapshot.snapshotID = id
        case .volume(let id)?: volume.contentSource.volume.volumeID = id
        case nil: break
        }
        return volume
    }

    func deleteVolume(_ request: Csi_V1_DeleteVolumeRequest) async throws -> Csi_V1_DeleteVolumeResponse {
        try Require.present(request.volumeID, "volume_id")
        // An id we could never have issued names no volume: already deleted.
        guard Require.looksLikeID(request.volumeID) else { return Csi_V1_DeleteVolumeResponse() }
        let lease = try await publications.lease(request.volumeID)
        guard lease.nodes.isEmpty else {
            throw RPCError(.failedPrecondition, "volume \(request.volumeID) is still published to \(lease.nodes.joined(separator: ", "))")
        }
        try await catalog.deleteVolume(request.volumeID)
        logger.info("volume deleted", metadata: ["id": "\(request.volumeID)"])
        return Csi_V1_DeleteVolumeResponse()
    }

    func validateCapabilities(_ request: Csi_V1_ValidateVolumeCapabilitiesRequest) async throws -> Csi_V1_ValidateVolumeCapabilitiesResponse {
        try Require.present(request.volumeID, "volume_id")
        guard !request.volumeCapabilities.isEmpty else { throw RPCError(.invalidArgument, "volume_capabilities is required") }
        guard Require.looksLikeID(request.volumeID) else { throw RPCError(.notFound, "volume \(request.volumeID) does not exist") }
        let record = try await catalog.volume(request.volumeID)
        var response = Csi_V1_ValidateVolumeCapabilitiesResponse()
        if let problem = request.volumeCapabilities.lazy.compactMap(VolumeCapabilities.problem).first {
            response.message = problem
            return response
        }
        response.confirmed.volumeCapabilities = request.volumeCapabilities
        response.confirmed.volumeContext = request.volumeContext
        response.confirmed.parameters = request.parameters
        response.confirmed.mutableParameters = request.mutableParameters
        _ = record
        return response
    }

    func listVolumes(_ request: Csi_V1_ListVolumesRequest) async throws -> Csi_V1_ListVolumesResponse {
        guard request.maxEntries >= 0 else { throw RPCError(.invalidArgument, "max_entries must not be negative") }
        let page: RecordPage<VolumeRecord>
        do {
            page = try await catalog.listVolumes(
                maxEntries: Int(request.maxEntries), token: request.startingToken.isEmpty ? nil : request.startingToken)
        } catch StoreError.invalidArgument {
            throw RPCError(.aborted, "starting_token \(request.startingToken.debugDescription) is not valid")
        }
        let storeID = try await StoreIdentity.id(of: catalog.objects)
        var response = Csi_V1_ListVolumesResponse()
        for record in page.records {
            var entry = Csi_V1_ListVolumesResponse.Entry()
            entry.volume = volume(record, storeID: storeID)
            entry.status.publishedNodeIds = try await publications.lease(record.id).nodes
            entry.status.volumeCondition = try await condition(record.id)
            response.entries.append(entry)
        }
        response.nextToken = page.nextToken ?? ""
        return response
    }

    func getVolume(_ request: Csi_V1_ControllerGetVolumeRequest) async throws -> Csi_V1_ControllerGetVolumeResponse {
        try Require.present(request.volumeID, "volume_id")
        guard Require.looksLikeID(request.volumeID) else { throw RPCError(.notFound, "volume \(request.volumeID) does not exist") }
        let record = try await catalog.volume(request.volumeID)
        var response = Csi_V1_ControllerGetVolumeResponse()
        response.volume = volume(record, storeID: try await StoreIdentity.id(of: catalog.objects))
        response.status.publishedNodeIds = try await publications.lease(record.id).nodes
        response.status.volumeCondition = try await condition(record.id)
        return response
    }

    /// Abnormal when the volume's head cannot be read or names a missing root.
    func condition(_ volumeID: String) async throws -> Csi_V1_VolumeCondition {
        var condition = Csi_V1_VolumeCondition()
        do {
            let (head, _) = try await catalog.heads.read(volumeID)
            guard let root = head.rootHash, try await catalog.objects.exists(ObjectKind.tree.key(root)) else {
                condition.abnormal = true
                condition.message = "the volume's root tree is missing from the store"
                return condition
            }
            condition.message = "generation \(head.generation), \(head.logicalBytes) bytes committed"
        } catch let error as StoreError {
            condition.abnormal = true
            condition.message = "\(error)"
        }
        return condition
    }

    func getCapacity(_ request: Csi_V1_GetCapacityRequest) async throws -> Csi_V1_GetCapacityResponse {
        if !request.volumeCapabilities.isEmpty { try VolumeCapabilities.validate(request.volumeCapabilities) }
        _ = try VolumeParameters.parse(request.parameters)
        var response = Csi_V1_GetCapacityResponse()
        if request.hasAccessibleTopology, let store = request.accessibleTopology.segments[StoreIdentity.topologyKey],
           store != (try await StoreIdentity.id(of: catalog.objects)) {
            return response  // that topology does not reach our store: no capacity there
        }
        let available = await availableBytes() ?? settings.maxCapacityBytes
        response.availableCapacity = available
        response.maximumVolumeSize = Google_Protobuf_Int64Value(min(available, settings.maxCapacityBytes))
        response.minimumVolumeSize = Google_Protobuf_Int64Value(0)
        return response
    }

    func expandVolume(_ request: Csi_V1_ControllerExpandVolumeRequest) async throws -> Csi_V1_ControllerExpandVolumeResponse {
        try Require.present(request.volumeID, "volume_id")
        guard request.hasCapacityRange else { throw RPCError(.invalidArgument, "capacity_range is required") }
        if request.hasVolumeCapability, let problem = VolumeCapabilities.problem(request.volumeCapability) {
            throw RPCError(.invalidArgument, problem)
        }
        guard Require.looksLikeID(request.volumeID) else { throw RPCError(.notFound, "volume \(request.volumeID) does not exist") }
        let record = try await catalog.volume(request.volumeID)
        let wanted = try capacity(for: request.capacityRange, atLeast: 0)
        var response = Csi_V1_ControllerExpandVolumeResponse()
        if wanted <= record.capacityBytes {
            response.capacityBytes = record.capacityBytes  // already that large: idempotent, never shrinks
        } else {
            response.capacityBytes = try await catalog.setCapacity(record.id, capacityBytes: wanted).capacityBytes
            logger.info("volume expanded", metadata: ["id": "\(record.id)", "bytes": "\(wanted)"])
        }
        // Mounted daemons learn the new quota through NodeExpandVolume.
        response.nodeExpansionRequired = true
        return response
    }

    func modifyVolume(_ request: Csi_V1_ControllerModifyVolumeRequest) async throws -> Csi_V1_ControllerModifyVolumeResponse {
        try Require.present(request.volumeID, "volume_id")
        _ = try VolumeParameters.modified([:], with: request.mutableParameters)
        guard Require.looksLikeID(request.volumeID) else { throw RPCError(.notFound, "volume \(request.volumeID) does not exist") }
        let changes = request.mutableParameters
        _ = try await catalog.updateParameters(request.volumeID) { try VolumeParameters.modified($0, with: changes) }
        return Csi_V1_ControllerModifyVolumeResponse()
    }

    func capabilities(_ request: Csi_V1_ControllerGetCapabilitiesRequest) async throws -> Csi_V1_ControllerGetCapabilitiesResponse {
        var response = Csi_V1_ControllerGetCapabilitiesResponse()
        let kinds: [Csi_V1_ControllerServiceCapability.RPC.TypeEnum] = [
            .createDeleteVolume, .publishUnpublishVolume, .listVolumes, .getCapacity, .createDeleteSnapshot,
            .listSnapshots, .cloneVolume, .publishReadonly, .expandVolume, .listVolumesPublishedNodes,
            .volumeCondition, .getVolume, .singleNodeMultiWriter, .modifyVolume,
        ]
        // GetSnapshot is served, but GET_SNAPSHOT (alpha) is not advertised:
        // csi-test v5.3 (CSI 1.10) rejects capabilities it does not know.
        response.capabilities = kinds.map { kind in
            var capability = Csi_V1_ControllerServiceCapability()
            capability.rpc.type = kind
            return capability
        }
        return response
    }
}
