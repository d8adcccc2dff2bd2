import ArgumentParser

/// Benchmarks that print tables of ratios measured in one run (never timed tests).
@main
struct HearthBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hearth-bench",
        abstract: "Hearth benchmarks: each prints a table of numbers and ratios from one run.",
        subcommands: BenchSubcommands.all)
}
