import ArgumentParser
import HearthCSI
import HearthRPC
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

    func run() async throws {
        let logger = serving.logger("hearth.controller")
        let objects = try store.openScoped()
        var routes = IdentityService(roles: [.controller, .groupController]).routes
        routes.merge(controllerRoutes(
            objects, logger: logger,
            commits: NodeCommitClient(store: objects.base, token: nodeToken, timeout: .seconds(commitTimeout))))
        try await serving.serve(routes, logger: logger)
    }
}

/// Controller + GroupController on a store: the same for `controller` and
/// `serve`, which differ only in how a snapshot reaches the writing node.
func controllerRoutes(_ objects: CredentialScopedStores, logger: Logger, commits: any CommitRequester) -> RPCRoutes {
    let controller = ControllerService(
        stores: objects, logger: logger, commitRequester: commits, availableBytes: { freeBytes(of: objects.base) })
    var routes = controller.routes
    routes.merge(GroupControllerService(controller: controller).routes)
    return routes
}
