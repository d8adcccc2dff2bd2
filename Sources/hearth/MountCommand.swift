import ArgumentParser
import Foundation
import HearthCSI
import HearthCache
import HearthFS
import HearthFUSE
import HearthMounts
import HearthRPC
import HearthStore
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// `hearth mount`: one volume's FUSE daemon. The node plugin starts one per staged
/// volume; people can run it by hand to use a volume without Kubernetes.
struct MountCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mount",
        abstract: "Serve one volume at a directory through FUSE (runs until unmounted or signalled).")

    @OptionGroup var options: StoreOptions

    @Argument(help: "Volume id or name.")
    var volume: String

    @Argument(help: "Mountpoint (an existing directory).")
    var directory: String

    @Option(help: "Node cache directory, shared by all volumes on the node (default: <data dir>/cache).")
    var cacheDir: String?

    @Option(help: "Node cache byte limit, e.g. 20GiB.")
    var cacheSize: String = "10GiB"

    @Option(help: "Commit dirty files at least this often (also on close and fsync), e.g. 5s.")
    var commitInterval: String = "5s"

    @Flag(help: "Mount read-only (a second reader of a volume another daemon writes).")
    var readOnly = false

    @Flag(help: "Let other users than the mounting one access the mount.")
    var allowOther = false

    @Flag(help: "Serve extended attributes (costs a daemon round trip on writes; see docs/fuse.md).")
    var xattrs = false

    @Option(help: "Serve the control socket here (commit on request, before snapshots).")
    var controlSocket: String?

    @Option(help: "Upper bound of FUSE worker threads.")
    var maxWorkers: Int = 16

    @Option(help: "Longest time an idle FUSE worker polls for the next request before it sleeps (0: never polls). Saves the wake-ups of a round trip for busy callers; the window shrinks to nothing for callers whose requests come further apart; see docs/fuse.md.")
    var pollWindow: String = "200us"

    @Option(help: "FUSE passthrough for files whose bytes are all local: auto (when the kernel offers it and the daemon has CAP_SYS_ADMIN), on (fail without it), off.")
    var passthrough: PassthroughSetting = .auto

    @Option(help: .hidden)
    var statsFile: String?

    @Flag(help: "Serve FUSE over io_uring (kernel 6.14+ with the fuse module's enable_uring=Y): requests are served on the CPU that made them. Not with --keeper-socket: a daemon's death would strand the requests it held.")
    var ioUring = false

    @Option(help: "The node plugin's fd keeper for this volume: the daemon hands it the /dev/fuse fd after mounting, and a restarted daemon takes the live session over from it instead of mounting again.")
    var keeperSocket: String?

    func validate() throws {
        _ = try Console.parseDuration(pollWindow)
        if ioUring && keeperSocket != nil {
            throw ValidationError("--io-uring cannot be used with --keeper-socket: after a crash the kernel resends only requests read from /dev/fuse, so requests held in the dead daemon's rings would never be answered")
        }
    }

    func run() async throws {
        let store = try options.open()
        let catalog = Catalog(store)
        let record: VolumeRecord
        if let byID = try? await catalog.volume(volume) {
            record = byID
        } else if let byName = try await catalog.volume(named: volume) {
            record = byName
        } else {
            throw ValidationError("no volume \(volume.debugDescription) in \(try options.location)")
        }
        let cacheDirectory = cacheDir ?? Self.defaultCacheDirectory()
        // Before the cache sizes its descriptor budget from the limit.
        DescriptorBudget.raiseSoftLimit()
        let cache = try NodeCache(directory: cacheDirectory, limitBytes: try Console.parseBytes(cacheSize))
        var config = VolumeConfiguration(volumeID: record.id, capacityBytes: record.capacityBytes)
        config.readOnly = readOnly
        config.commitInterval = try Console.parseDuration(commitInterval)
        config.xattrs = xattrs
        let usePassthrough = try passthrough.resolve(readOnly: readOnly)
        config.passthrough = usePassthrough
        // With a keeper: take its fd over if it holds one (a predecessor died), else
        // start afresh and hand it ours once INIT is done.
        let saved = TakeoverState(cacheDirectory: cacheDirectory, volumeID: record.id)
        var takeover: (fd: Int32, parameters: SessionParameters)?
        let takeoverStart = ContinuousClock.now
        if let keeperSocket {
            if let fd = try FDHandoff.get(from: keeperSocket) {
                do {
                    takeover = (fd, try saved.loadParameters())
                } catch {
                    Glibc.close(fd)
                    throw error
                }
            } else {
                try saved.reset()
            }
        }
        let fs = try await VolumeFileSystem.open(store, cache: cache, config: config, keepWorkingCopies: takeover != nil)
        if takeover != nil {
            let journal = saved.journalPath
            let summary = try await Self.onThread { try fs.restore(journalAt: journal) }
            Self.log("restoring session: \(summary.records) journal records, \(summary.nodes) nodes, \(summary.handles) open handles, \(summary.workingCopies) working copies")
        }
        if keeperSocket != nil { try fs.startJournal(at: saved.journalPath) }

        var mountOptions = ["default_permissions", "fsname=hearth:\(record.id)", "subtype=hearth"]
        if allowOther { mountOptions.append("allow_other") }
        if readOnly { mountOptions.append("ro") }
        // isDirectory: true, or Foundation stats the path: on a takeover that is the
        // live mount, which only this daemon can answer (it would wait forever).
        let path = URL(fileURLWithPath: directory, isDirectory: true).standardizedFileURL.path
        // A takeover must not touch the mount: it is alive, held by the keeper's fd.
        let mount: FuseMount?
        if takeover == nil { mount = try FuseMount(mountpoint: path, options: mountOptions) } else { mount = nil }
        let deviceFD = takeover?.fd ?? mount!.fd
        var sessionOptions = SessionOptions()
        sessionOptions.xattrs = xattrs
        sessionOptions.maxWorkers = max(1, maxWorkers)
        sessionOptions.passthrough = usePassthrough
        sessionOptions.cloneWorkerFDs = keeperSocket == nil
        sessionOptions.ioUring = ioUring
        let window = try Console.parseDuration(pollWindow).components
        sessionOptions.pollWindowNs = UInt64(window.seconds) * 1_000_000_000 + UInt64(window.attoseconds / 1_000_000_000)
        let session = FuseSession(fd: deviceFD, handler: fs, options: sessionOptions, restoring: takeover?.parameters)
        fs.attach(backingFiles: session.backing)
        if let takeover { fs.initialized(takeover.parameters) }
        let detach: @Sendable () -> Void = {
            if let mount { mount.unmount() } else { _ = umount2(path, Int32(MNT_DETACH)) }
        }

        // SIGTERM / SIGINT: detach the mount and commit what was written; the session
        // ends when the kernel drops the connection, then the rest is committed before
        // exit. The early commit matters when the connection outlives the detach (a
        // copy of the mount in another mount namespace, a process with its cwd inside):
        // the supervisor kills such a daemon past its stop timeout, and the bytes
        // written before the unstage must be in the store by then.
        var sources: [any DispatchSourceSignal] = []
        for sig in [SIGTERM, SIGINT] {
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler {
                detach()
                Thread {
                    do { try fs.commit() } catch { Self.log("commit at \(sig == SIGTERM ? "SIGTERM" : "SIGINT") failed: \(error)") }
                }.start()
            }
            source.resume()
            sources.append(source)
        }
        // SIGHUP: re-read the volume record (NodeExpandVolume, ModifyVolume) and apply
        // its capacity (statfs shows it at once) and commit interval.
        signal(SIGHUP, SIG_IGN)
        let reload = DispatchSource.makeSignalSource(signal: SIGHUP, queue: .global())
        let volumeID = record.id
        reload.setEventHandler {
            Task.detached {
                do {
                    let fresh = try await catalog.volume(volumeID)
                    let interval = try fresh.parameters["commitInterval"].map { try Console.parseDuration($0) }
                    fs.reconfigure(capacityBytes: fresh.capacityBytes, commitInterval: interval)
                    Self.log("reloaded volume \(volumeID): capacity \(fresh.capacityBytes) bytes"
                             + (interval.map { ", commit interval \($0)" } ?? ""))
                } catch {
                    Self.log("SIGHUP: cannot re-read volume \(volumeID): \(error)")
                }
            }
        }
        reload.resume()
        sources.append(reload)
        if let statsFile {
            // SIGUSR1: write the op counters and passthrough counters (tests, debugging).
            signal(SIGUSR1, SIG_IGN)
            let dump = DispatchSource.makeSignalSource(signal: SIGUSR1, queue: .global())
            dump.setEventHandler { MountStats.write(session: session, fs: fs, to: statsFile) }
            dump.resume()
            sources.append(dump)
        }
        fs.start()
        let control = try controlSocket.map { socket in
            var quiet = Logger(label: "hearth.mount.control")
            quiet.logLevel = .warning
            // fs.commit() blocks until the commit is durable: run it on its own thread.
            let routes = DaemonControl.routes(commit: { try await Self.onThread { try fs.commit() } },
                                              stats: { DaemonStatsReport(session: session, cache: cache).json })
            return try RPCServer(endpoints: [.unix(path: socket)], handlers: routes.handlers, logger: quiet)
        }
        if let takeover {
            // Requests the dead daemon read but never answered wait in the kernel's
            // processing queue: have them sent again, to us.
            let err = session.resendPending()
            let pause = ContinuousClock.now - takeoverStart
            Self.log("took over the session (fd \(takeover.fd)); FUSE_NOTIFY_RESEND \(err == 0 ? "sent" : "failed: errno \(err)"); restored in \(pause)")
        } else if let keeperSocket, let mount {
            saved.handOff(session: session, fd: mount.fd, keeperSocket: keeperSocket)
        }
        // Unbuffered, so a supervisor reading the pipe sees it at once.
        FileHandle.standardOutput.write(Data("hearth: serving volume \(record.id) (\(record.name)) at \(path)\n".utf8))
        // The session blocks in read(2) on its own threads, never on the cooperative pool.
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            let thread = Thread {
                nameCurrentThread("fuse-session")
                session.run()
                done.resume()
            }
            thread.start()
        }
        sources.forEach { $0.cancel() }
        await control?.shutdown(grace: .seconds(2))
        if FuseMount.isMounted(path) { detach() }
        mount?.close()
        if let takeover { Glibc.close(takeover.fd) }
        try fs.shutdown()
    }

    /// Runs blocking work on a thread of its own, off the cooperative pool.
    static func onThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (done: CheckedContinuation<T, any Error>) in
            Thread {
                do { done.resume(returning: try body()) } catch { done.resume(throwing: error) }
            }.start()
        }
    }

    static func log(_ message: String) {
        FileHandle.standardError.write(Data("hearth mount: \(message)\n".utf8))
    }

    static func defaultCacheDirectory(environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
        if let dir = environment["HEARTH_DATA_DIR"], !dir.isEmpty { return dir + "/cache" }
        if getuid() == 0 { return "/var/lib/hearth/cache" }
        return (environment["HOME"] ?? NSHomeDirectory()) + "/.local/share/hearth/cache"
    }
}
