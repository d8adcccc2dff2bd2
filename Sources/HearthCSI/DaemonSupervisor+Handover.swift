import Foundation
import HearthMounts
import HearthRPC

#if canImport(Glibc)
import Glibc
#endif

/// What a successor node plugin needs to keep one staged volume's daemon going
/// (issue 8, item 3): where it is mounted, how it was started, and the process to
/// wait for.
public struct HandedOverDaemon: Codable, Sendable, Equatable {
    public var volumeID: String
    public var mountpoint: String
    public var readOnly: Bool
    /// The volume's own `hearth mount` flags (commit interval, credentials mode).
    public var extraArguments: [String]
    /// The volume's own variables: S3 keys from its secrets. They cross a root-only
    /// unix socket, never a command line.
    public var environment: [String: String]
    public var restarts: Int
    /// The running daemon, as the predecessor sees it (its PID namespace).
    public var pid: Int32
}

extension DaemonError {
    /// UNAVAILABLE while handing over (kubelet retries and reaches the
    /// successor); INTERNAL otherwise.
    var rpcError: RPCError { RPCError(handingOver ? .unavailable : .internal, description) }
}

/// The node plugin upgrade, on the supervisor: the predecessor stops starting and
/// stopping daemons, lists them with their /dev/fuse fds, and once the successor
/// holds every fd, kills its daemons without unmounting. The successor adopts the
/// list and starts daemons that take the live connections over, exactly as after a
/// crash (docs/takeover.md). Applications see one pause, not an error.
extension DaemonSupervisor {
    /// Refuses further starts and stops, waits for those in flight, and returns
    /// every daemon with its connection's fd (a duplicate, the caller's to close;
    /// nil when the daemon has not handed it to its keeper yet).
    public func beginHandover() -> [(daemon: HandedOverDaemon, fd: Int32?)] {
        gate.withLock { $0.handingOver = true }
        while gate.withLock({ $0.busy }) > 0 { usleep(5_000) }
        return daemons.withLock { table in
            table.values.sorted { $0.state.volumeID < $1.state.volumeID }.map { daemon in
                let fd = daemon.keeper?.withFD { $0.map { fcntl($0, F_DUPFD_CLOEXEC, 0) } }
                return (HandedOverDaemon(
                    volumeID: daemon.state.volumeID, mountpoint: daemon.state.mountpoint, readOnly: daemon.state.readOnly,
                    extraArguments: daemon.extraArguments, environment: daemon.environment,
                    restarts: daemon.state.restarts, pid: daemon.state.pid), fd.flatMap { $0 >= 0 ? $0 : nil })
            }
        }
    }

    /// The successor failed before taking anything: carry on as before.
    public func cancelHandover() {
        gate.withLock { $0.handingOver = false }
    }

    /// The successor holds every fd: kill the daemons (SIGKILL: no unmount, no
    /// goodbye to the kernel; requests they had read are resent to the
    /// successor's daemons) and forget them. Returns once all have exited.
    public func releaseAll() {
        let released = daemons.withLock { table -> [Daemon] in
            let all = Array(table.values)
            table.removeAll()
            for daemon in all { daemon.stopping = true }
            return all
        }
        for daemon in released {
            if let pid = daemon.process?.processIdentifier { kill(pid, SIGKILL) }
        }
        for daemon in released {
            while daemon.process?.isRunning == true { usleep(2_000) }
            daemon.keeper?.retire()
            logger.info("daemon handed over", metadata: ["volume": "\(daemon.state.volumeID)"])
        }
    }

    /// Takes a predecessor's daemon into this supervisor: its keeper starts out
    /// holding `fd`. Nothing runs for it until ``startAdopted()``.
    public func adopt(_ handed: HandedOverDaemon, fd: Int32?) throws {
        let keeper: FDKeeper?
        if let path = keeperSocket(handed.volumeID) {
            try FileManager.default.createDirectory(atPath: launch.keeperDirectory!, withIntermediateDirectories: true)
            keeper = try FDKeeper(socketPath: path, holding: fd)
        } else {
            if let fd { close(fd) }
            keeper = nil
        }
        let daemon = Daemon(
            state: State(volumeID: handed.volumeID, mountpoint: handed.mountpoint, readOnly: handed.readOnly, pid: 0,
                         restarts: handed.restarts, running: false),
            process: nil, extraArguments: handed.extraArguments, environment: handed.environment, keeper: keeper)
        daemons.withLock { $0[handed.volumeID] = daemon }
    }

    /// The predecessor's daemons are gone: start their successors, which take
    /// the connections over from the keepers (or, where no fd was handed over,
    /// clear the dead mount and mount afresh).
    public func startAdopted() {
        let waiting = daemons.withLock { table in table.values.filter { $0.process == nil } }
        for daemon in waiting {
            do {
                let process = try spawn(daemon)
                daemons.withLock { _ in
                    daemon.process = process
                    daemon.state.pid = process.processIdentifier
                    daemon.state.running = true
                }
                watch(daemon, process)
            } catch {
                logger.error("cannot start the adopted daemon: \(error)", metadata: ["volume": "\(daemon.state.volumeID)"])
            }
        }
    }
}
