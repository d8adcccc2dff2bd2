import CSIProto
import Foundation
import HearthMounts
import HearthRPC
import HearthStore
import Logging
import SwiftProtobuf

#if canImport(Glibc)
import Glibc
#endif

/// CSI Node: stage starts the volume's FUSE daemon at the staging path,
/// publish bind-mounts it where the pod wants it. Every call is idempotent
/// and checks its paths against the node's `PathPolicy`.
public struct NodeService: Sendable {
    public struct Settings: Sendable {
        public var nodeID: String
        /// Reported to Kubernetes (and enforced by ControllerPublish).
        public var maxVolumes: Int = 64
        public var paths: PathPolicy
        /// Where controllers reach this node's commit endpoint (`host:port`), if it serves one.
        public var address: String?
        /// Empties the node cache of a volume's bytes (its `cachePolicy` is
        /// `drop`) once its daemon has committed and stopped; returns the bytes.
        public var dropCachedBytes: (@Sendable (_ volumeID: String) async throws -> Int64)?
        public init(nodeID: String, paths: PathPolicy) {
            self.nodeID = nodeID
            self.paths = paths
        }
    }

    let settings: Settings
    /// The plugin's store, and the same store under the keys a request's secrets carry.
    let stores: CredentialScopedStores
    let catalog: Catalog
    let daemons: DaemonSupervisor
    let logger: Logger

    public init(settings: Settings, store: any ObjectStore, daemons: DaemonSupervisor, logger: Logger = Logger(label: "hearth.node")) {
        self.init(settings: settings, stores: CredentialScopedStores(base: store), daemons: daemons, logger: logger)
    }

    /// A node whose stage requests may carry S3 keys in their CSI secrets;
    /// the volume's daemon then works under those keys.
    public init(settings: Settings, stores: CredentialScopedStores, daemons: DaemonSupervisor,
                logger: Logger = Logger(label: "hearth.node")) {
        self.settings = settings
        self.stores = stores
        catalog = Catalog(stores.base)
        self.daemons = daemons
        self.logger = logger
    }

    /// Every staged volume's daemon, for /metrics and people.
    public var daemonStates: [DaemonSupervisor.State] { daemons.all }

    /// Makes the node known to the controller (NodeGetInfo's facts, in the store).
    public func register() async throws {
        let storeID = try await StoreIdentity.id(of: catalog.objects)
        try await NodeRegistry(catalog.objects).register(NodeRecord(
            id: settings.nodeID, maxVolumes: settings.maxVolumes, topology: [StoreIdentity.topologyKey: storeID],
            address: settings.address))
    }

    static let service = "/csi.v1.Node/"

    public var routes: RPCRoutes {
        var r = RPCRoutes()
        r.csi(Self.service, "NodeStageVolume", stage)
        r.csi(Self.service, "NodeUnstageVolume", unstage)
        r.csi(Self.service, "NodePublishVolume", publish)
        r.csi(Self.service, "NodeUnpublishVolume", unpublish)
        r.csi(Self.service, "NodeGetInfo", info)
        r.csi(Self.service, "NodeGetCapabilities", capabilities)
        r.csi(Self.service, "NodeGetVolumeStats", stats)
        r.csi(Self.service, "NodeExpandVolume", expand)
        return r
    }

    func stage(_ request: Csi_V1_NodeStageVolumeRequest) async throws -> Csi_V1_NodeStageVolumeResponse {
        try Require.present(request.volumeID, "volume_id")
        let staging = try settings.paths.check(request.stagingTargetPath, "staging_target_path")
        guard request.hasVolumeCapability else { throw RPCError(.invalidArgument, "volume_capability is required") }
        try checkCapability(request.volumeCapability)
        guard Require.looksLikeID(request.volumeID) else { throw RPCError(.notFound, "volume \(request.volumeID) does not exist") }
        let credentials = stores.usesCredentials ? try S3Credentials.fromSecrets(request.secrets) : nil
        let record = try await Catalog(try stores.store(secrets: request.secrets)).volume(request.volumeID)
        if let current = daemons.state(record.id), current.mountpoint != staging {
            throw RPCError(.failedPrecondition, "volume \(record.id) is already staged at \(current.mountpoint)")
        }
        try FileManager.default.createDirectory(atPath: staging, withIntermediateDirectories: true)
        let readOnly = request.publishContext[PublishContext.access] == PublishContext.readOnly
            || VolumeCapabilities.isReadOnly(request.volumeCapability.accessMode.mode)
        var extra: [String] = []
        if let interval = record.parameters[VolumeParameters.commitInterval] { extra += ["--commit-interval", interval] }
        if credentials != nil { extra.append("--s3-credentials-from-environment") }
        do {
            try await daemons.start(volumeID: record.id, mountpoint: staging, readOnly: readOnly, extraArguments: extra,
                                    environment: credentials?.environment ?? [:])
        } catch let error as DaemonError {
            throw error.rpcError
        }
        logger.info("volume staged", metadata: ["id": "\(record.id)", "path": "\(staging)", "ro": "\(readOnly)"])
        return Csi_V1_NodeStageVolumeResponse()
    }

    func unstage(_ request: Csi_V1_NodeUnstageVolumeRequest) async throws -> Csi_V1_NodeUnstageVolumeResponse {
        try Require.present(request.volumeID, "volume_id")
        let staging = try settings.paths.check(request.stagingTargetPath, "staging_target_path")
        if Require.looksLikeID(request.volumeID), daemons.state(request.volumeID) != nil {
            do { try await daemons.stop(request.volumeID) } catch let error as DaemonError {
                throw error.rpcError
            }
            await dropCacheIfAsked(request.volumeID)
        }
        // A mount left by a daemon from before a node plugin restart.
        if let entry = MountTable.mount(at: staging), entry.source == "hearth:\(request.volumeID)" {
            try Mounts.unmount(staging)
        }
        logger.info("volume unstaged", metadata: ["id": "\(request.volumeID)", "path": "\(staging)"])
        return Csi_V1_NodeUnstageVolumeResponse()
    }

    /// `cachePolicy: drop` (read now: ControllerModifyVolume may have changed
    /// it): the volume's cached bytes go at unstage. Best effort: the volume is
    /// unstaged whatever happens here, and the cache evicts by LRU anyway.
    func dropCacheIfAsked(_ volumeID: String) async {
        guard let drop = settings.dropCachedBytes,
              let record = try? await catalog.volume(volumeID),
              record.parameters[VolumeParameters.cachePolicy] == "drop" else { return }
        do {
            let bytes = try await drop(volumeID)
            logger.info("cache dropped", metadata: ["id": "\(volumeID)", "bytes": "\(bytes)"])
        } catch {
            logger.warning("cannot drop the volume's cached bytes: \(error)", metadata: ["id": "\(volumeID)"])
        }
    }

    func publish(_ request: Csi_V1_NodePublishVolumeRequest) async throws -> Csi_V1_NodePublishVolumeResponse {
        try Require.present(request.volumeID, "volume_id")
        let staging = try settings.paths.check(request.stagingTargetPath, "staging_target_path")
        let target = try settings.paths.check(request.targetPath, "target_path")
        guard request.hasVolumeCapability else { throw RPCError(.invalidArgument, "volume_capability is required") }
        try checkCapability(request.volumeCapability)
        guard Require.looksLikeID(request.volumeID) else { throw RPCError(.notFound, "volume \(request.volumeID) does not exist") }
        guard let staged = MountTable.mount(at: staging), staged.source == "hearth:\(request.volumeID)" else {
            throw RPCError(.failedPrecondition, "volume \(request.volumeID) is not staged at \(staging); call NodeStageVolume first")
        }
        let readOnly = request.readonly || VolumeCapabilities.isReadOnly(request.volumeCapability.accessMode.mode)
        if let existing = MountTable.mount(at: target) {
            guard existing.source == staged.source else {
                throw RPCError(.alreadyExists, "\(target) already has another mount (\(existing.source))")
            }
            guard existing.isReadOnly == readOnly else {
                throw RPCError(.alreadyExists, "volume \(request.volumeID) is already published at \(target) \(existing.isReadOnly ? "read-only" : "read-write")")
            }
            return Csi_V1_NodePublishVolumeResponse()
        }
        try FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: true)
        do {
            try Mounts.bind(staging, at: target, readOnly: readOnly, flags: request.volumeCapability.mount.mountFlags)
        } catch let error as MountError {
            throw RPCError(.internal, error.description)
        }
        logger.info("volume published", metadata: ["id": "\(request.volumeID)", "target": "\(target)", "ro": "\(readOnly)"])
        return Csi_V1_NodePublishVolumeResponse()
    }

    func unpublish(_ request: Csi_V1_NodeUnpublishVolumeRequest) async throws -> Csi_V1_NodeUnpublishVolumeResponse {
        try Require.present(request.volumeID, "volume_id")
        let target = try settings.paths.check(request.targetPath, "target_path")
        while let entry = MountTable.mount(at: target), entry.source == "hearth:\(request.volumeID)" {
            do { try Mounts.unmount(target) } catch let error as MountError { throw RPCError(.internal, error.description) }
        }
        // kubelet expects the target gone once unpublished; only an empty directory is removed.
        rmdir(target)
        return Csi_V1_NodeUnpublishVolumeResponse()
    }

    func info(_ request: Csi_V1_NodeGetInfoRequest) async throws -> Csi_V1_NodeGetInfoResponse {
        var response = Csi_V1_NodeGetInfoResponse()
        response.nodeID = settings.nodeID
        response.maxVolumesPerNode = Int64(settings.maxVolumes)
        response.accessibleTopology.segments = [StoreIdentity.topologyKey: try await StoreIdentity.id(of: catalog.objects)]
        return response
    }

    func capabilities(_ request: Csi_V1_NodeGetCapabilitiesRequest) async throws -> Csi_V1_NodeGetCapabilitiesResponse {
        var response = Csi_V1_NodeGetCapabilitiesResponse()
        let kinds: [Csi_V1_NodeServiceCapability.RPC.TypeEnum] = [
            .stageUnstageVolume, .getVolumeStats, .expandVolume, .volumeCondition, .singleNodeMultiWriter,
        ]
        response.capabilities = kinds.map { kind in
            var capability = Csi_V1_NodeServiceCapability()
            capability.rpc.type = kind
            return capability
        }
        return response
    }

    func stats(_ request: Csi_V1_NodeGetVolumeStatsRequest) async throws -> Csi_V1_NodeGetVolumeStatsResponse {
        try Require.present(request.volumeID, "volume_id")
        let path = try mountedPath(request.volumePath, request.volumeID)
        guard Require.looksLikeID(request.volumeID), let entry = MountTable.mount(at: path),
              entry.source == "hearth:\(request.volumeID)" else {
            throw RPCError(.notFound, "volume \(request.volumeID) is not mounted at \(path)")
        }
        var response = Csi_V1_NodeGetVolumeStatsResponse()
        let daemon = daemons.state(request.volumeID)
        var fs = statvfs()
        guard statvfs(path, &fs) == 0 else {
            response.volumeCondition.abnormal = true
            response.volumeCondition.message = "the volume's FUSE daemon does not answer: \(String(cString: strerror(errno)))"
            return response
        }
        let block = Int64(fs.f_frsize)
        var bytes = Csi_V1_VolumeUsage()
        bytes.unit = .bytes
        bytes.total = Int64(fs.f_blocks) * block
        bytes.available = Int64(fs.f_bavail) * block
        bytes.used = bytes.total - Int64(fs.f_bfree) * block
        var inodes = Csi_V1_VolumeUsage()
        inodes.unit = .inodes
        inodes.total = Int64(fs.f_files)
        inodes.available = Int64(fs.f_favail)
        inodes.used = Int64(fs.f_files) - Int64(fs.f_ffree)
        response.usage = [bytes, inodes]
        if let daemon, !daemon.running {
            response.volumeCondition.abnormal = true
            response.volumeCondition.message = "the volume's FUSE daemon is down (restarted \(daemon.restarts) times)"
        } else {
            response.volumeCondition.message = daemon.map { "daemon pid \($0.pid), restarted \($0.restarts) times" } ?? "mounted"
        }
        return response
    }

    func expand(_ request: Csi_V1_NodeExpandVolumeRequest) async throws -> Csi_V1_NodeExpandVolumeResponse {
        try Require.present(request.volumeID, "volume_id")
        let path = try mountedPath(request.volumePath, request.volumeID)
        if request.hasVolumeCapability { try checkCapability(request.volumeCapability) }
        guard Require.looksLikeID(request.volumeID) else { throw RPCError(.notFound, "volume \(request.volumeID) does not exist") }
        let record = try await Catalog(try stores.store(secrets: request.secrets)).volume(request.volumeID)
        guard let entry = MountTable.mount(at: path), entry.source == "hearth:\(request.volumeID)" else {
            throw RPCError(.notFound, "volume \(request.volumeID) is not mounted at \(path)")
        }
        // The daemon re-reads its volume record (capacity, commit interval) on SIGHUP.
        _ = daemons.signal(record.id, SIGHUP)
        var response = Csi_V1_NodeExpandVolumeResponse()
        response.capacityBytes = record.capacityBytes
        return response
    }

    /// For calls about a volume already mounted somewhere (stats, expand): a
    /// path outside the node's directories cannot hold it, so it is NOT_FOUND there.
    func mountedPath(_ path: String, _ volumeID: String) throws -> String {
        try Require.present(path, "volume_path")
        do { return try settings.paths.check(path, "volume_path") } catch {
            throw RPCError(.notFound, "volume \(volumeID) is not mounted at \(path)")
        }
    }

    func checkCapability(_ capability: Csi_V1_VolumeCapability) throws {
        if let problem = VolumeCapabilities.problem(capability) { throw RPCError(.invalidArgument, problem) }
        for flag in capability.mount.mountFlags where !Mounts.isSupportedFlag(flag) {
            throw RPCError(.invalidArgument, "mount flag \(flag.debugDescription) is not supported")
        }
    }
}
