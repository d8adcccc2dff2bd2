import ArgumentParser

/// Every role and verb, in the order `hearth --help` lists them.
/// Each lives in its own file; add new ones here.
enum HearthSubcommands {
    static let all: [any ParsableCommand.Type] = [
        ControllerCommand.self,
        MountCommand.self,
        VersionCommand.self,
    ]
}
