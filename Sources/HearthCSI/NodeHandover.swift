import Foundation
import HearthMounts
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A node plugin upgrade without a broken mount (issue 8, item 3): the running
/// `hearth node` hands every staged volume's daemon state and /dev/fuse fd to a new
/// one over a root-only unix socket, kills its daemons, releases the CSI socket and
/// exits; the new one starts daemons that take each live connection over.
///
/// The conversation (``FDFrames``), predecessor P, successor S:
///
///     S → P  H                     hand over
///     P → S  V {daemon} + fd  …    one per staged volume (no starts/stops from now)
///     P → S  E                     end of list
///     S → P  A                     S's keepers hold every fd
///     P → S  D                     P's daemons are dead: S starts their successors
///     P → S  X                     P's gRPC server is down: S may bind the CSI socket
///
/// S binds keeper sockets only after `E`, so a successor that fails early leaves P
/// untouched (P carries on when `A` never comes). If P vanishes after `A`, S kills
/// whatever is left of P's daemons itself before starting its own: two daemons
/// must never serve one connection.
public final class NodeHandover: Sendable {
    enum Kind {
        static let handOver = UInt8(ascii: "H")
        static let daemon = UInt8(ascii: "V")
        static let end = UInt8(ascii: "E")
        static let adopted = UInt8(ascii: "A")
        static let dead = UInt8(ascii: "D")
        static let released = UInt8(ascii: "X")
    }

    private let listener: Int32
    private let supervisor: DaemonSupervisor
    private let logger: Logger
    /// The successor's connection once everything is handed over (waiting for `X`).
    private let successor = Mutex<Int32?>(nil)
    private let onRetired: @Sendable () -> Void

    /// Serves the handover socket at `path` for a future successor. `onRetired`
    /// runs once the daemons are handed over: stop serving CSI, then call
    /// ``finish()``.
    public init(path: String, supervisor: DaemonSupervisor, logger: Logger, onRetired: @escaping @Sendable () -> Void) throws {
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent,
                                                withIntermediateDirectories: true)
        listener = try FDHandoff.listen(path)
        self.supervisor = supervisor
        self.logger = logger
        self.onRetired = onRetired
        let thread = Thread { [self] in
            nameCurrentThread("node-handover")
            serve()
        }
        thread.start()
    }

    /// Whether the daemons went to a successor (the process should exit, leaving
    /// the mounts alone).
    public var retired: Bool { successor.withLock { $0 != nil } }

    /// Tells the successor the CSI socket is free. Call after the server stopped.
    public func finish() {
        successor.withLock { connection in
            guard let sock = connection, sock >= 0 else { return }
            try? FDFrames.send(sock, kind: Kind.released)
            close(sock)
            connection = -1
        }
    }

    private func serve() {
        while true {
            let client = accept(listener, nil, nil)
            if client < 0 {
                if errno == EINTR || errno == ECONNABORTED { continue }
                return
            }
            _ = fcntl(client, F_SETFD, FD_CLOEXEC)
            guard Self.peerIsUs(client) else {
                logger.warning("handover request from another user refused")
                close(client)
                continue
            }
            if handOver(client) {
                shutdown(listener, Int32(SHUT_RDWR))
                close(listener)
                onRetired()
                return
            }
            close(client)
        }
    }

    /// The predecessor's side; true when the daemons are handed over.
    private func handOver(_ sock: Int32) -> Bool {
        guard let request = try? FDFrames.receive(sock), request.kind == Kind.handOver else { return false }
        logger.notice("a successor node plugin asks for the volumes")
        let daemons = supervisor.beginHandover()
        defer { for case let fd? in daemons.map(\.fd) { close(fd) } }
        do {
            let encoder = JSONEncoder()
            for (daemon, fd) in daemons {
                try FDFrames.send(sock, kind: Kind.daemon, payload: Array(try encoder.encode(daemon)), fd: fd)
            }
            try FDFrames.send(sock, kind: Kind.end)
            guard try FDFrames.receive(sock).kind == Kind.adopted else { throw FDHandoff.Failure(description: "no adoption") }
        } catch {
            logger.error("handover failed before the successor took the volumes; carrying on: \(error)")
            supervisor.cancelHandover()
            return false
        }
        supervisor.releaseAll()
        try? FDFrames.send(sock, kind: Kind.dead)
        successor.withLock { $0 = sock }
        logger.notice("handed \(daemons.count) volume(s) to the successor")
        return true
    }

    /// The successor's side, before it serves anything: takes the volumes of a
    /// node plugin serving the handover socket at `path`. Returns how many volumes
    /// it adopted, or nil when no node plugin is there.
    public static func takeOver(path: String, supervisor: DaemonSupervisor, logger: Logger,
                                timeout: Duration = .seconds(120)) throws -> Int? {
        guard let sock = try? FDHandoff.connect(path) else { return nil }
        defer { close(sock) }
        // Let a stuck predecessor not hold the volumes (or this start) forever.
        var timeout = timeval(tv_sec: Int(timeout.components.seconds), tv_usec: 0)
        setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        try FDFrames.send(sock, kind: Kind.handOver)
        var handed: [(HandedOverDaemon, Int32?)] = []
        do {
            while true {
                let frame = try FDFrames.receive(sock)
                if frame.kind == Kind.end { break }
                guard frame.kind == Kind.daemon else { throw FDHandoff.Failure(description: "unexpected frame \(frame.kind)") }
                do {
                    handed.append((try JSONDecoder().decode(HandedOverDaemon.self, from: Data(frame.payload)), frame.fd))
                } catch {
                    if let fd = frame.fd { close(fd) }
                    throw error
                }
            }
        } catch {
            for case let fd? in handed.map(\.1) { close(fd) }
            throw FDHandoff.Failure(description: "the running node plugin did not hand its volumes over: \(error)")
        }
        for (daemon, fd) in handed {
            do { try supervisor.adopt(daemon, fd: fd) } catch {
                logger.error("cannot keep the fd of \(daemon.volumeID): \(error)")
            }
        }
        try? FDFrames.send(sock, kind: Kind.adopted)
        if (try? FDFrames.receive(sock))?.kind != Kind.dead {
            logger.warning("the predecessor went away before its daemons were gone; ending them here")
            for (daemon, _) in handed { killLeftover(daemon) }
        }
        supervisor.startAdopted()
        logger.notice("took over \(handed.count) volume(s) from the predecessor node plugin")
        _ = try? FDFrames.receive(sock)  // X, or the predecessor's exit
        return handed.count
    }

    /// Ends a predecessor's daemon that outlived it, if `pid` is still that daemon
    /// (same PID namespace, its command line names the volume), and waits for it.
    static func killLeftover(_ daemon: HandedOverDaemon) {
        func isThatDaemon() -> Bool {
            guard let cmdline = FileManager.default.contents(atPath: "/proc/\(daemon.pid)/cmdline"),
                  let stat = try? String(contentsOfFile: "/proc/\(daemon.pid)/stat", encoding: .utf8),
                  let state = stat.split(separator: ")").last?.split(separator: " ").first, state != "Z" else { return false }
            let arguments = cmdline.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
            return arguments.contains("mount") && arguments.contains(daemon.volumeID)
        }
        guard daemon.pid > 0, isThatDaemon() else { return }
        kill(daemon.pid, SIGKILL)
        while isThatDaemon() { usleep(2_000) }
    }

    /// Only the same user (root, in a cluster) may ask for fds and secrets.
    static func peerIsUs(_ sock: Int32) -> Bool {
        var credentials = (pid: Int32(0), uid: UInt32(0), gid: UInt32(0))
        var length = socklen_t(MemoryLayout.size(ofValue: credentials))
        guard getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &credentials, &length) == 0 else { return false }
        return credentials.uid == geteuid()
    }
}
