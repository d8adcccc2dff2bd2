import ArgumentParser
import HearthCSI
import HearthRPC
import HearthScheduler
import HearthStore
import Logging

/// `hearth controller`: the CSI Identity and Controller services, stateless
/// (all state lives in the store), one replica or several.
struct ControllerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "controller",
        abstract: "Serve CSI Identity + Controller over gRPC (stateless; state lives in the store).")

    @OptionGroup var serving: GRPCServingOptions
    @OptionGroup var store: StoreOptions

    @Option(help: "Seconds a snapshot waits for the writing node to commit before pinning the latest commit.")
    var commitTimeout: Int = 10

    @Option(help: "Kubernetes API base URL for events (e.g. http://127.0.0.1:8001 from kubectl proxy). Default: in-cluster when running in a pod, else none.")
    var kubernetesAPI: String?

    func run() async throws {
        let logger = serving.logger("hearth.controller")
        let objects = try store.openScoped()
        var routes = IdentityService(roles: [.controller, .groupController]).routes
        let api = try kubernetesAPI.map { KubernetesClient(baseURL: $0) } ?? KubernetesClient.inCluster()
        routes.merge(controllerRoutes(
            objects, logger: logger,
            commits: NodeCommitClient(store: objects.base, token: nodeToken, timeout: .seconds(commitTimeout)),
            snapshotWarnings: api.map { KubernetesSnapshotEvents(api: $0, logger: logger) } ?? LogOnlySnapshotWarnings()))
        try await serving.serve(routes, logger: logger)
        try await api?.shutdown()
    }
}

/// Controller + GroupController on a store: the same for `controller` and
/// `serve`, which differ only in how a snapshot reaches the writing node.
func controllerRoutes(_ objects: CredentialScopedStores, logger: Logger, commits: any CommitRequester,
                      snapshotWarnings: any SnapshotWarningSink = LogOnlySnapshotWarnings()) -> RPCRoutes {
    let controller = ControllerService(
        stores: objects, logger: logger, commitRequester: commits, snapshotWarnings: snapshotWarnings,
        availableBytes: { freeBytes(of: objects.base) })
    var routes = controller.routes
    routes.merge(GroupControllerService(controller: controller).routes)
    return routes
}
