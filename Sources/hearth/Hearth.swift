import ArgumentParser

/// The single `hearth` binary: one subcommand per role (controller, node, mount,
/// scheduler) and the CLI verbs that use volumes without Kubernetes.
@main
struct Hearth: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hearth",
        abstract: "Kubernetes CSI driver and scheduler extender: volumes in an object store, served by FUSE with a node-local cache.",
        subcommands: HearthSubcommands.all)
}
