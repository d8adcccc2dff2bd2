import Hummingbird
import Logging
import NIOCore

/// `GET /metrics` and `GET /healthz` on their own port, for Prometheus and
/// kubelet probes, beside a plugin's gRPC socket.
public enum MetricsServer {
    /// Serves until the task is cancelled. `onRunning` gets the bound port
    /// (port 0 picks a free one).
    public static func run(host: String, port: Int, metrics: PluginMetrics, logger: Logger,
                           onRunning: @escaping @Sendable (Int) async -> Void = { _ in }) async throws {
        let router = Router()
        router.get("healthz") { _, _ in Response(status: .ok, body: .init(byteBuffer: ByteBuffer(string: "ok\n"))) }
        router.get("metrics") { _, _ -> Response in
            Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                     body: .init(byteBuffer: ByteBuffer(bytes: await metrics.render())))
        }
        let application = Application(
            router: router, configuration: .init(address: .hostname(host, port: port), serverName: "hearth-metrics"),
            onServerRunning: { channel in await onRunning(channel.localAddress?.port ?? port) }, logger: logger)
        // No signals of its own: the plugin's TerminationSignals handle SIGTERM and
        // cancel this task. With Hummingbird's default, swift-service-lifecycle took
        // SIGTERM for the metrics server alone, and now and then the plugin never
        // saw it (`hearth serve --metrics-listen` stayed up after SIGTERM).
        try await application.runService(gracefulShutdownSignals: [])
    }
}
