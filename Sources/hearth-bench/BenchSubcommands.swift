import ArgumentParser

enum BenchSubcommands {
    static let all: [any ParsableCommand.Type] = [
        RPCBench.self,
        FSBench.self,
        SchedulerBench.self,
        StoreBench.self,
        CSIBench.self,
        SnapshotBench.self,
        UpgradeBench.self,
        RPCBenchServer.self,
    ]
}
