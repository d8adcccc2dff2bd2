import ArgumentParser

/// Every role and verb, in the order `hearth --help` lists them.
/// Each lives in its own file; add new ones here.
enum HearthSubcommands {
    static let all: [any ParsableCommand.Type] = [
        ServeCommand.self,
        ControllerCommand.self,
        NodeCommand.self,
        SchedulerCommand.self,
        MountCommand.self,
        VolumeCommand.self,
        SnapshotCommand.self,
        StoreCommand.self,
        VersionCommand.self,
    ]
}
