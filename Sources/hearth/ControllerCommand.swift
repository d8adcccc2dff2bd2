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

    func run() async throws {
        let logger = serving.logger("hearth.controller")
        let identity = IdentityService(roles: [])
        try await serving.serve(identity.routes, logger: logger)
    }
}
