import Foundation
import HearthMounts
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// How the node plugin starts one volume's FUSE daemon (`hearth mount`).
public struct DaemonLaunch: Sendable {
    /// The `hearth` binary.
    public var executable: String
    /// Arguments before the volume and mountpoint (store, cache, …).
    public var arguments: [String]
    /// Where each daemon's stdout and stderr go (`<dir>/<volume>.log`, appended).
    public var logDirectory: String
    /// Where each daemon serves its control socket (`<dir>/<volume>.sock`); nil: none.
    public var controlDirectory: String?
    /// How long a daemon may take to show its mount.
    public var mountTimeout: Duration = .seconds(30)
    /// How long a stopping daemon may take to commit and unmount before it is killed.
    public var stopTimeout: Duration = .seconds(60)
    /// Variables every daemon gets on top of the node plugin's own environment
    /// (the plugin's S3 keys when it was given them as flags).
    public var environment: [String: String] = [:]
    /// Where each daemon's fd keeper listens (`<dir>/<volume>.keeper`); nil: no
    /// keeper, a daemon that dies leaves a dead mount that its successor replaces
    /// (open files then fail). With a keeper, the successor takes the live FUSE
    /// connection over and applications only see a pause (issue 8).
    public var keeperDirectory: String?

    public init(executable: String, arguments: [String], logDirectory: String, controlDirectory: String? = nil) {
        self.executable = executable
        self.arguments = arguments
        self.logDirectory = logDirectory
        self.controlDirectory = controlDirectory
    }
}

public struct DaemonError: Error, CustomStringConvertible, Sendable {
    public var description: String
    /// The node plugin is handing its daemons to a successor: the caller should
    /// retry (UNAVAILABLE), and will reach the successor.
    public var handingOver = false
}

/// Runs one FUSE daemon per staged volume and keeps it running: a daemon that
/// dies is started again on the same mountpoint (it clears the dead mount
/// itself), and its log is kept for NodeStage errors and for people.
public final class DaemonSupervisor: Sendable {
    public struct State: Sendable, Equatable {
        public var volumeID: String
        public var mountpoint: String
        public var readOnly: Bool
        public var pid: Int32
        public var restarts: Int
        public var running: Bool
    }

    final class Daemon: @unchecked Sendable {
        // Why unchecked: `process`, `state` and `stopping` change only under the
        // supervisor's lock; Process itself is thread-safe for terminate/isRunning.
        var state: State
        /// nil for a daemon adopted from a predecessor node plugin until its
        /// successor is spawned (the running one is not our child).
        var process: Process?
        var stopping = false
        /// Holds the daemon's /dev/fuse fd across its restarts (nil: no keeper).
        let keeper: FDKeeper?
        /// Kept for restarts and for a successor node plugin: the volume's own
        /// flags and variables (S3 keys from its secrets).
        let extraArguments: [String]
        let environment: [String: String]
        init(state: State, process: Process?, extraArguments: [String], environment: [String: String], keeper: FDKeeper?) {
            self.keeper = keeper
            self.state = state
            self.process = process
            self.extraArguments = extraArguments
            self.environment = environment
        }
    }

    /// Starts and stops in flight, and whether the daemons are being handed to a
    /// successor node plugin (then no more may start or stop here).
    struct Gate {
        var handingOver = false
        var busy = 0
    }

    let launch: DaemonLaunch
    let logger: Logger
    let daemons = Mutex<[String: Daemon]>([:])
    let gate = Mutex(Gate())

    public init(launch: DaemonLaunch, logger: Logger) {
        self.launch = launch
        self.logger = logger
    }

    public func state(_ volumeID: String) -> State? {
        daemons.withLock { $0[volumeID]?.state }
    }

    public var all: [State] { daemons.withLock { $0.values.map(\.state) } }

    /// Starts the daemon for `volumeID` at `mountpoint` and waits until the
    /// kernel shows the mount. Idempotent for the same volume and mountpoint.
    /// `environment` reaches only this daemon: secrets go there, never on a
    /// command line, which every user of the machine can read.
    public func start(volumeID: String, mountpoint: String, readOnly: Bool, extraArguments: [String] = [],
                      environment: [String: String] = [:]) async throws {
        try enter()
        defer { leave() }
        if let existing = state(volumeID) {
            guard existing.mountpoint == mountpoint else {
                throw DaemonError(description: "volume \(volumeID) is already staged at \(existing.mountpoint)")
            }
            if MountTable.isMountPoint(mountpoint) { return }
        }
        await clearDeadMount(mountpoint)
        let keeper = try launch.keeperDirectory.map { dir in
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            return try FDKeeper(socketPath: keeperSocket(volumeID)!)
        }
        let daemon = Daemon(
            state: State(volumeID: volumeID, mountpoint: mountpoint, readOnly: readOnly, pid: 0, restarts: 0, running: true),
            process: nil, extraArguments: extraArguments, environment: environment, keeper: keeper)
        let process: Process
        do {
            process = try spawn(daemon)
        } catch {
            keeper?.close()
            throw error
        }
        daemons.withLock { table in
            daemon.process = process
            daemon.state.pid = process.processIdentifier
            table[volumeID] = daemon
        }
        watch(daemon, process)
        try await waitForMount(mountpoint, daemon: daemon, process: process)
    }

    /// Counts a start or stop in, unless the daemons are being handed over.
    private func enter() throws {
        try gate.withLock { gate in
            guard !gate.handingOver else {
                throw DaemonError(description: "the node plugin is handing its volumes to a successor; retry", handingOver: true)
            }
            gate.busy += 1
        }
    }

    private func leave() { gate.withLock { $0.busy -= 1 } }

    func keeperSocket(_ volumeID: String) -> String? {
        launch.keeperDirectory.map { "\($0)/\(volumeID).keeper" }
    }

    /// Starts `hearth mount` for the daemon's volume (with a keeper, a
    /// successor takes the live connection over instead of mounting).
    func spawn(_ daemon: Daemon) throws -> Process {
        let (volumeID, mountpoint, readOnly) = daemons.withLock { _ in
            (daemon.state.volumeID, daemon.state.mountpoint, daemon.state.readOnly)
        }
        let extra = daemon.extraArguments + (keeperSocket(volumeID).map { ["--keeper-socket", $0] } ?? [])
        try FileManager.default.createDirectory(atPath: launch.logDirectory, withIntermediateDirectories: true)
        let logPath = logPath(volumeID)
        if !FileManager.default.fileExists(atPath: logPath) { FileManager.default.createFile(atPath: logPath, contents: nil) }
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        log.seekToEndOfFile()
        let process = Process()
        process.executableURL = URL(fileURLWithPath: launch.executable)
        var control: [String] = []
        if let socket = controlSocket(volumeID) {
            try FileManager.default.createDirectory(atPath: launch.controlDirectory!, withIntermediateDirectories: true)
            control = ["--control-socket", socket]
        }
        process.arguments = ["mount"] + launch.arguments + extra + control + (readOnly ? ["--read-only"] : []) + [volumeID, mountpoint]
        process.environment = ProcessInfo.processInfo.environment
            .merging(launch.environment) { _, new in new }
            .merging(daemon.environment) { _, new in new }
        process.standardOutput = log
        process.standardError = log
        try process.run()
        try? log.close()
        logger.info("daemon started", metadata: ["volume": "\(volumeID)", "pid": "\(process.processIdentifier)"])
        return process
    }

    /// Restarts the daemon whenever it exits without being asked to.
    func watch(_ daemon: Daemon, _ process: Process) {
        process.terminationHandler = { [self] ended in
            let restart = daemons.withLock { _ -> Bool in
                daemon.state.running = false
                return !daemon.stopping && daemon.process === ended
            }
            guard restart else { return }
            logger.warning("daemon exited; restarting", metadata: [
                "volume": "\(daemon.state.volumeID)", "status": "\(ended.terminationStatus)",
            ])
            do {
                let next = try spawn(daemon)
                daemons.withLock { _ in
                    daemon.process = next
                    daemon.state.pid = next.processIdentifier
                    daemon.state.restarts += 1
                    daemon.state.running = true
                }
                watch(daemon, next)
            } catch {
                logger.error("cannot restart daemon: \(error)", metadata: ["volume": "\(daemon.state.volumeID)"])
            }
        }
    }

    /// Detaches a mount whose daemon died unsupervised (a node plugin restarted
    /// without a hand-over): it stays in the mount table, answering ENOTCONN, and
    /// ``waitForMount`` took it for the new daemon's. NodeStage then returned before
    /// the new daemon had mounted, and NodePublish could bind the dead mount. The
    /// new daemon would detach it too, but only once it is about to mount.
    ///
    /// statvfs reaches the daemon (stat can be answered from the kernel's cache), so
    /// it runs on a thread of its own: a live daemon that does not answer within
    /// ``deadMountProbeTimeout`` keeps its mount.
    private func clearDeadMount(_ mountpoint: String) async {
        guard MountTable.mount(at: mountpoint)?.fsType.hasPrefix("fuse") == true else { return }
        let probe = DeadMountProbe()
        let dead = await withCheckedContinuation { (done: CheckedContinuation<Bool, Never>) in
            probe.set(done)
            Thread {
                var fs = statvfs()
                probe.answer(statvfs(mountpoint, &fs) != 0 && errno == ENOTCONN)
            }.start()
            Task {
                try? await Task.sleep(for: Self.deadMountProbeTimeout)
                probe.answer(false)
            }
        }
        guard dead else { return }
        if umount2(mountpoint, Int32(MNT_DETACH)) == 0 {
            logger.info("detached a dead daemon's mount", metadata: ["path": "\(mountpoint)"])
        } else {
            logger.warning("cannot detach a dead daemon's mount: errno \(errno)", metadata: ["path": "\(mountpoint)"])
        }
    }

    static let deadMountProbeTimeout: Duration = .seconds(2)

    private func waitForMount(_ mountpoint: String, daemon: Daemon, process: Process) async throws {
        let giveUp = ContinuousClock.now + launch.mountTimeout
        func mounted() -> Bool { MountTable.mount(at: mountpoint)?.fsType.hasPrefix("fuse") == true }
        while ContinuousClock.now < giveUp {
            if mounted() { return }
            if !process.isRunning && daemon.state.restarts == 0 {
                let tail = logTail(daemon.state.volumeID)
                daemons.withLock { $0[daemon.state.volumeID] = nil }
                daemon.keeper?.close()
                throw DaemonError(description: "the FUSE daemon for \(daemon.state.volumeID) exited: \(tail)")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        // A starved machine may have slept past the deadline: look once more.
        if mounted() { return }
        throw DaemonError(description: "the FUSE daemon for \(daemon.state.volumeID) did not mount within \(launch.mountTimeout): \(logTail(daemon.state.volumeID))")
    }

    /// Stops the daemon (it commits dirty data and unmounts on SIGTERM);
    /// kills it past the stop timeout and detaches a mount left behind.
    public func stop(_ volumeID: String) async throws {
        try enter()
        defer { leave() }
        guard let daemon = daemons.withLock({ d -> Daemon? in
            let daemon = d[volumeID]
            daemon?.stopping = true
            return daemon
        }) else { return }
        guard let process = daemons.withLock({ _ in daemon.process }) else {
            daemons.withLock { $0[volumeID] = nil }
            daemon.keeper?.close()
            return
        }
        if process.isRunning { process.terminate() }
        let giveUp = ContinuousClock.now + launch.stopTimeout
        while process.isRunning && ContinuousClock.now < giveUp { try await Task.sleep(for: .milliseconds(20)) }
        if process.isRunning {
            logger.error("daemon did not stop in time; killing it", metadata: ["volume": "\(volumeID)"])
            kill(process.processIdentifier, SIGKILL)
            while process.isRunning { try await Task.sleep(for: .milliseconds(20)) }
        }
        // The daemon is gone: let go of its connection (a mount still there is
        // detached next; with the fd closed too, the kernel then ends the session).
        daemon.keeper?.close()
        if MountTable.isMountPoint(daemon.state.mountpoint) { try Mounts.unmount(daemon.state.mountpoint) }
        daemons.withLock { $0[volumeID] = nil }
        logger.info("daemon stopped", metadata: ["volume": "\(volumeID)", "status": "\(process.terminationStatus)"])
        // Killed by our SIGTERM before it could install its handler (it had
        // only just started): nothing was written through it, nothing to report.
        guard process.terminationStatus == 0 || process.terminationReason == .uncaughtSignal && process.terminationStatus == SIGTERM else {
            throw DaemonError(description: "the FUSE daemon for \(volumeID) exited with status \(process.terminationStatus): \(logTail(volumeID))")
        }
    }

    /// Sends `signal` to the volume's daemon (SIGHUP: re-read the volume record).
    public func signal(_ volumeID: String, _ number: Int32) -> Bool {
        guard let pid = daemons.withLock({ $0[volumeID]?.process?.processIdentifier }) else { return false }
        return kill(pid, number) == 0
    }

    /// The daemon's control socket, when daemons get one.
    public func controlSocket(_ volumeID: String) -> String? {
        launch.controlDirectory.map { "\($0)/\(volumeID).sock" }
    }

    public func logPath(_ volumeID: String) -> String { "\(launch.logDirectory)/\(volumeID).log" }

    func logTail(_ volumeID: String, bytes: Int = 2000) -> String {
        guard let data = FileManager.default.contents(atPath: logPath(volumeID)) else { return "(no log)" }
        return String(decoding: data.suffix(bytes), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }
}

/// The first answer of a mount probe, from the probing thread or the timeout.
private final class DeadMountProbe: Sendable {
    private let continuation = Mutex<CheckedContinuation<Bool, Never>?>(nil)

    func set(_ done: CheckedContinuation<Bool, Never>) { continuation.withLock { $0 = done } }

    func answer(_ dead: Bool) { continuation.withLock { $0.take() }?.resume(returning: dead) }
}
