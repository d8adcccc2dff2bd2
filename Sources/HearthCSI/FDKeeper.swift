import Foundation
import HearthMounts
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Holds one volume's /dev/fuse fd for the node plugin (issue 8's fd keeper).
///
/// While the keeper holds the fd, the kernel keeps the FUSE connection and its
/// unanswered requests alive across a daemon's death (kill -9, OOM): the daemon
/// restarted by ``DaemonSupervisor`` fetches the fd here and takes the session over
/// instead of mounting again. Serves ``FDHandoff``'s protocol on a unix socket with
/// one thread blocked in accept(2).
final class FDKeeper: Sendable {
    let socketPath: String
    private let listener: Int32
    /// The kept fd; nil until the daemon handed it over (after INIT).
    private let kept = Mutex<Int32?>(nil)
    private let closed = Atomic<Bool>(false)

    /// `fd`: a connection handed over by a predecessor node plugin, held from the
    /// start (its daemon's successor takes it over).
    init(socketPath: String, holding fd: Int32? = nil) throws {
        self.socketPath = socketPath
        kept.withLock { $0 = fd }
        listener = try FDHandoff.listen(socketPath)
        let thread = Thread { [self] in
            nameCurrentThread("fd-keeper")
            serve()
        }
        thread.start()
    }

    /// Whether the keeper holds a connection's fd (a restart will take it over).
    var holdsFD: Bool { kept.withLock { $0 != nil } }

    private func serve() {
        while !closed.load(ordering: .acquiring) {
            let client = accept(listener, nil, nil)
            if client < 0 {
                if errno == EINTR { continue }
                return
            }
            handle(client)
            Glibc.close(client)
        }
    }

    private func handle(_ client: Int32) {
        guard let received = try? FDHandoff.receive(client) else { return }
        let fd = received.fd
        switch received.byte {
        case UInt8(ascii: "P"):
            guard let fd else { return }
            kept.withLock { old in
                if let old, old != fd { Glibc.close(old) }
                old = fd
            }
            try? FDHandoff.send(client, byte: UInt8(ascii: "K"), fd: nil)
        case UInt8(ascii: "G"):
            // Hold the lock while sending, so a concurrent close cannot close the
            // number under sendmsg.
            kept.withLock { fd in
                if let fd {
                    try? FDHandoff.send(client, byte: UInt8(ascii: "Y"), fd: fd)
                } else {
                    try? FDHandoff.send(client, byte: UInt8(ascii: "N"), fd: nil)
                }
            }
        default:
            if let fd { Glibc.close(fd) }
        }
    }

    /// Runs `body` with the kept fd (nil: none yet) while no one can close it.
    func withFD<T>(_ body: (Int32?) throws -> T) rethrows -> T {
        try kept.withLock { try body($0) }
    }

    /// Lets go of the connection (the volume is being unstaged, or its daemon
    /// exited on purpose) and stops serving.
    func close() { stop(removingSocket: true) }

    /// Lets go of our reference once a successor node plugin holds its own
    /// (handed over), leaving the socket path to the successor's keeper, which
    /// has bound it anew.
    func retire() { stop(removingSocket: false) }

    private func stop(removingSocket: Bool) {
        guard !closed.exchange(true, ordering: .acquiringAndReleasing) else { return }
        kept.withLock { fd in
            if let fd { Glibc.close(fd) }
            fd = nil
        }
        shutdown(listener, Int32(SHUT_RDWR))
        Glibc.close(listener)
        if removingSocket { unlink(socketPath) }
    }
}
