import ArgumentParser

enum BenchSubcommands {
    static let all: [any ParsableCommand.Type] = [
        RPCBench.self,
        RPCBenchServer.self,
    ]
}
