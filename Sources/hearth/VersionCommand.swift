import ArgumentParser
import HearthCSI
import HearthRPC

struct VersionCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "version", abstract: "Print Hearth's version.")

    func run() {
        print("hearth \(HearthVersion.current) (CSI driver \(HearthVersion.driverName), grpc core \(GRPCRuntime.coreVersion))")
    }
}
