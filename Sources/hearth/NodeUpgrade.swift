import ArgumentParser
import Foundation
import HearthCSI
import Logging
import Synchronization

/// What a node plugin does once a successor has its volumes.
enum AfterHandover: String, ExpressibleByArgument, CaseIterable {
    case exit
    case wait
}

/// Lets code outside `GRPCServingOptions.serve` stop the server it runs.
final class StopSwitch: Sendable {
    private let state = Mutex<(action: (@Sendable () -> Void)?, pulled: Bool)>((nil, false))

    /// What pulling does; runs at once if the switch was pulled already.
    func arm(_ action: @escaping @Sendable () -> Void) {
        let pulled = state.withLock { state in
            state.action = action
            return state.pulled
        }
        if pulled { action() }
    }

    func pull() {
        let action = state.withLock { state in
            state.pulled = true
            return state.action
        }
        action?()
    }
}

/// The node plugin upgrade (issue 8, item 3) around a node role's serving:
/// take the volumes of a running node plugin first, then serve until SIGTERM or
/// until a successor takes them in turn.
extension NodeOptions {
    var handoverSocket: String { dataDir + "/run/node.handover" }

    /// Before serving anything: adopts a running node plugin's daemons and their
    /// /dev/fuse fds, and waits until it has released the CSI socket.
    func takeOverFromPredecessor(_ daemons: DaemonSupervisor, logger: Logger) throws {
        guard let count = try NodeHandover.takeOver(path: handoverSocket, supervisor: daemons, logger: logger) else { return }
        logger.notice("took \(count) staged volume(s) over from the previous node plugin")
    }

    /// Runs `serve` (given a switch that stops it) with the handover socket open
    /// for a successor; once one has the volumes, tells it the CSI socket is free
    /// and, with `--after-handover wait`, idles until SIGTERM.
    func servingUntilHandover(_ daemons: DaemonSupervisor, logger: Logger,
                              serve: (StopSwitch) async throws -> Void) async throws {
        let stop = StopSwitch()
        let handover = try NodeHandover(path: handoverSocket, supervisor: daemons, logger: logger) { stop.pull() }
        try await serve(stop)
        guard handover.retired else { return }
        handover.finish()
        logger.notice("volumes handed to the successor node plugin")
        if afterHandover == .wait { await Self.waitForTermination() }
    }

    static func waitForTermination() async {
        let (signalled, continuation) = AsyncStream<Void>.makeStream()
        let signals = TerminationSignals { _ in continuation.yield() }
        for await _ in signalled { break }
        withExtendedLifetime(signals) {}
    }
}
