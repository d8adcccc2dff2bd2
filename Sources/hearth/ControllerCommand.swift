import ArgumentParser
import HearthCSI
import HearthRPC

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
        let objects = try store.open()
        var routes = IdentityService(roles: [.controller, .groupController]).routes
        let controller = ControllerService(
            store: objects, logger: logger,
            commitRequester: NodeCommitClient(store: objects, token: nodeToken, timeout: .seconds(commitTimeout)),
            availableBytes: { freeBytes(of: objects) })
        routes.merge(controller.routes)
        routes.merge(GroupControllerService(controller: controller).routes)
        try await serving.serve(routes, logger: logger)
    }
}
