import ArgumentParser
import Foundation
import HearthCSI
import HearthCache
import HearthRPC
import Logging
import HearthFS
import HearthFUSE
import HearthStore

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

    @Option(help: "FUSE passthrough for files whose bytes are all local: auto (when the kernel offers it and the daemon has CAP_SYS_ADMIN), on (fail without it), off.")
    var passthrough: PassthroughSetting = .auto

    @Option(help: .hidden)
    var statsFile: String?

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
        let cache = try NodeCache(directory: cacheDir ?? Self.defaultCacheDirectory(), limitBytes: try Console.parseBytes(cacheSize))
        var config = VolumeConfiguration(volumeID: record.id, capacityBytes: record.capacityBytes)
        config.readOnly = readOnly
        config.commitInterval = try Console.parseDuration(commitInterval)
        config.xattrs = xattrs
        let usePassthrough = try passthrough.resolve(readOnly: readOnly)
        config.passthrough = usePassthrough
        let fs = try await VolumeFileSystem.open(store, cache: cache, config: config)

        var mountOptions = ["default_permissions", "fsname=hearth:\(record.id)", "subtype=hearth"]
        if allowOther { mountOptions.append("allow_other") }
        if readOnly { mountOptions.append("ro") }
        let path = URL(fileURLWithPath: directory).standardizedFileURL.path
        let mount = try FuseMount(mountpoint: path, options: mountOptions)
        var sessionOptions = SessionOptions()
        sessionOptions.xattrs = xattrs
        sessionOptions.maxWorkers = max(1, maxWorkers)
        sessionOptions.passthrough = usePassthrough
        let session = FuseSession(fd: mount.fd, handler: fs, options: sessionOptions)
        fs.attach(backingFiles: session.backing)

        // SIGTERM / SIGINT: detach the mount; the session ends when the kernel drops
        // the connection, then dirty data is committed before exit.
        var sources: [any DispatchSourceSignal] = []
        for sig in [SIGTERM, SIGINT] {
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler { mount.unmount() }
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
            let routes = DaemonControl.routes { try await Self.onThread { try fs.commit() } }
            return try RPCServer(endpoints: [.unix(path: socket)], handlers: routes.handlers, logger: quiet)
        }
        // Unbuffered, so a supervisor reading the pipe sees it at once.
        FileHandle.standardOutput.write(Data("hearth: serving volume \(record.id) (\(record.name)) at \(path)\n".utf8))
        // The session blocks in read(2) on its own threads, never on the cooperative pool.
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            let thread = Thread {
                session.run()
                done.resume()
            }
            thread.name = "fuse-session"
            thread.start()
        }
        sources.forEach { $0.cancel() }
        await control?.shutdown(grace: .seconds(2))
        if FuseMount.isMounted(path) { mount.unmount() }
        mount.close()
        try fs.shutdown()
    }

    /// Runs blocking work on a thread of its own, off the cooperative pool.
    static func onThread(_ body: @escaping @Sendable () throws -> Void) async throws {
        try await withCheckedThrowingContinuation { (done: CheckedContinuation<Void, any Error>) in
            Thread {
                do { try body(); done.resume() } catch { done.resume(throwing: error) }
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
