import ArgumentParser
import Foundation
import HearthCache
import HearthCSI
import HearthRPC
import HearthStore
import Logging

/// Flags of the node role, shared by `hearth node` and `hearth serve`.
struct NodeOptions: ParsableArguments {
    @Option(help: "This node's id (the Kubernetes node name). Default: the host name.")
    var nodeID: String?

    @Option(help: "Directory for the node cache, daemon logs and runtime files.")
    var dataDir: String = ProcessInfo.processInfo.environment["HEARTH_DATA_DIR"] ?? "/var/lib/hearth"

    @Option(help: "Node cache byte limit shared by all volumes, e.g. 20GiB.")
    var cacheSize: String = "10GiB"

    @Option(help: "Most volumes this node takes (reported to Kubernetes and enforced at publish).")
    var maxVolumes: Int = 64

    @Option(parsing: .singleValue, help: "A directory under which staging and target paths may lie (repeatable). Default: /var/lib/kubelet.")
    var allowedPath: [String] = []

    @Option(help: "Serve the commit endpoint for controllers on this host:port (snapshots commit first).")
    var controlListen: String?

    @Option(help: "The host:port controllers dial for this node (default: $POD_IP or the listen host, with the listen port).")
    var controlAddress: String?

    @Option(help: "Once a newer node plugin has taken the volumes over: exit, or wait for SIGTERM (in a DaemonSet, so that kubelet does not restart the container, which would take them back).")
    var afterHandover: AfterHandover = .exit

    var resolvedNodeID: String {
        nodeID ?? ProcessInfo.processInfo.hostName.split(separator: ".").first.map(String.init) ?? "localhost"
    }

    func launch(store: StoreOptions) -> DaemonLaunch {
        let executable = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        var launch = DaemonLaunch(
            executable: executable,
            arguments: store.forwardedArguments + ["--cache-dir", dataDir + "/cache", "--cache-size", cacheSize, "--allow-other"],
            logDirectory: dataDir + "/logs", controlDirectory: dataDir + "/run")
        launch.environment = store.forwardedEnvironment
        // Daemons hand their /dev/fuse fd to this process, so one that dies is
        // replaced without the mount breaking (issue 8).
        launch.keeperDirectory = dataDir + "/run"
        return launch
    }

    /// What this node's cache holds per volume: one instance (its tree cache
    /// is the costly part) for inventory reports and `cachePolicy: drop`.
    func cacheOccupancy(_ objects: any ObjectStore) -> CacheOccupancy {
        CacheOccupancy(directory: dataDir + "/cache", objects: objects)
    }

    func nodeService(daemons: DaemonSupervisor, objects: CredentialScopedStores, occupancy: CacheOccupancy,
                     logger: Logger) -> NodeService {
        var settings = NodeService.Settings(
            nodeID: resolvedNodeID, paths: PathPolicy(roots: allowedPath.isEmpty ? ["/var/lib/kubelet"] : allowedPath))
        settings.maxVolumes = maxVolumes
        settings.address = advertisedAddress
        settings.dropCachedBytes = { volumeID in try await occupancy.drop(volumeID) }
        return NodeService(settings: settings, stores: objects, daemons: daemons, logger: logger)
    }
}

/// The node role as `hearth node` and `hearth serve` both start it.
struct NodeRole {
    let daemons: DaemonSupervisor
    let service: NodeService
    /// Inventory reports to the scheduler, when configured: cancel at exit.
    let reporting: Task<Void, Never>?
}

extension NodeOptions {
    /// Takes a running predecessor's volumes over first (before anything binds or
    /// reports), then starts inventory reports and registers the node.
    func startRole(store: StoreOptions, objects: CredentialScopedStores, inventory: InventoryOptions,
                   logger: Logger) async throws -> NodeRole {
        let daemons = DaemonSupervisor(launch: launch(store: store), logger: logger)
        try takeOverFromPredecessor(daemons, logger: logger)
        let occupancy = cacheOccupancy(objects.base)
        let reporting = try inventory.start(node: self, occupancy: occupancy, logger: logger)
        let service = nodeService(daemons: daemons, objects: objects, occupancy: occupancy, logger: logger)
        do { try await service.register() } catch {
            reporting?.cancel()
            throw error
        }
        return NodeRole(daemons: daemons, service: service, reporting: reporting)
    }

    var advertisedAddress: String? {
        if let controlAddress { return controlAddress }
        guard let controlListen, let colon = controlListen.lastIndex(of: ":") else { return nil }
        let host = ProcessInfo.processInfo.environment["POD_IP"] ?? String(controlListen[..<colon])
        return "\(host)\(controlListen[colon...])"
    }

    /// Serves the node's commit endpoint when `--control-listen` is set.
    func serveCommitEndpoint(_ node: NodeService, logger: Logger) throws -> RPCServer? {
        guard let controlListen else { return nil }
        let endpoint = try RPCEndpoint(parsing: controlListen)
        return try RPCServer(endpoints: [endpoint], handlers: NodeCommitService(node: node, token: nodeToken).routes.handlers, logger: logger)
    }
}

/// The shared secret between controller and node plugins (HEARTH_NODE_TOKEN).
var nodeToken: String? {
    ProcessInfo.processInfo.environment["HEARTH_NODE_TOKEN"].flatMap { $0.isEmpty ? nil : $0 }
}

extension StoreOptions {
    /// The flags that make a `hearth mount` child open the same store.
    /// Secrets are not among them: the child inherits the environment.
    var forwardedArguments: [String] {
        var arguments: [String] = []
        if let store { arguments += ["--store", store] }
        if let s3Endpoint { arguments += ["--s3-endpoint", s3Endpoint] }
        arguments += ["--s3-region", s3Region]
        if s3PathStyle { arguments.append("--s3-path-style") }
        if let s3CredentialsFile { arguments += ["--s3-credentials-file", s3CredentialsFile] }
        if s3CredentialsFromEnvironment || s3AccessKeyID != nil && s3SecretAccessKey != nil {
            arguments.append("--s3-credentials-from-environment")
        }
        return arguments
    }

    /// Keys given to the node plugin as flags reach its daemons through their
    /// environment (a daemon's command line is visible in `ps`).
    var forwardedEnvironment: [String: String] {
        guard let id = s3AccessKeyID, let secret = s3SecretAccessKey else { return [:] }
        return S3Credentials(accessKeyID: id, secretAccessKey: secret).environment
    }
}

/// `hearth node`: CSI Identity + Node on one machine; starts one FUSE daemon
/// per staged volume and keeps it running.
struct NodeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "node", abstract: "Serve CSI Identity + Node: stage volumes with per-volume FUSE daemons.")

    @OptionGroup var serving: GRPCServingOptions
    @OptionGroup var store: StoreOptions
    @OptionGroup var node: NodeOptions
    @OptionGroup var inventory: InventoryOptions

    func run() async throws {
        let logger = serving.logger("hearth.node")
        let objects = try store.openScoped()
        let role = try await node.startRole(store: store, objects: objects, inventory: inventory, logger: logger)
        defer { role.reporting?.cancel() }
        let service = role.service
        let commitEndpoint = try node.serveCommitEndpoint(service, logger: logger)
        var routes = IdentityService(roles: [.node]).routes
        routes.merge(service.routes)
        try await node.servingUntilHandover(role.daemons, logger: logger) { stop in
            try await serving.serve(routes, logger: logger, extraMetrics: NodeMetrics.sampler(service), stop: stop)
            await commitEndpoint?.shutdown(grace: .seconds(5))
        }
    }
}

/// `hearth serve`: controller and node in one process on one machine, the
/// embedded default: a usable CSI endpoint without a cluster.
struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve", abstract: "Serve CSI Identity + Controller + Node in one process (single machine).")

    @OptionGroup var serving: GRPCServingOptions
    @OptionGroup var store: StoreOptions
    @OptionGroup var node: NodeOptions
    @OptionGroup var inventory: InventoryOptions

    func run() async throws {
        let logger = serving.logger("hearth.serve")
        let objects = try store.openScoped()
        let role = try await node.startRole(store: store, objects: objects, inventory: inventory, logger: logger)
        defer { role.reporting?.cancel() }
        let nodeService = role.service
        var routes = IdentityService(roles: [.controller, .groupController, .node]).routes
        routes.merge(controllerRoutes(objects, logger: logger, commits: LocalCommits(node: nodeService)))
        routes.merge(nodeService.routes)
        try await node.servingUntilHandover(role.daemons, logger: logger) { stop in
            try await serving.serve(routes, logger: logger, extraMetrics: NodeMetrics.sampler(nodeService), stop: stop)
        }
    }
}

/// Free bytes under a directory store (nil for S3: no bound).
func freeBytes(of objects: any ObjectStore) -> Int64? {
    guard let directory = objects as? DirectoryStore else { return nil }
    var fs = statvfs()
    guard statvfs(directory.root.path, &fs) == 0 else { return nil }
    return Int64(fs.f_bavail) * Int64(fs.f_frsize)
}
