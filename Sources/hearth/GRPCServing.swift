import ArgumentParser
import Dispatch
import Foundation
import HearthMetrics
import HearthRPC
import Logging

/// Flags every gRPC role shares, spelled as the CSI drivers spell them.
struct GRPCServingOptions: ParsableArguments {
    @Option(help: "Where to serve CSI: unix:///path/csi.sock, tcp://host:port or host:port.")
    var endpoint: String = "unix:///run/hearth/csi.sock"

    @Option(help: "Permissions of the unix socket file, in octal.")
    var socketMode: String = "600"

    @Option(help: "Seconds calls in flight get to finish at shutdown before they are cancelled.")
    var shutdownGrace: Int = 10

    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "info"

    @Option(help: "Serve Prometheus /metrics and /healthz on this host:port (e.g. 0.0.0.0:9808); off when unset.")
    var metricsListen: String?

    func validate() throws {
        guard mode_t(socketMode, radix: 8) != nil else {
            throw ValidationError("--socket-mode must be octal, e.g. 600")
        }
        _ = try parsedEndpoint()
        if let metricsListen { _ = try SchedulerCommand.hostPort(metricsListen, "--metrics-listen") }
    }

    func parsedEndpoint() throws -> RPCEndpoint {
        do { return try RPCEndpoint(parsing: endpoint) } catch let error as RPCError {
            throw ValidationError(error.message)
        }
    }

    func logger(_ label: String) -> Logger {
        var logger = Logger(label: label)
        logger.logLevel = Logger.Level(rawValue: logLevel) ?? .info
        return logger
    }

    /// Serves `routes` until SIGTERM or SIGINT, then shuts down gracefully;
    /// with `--metrics-listen`, every call is counted and timed for /metrics,
    /// which also shows what `extraMetrics` samples at scrape time.
    /// `stop`: lets other code stop the server (the node plugin handing over).
    func serve(_ routes: RPCRoutes, logger: Logger, extraMetrics: @escaping @Sendable () async -> String = { "" },
               stop: StopSwitch? = nil) async throws {
        var routes = routes
        var metricsTask: Task<Void, Never>? = nil
        if let metricsListen {
            let metrics = PluginMetrics(extra: extraMetrics)
            routes = metrics.instrument(routes)
            let (host, port) = try SchedulerCommand.hostPort(metricsListen, "--metrics-listen")
            metricsTask = Task {
                do {
                    try await MetricsServer.run(host: host, port: port, metrics: metrics, logger: logger) { bound in
                        logger.info("metrics on \(host):\(bound)")
                    }
                } catch {
                    logger.error("metrics server stopped: \(error)")
                }
            }
        }
        defer { metricsTask?.cancel() }
        var options = RPCServerOptions()
        options.socketMode = mode_t(socketMode, radix: 8) ?? 0o600
        let endpoint = try parsedEndpoint()
        if case .unix(let path) = endpoint {
            try FileManager.default.createDirectory(
                atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        }
        let server = try RPCServer(endpoints: [endpoint], handlers: routes.handlers, options: options, logger: logger)
        let grace = Duration.seconds(shutdownGrace)
        let hardStop = shutdownGrace + 15
        let signals = TerminationSignals { signal in
            logger.info("received signal \(signal); shutting down")
            Task { await server.shutdown(grace: grace) }
            // A shutdown that never finishes (once seen in CI: the process stayed up
            // after SIGTERM with its CSI socket still bound) must not keep the process:
            // kubelet would kill it only after the pod's whole grace period, and a
            // test waiting for the exit would hang. The volumes' daemons are separate
            // processes and are not affected.
            DispatchQueue.global().asyncAfter(deadline: .now() + .seconds(hardStop)) {
                logger.error("shutdown did not finish \(hardStop) s after signal \(signal); exiting")
                Glibc.exit(1)
            }
        }
        stop?.arm { Task { await server.shutdown(grace: grace) } }
        await server.waitUntilStopped()
        withExtendedLifetime(signals) {}
    }
}

/// Turns SIGTERM and SIGINT into a callback (once each), instead of death.
final class TerminationSignals {
    private let sources: [any DispatchSourceSignal]

    init(_ onSignal: @escaping @Sendable (Int32) -> Void) {
        sources = [SIGTERM, SIGINT].map { number in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { onSignal(number) }
            source.resume()
            return source
        }
    }

    deinit {
        for source in sources { source.cancel() }
    }
}
