import ArgumentParser
import Foundation
import HearthScheduler
import HearthStore
import Logging

/// `hearth scheduler`: the kube-scheduler extender (filter + prioritize by cached
/// bytes) and the inventory endpoint nodes report to. Runs beside a kube-scheduler
/// named `hearth-scheduler` (deploy/scheduler/).
struct SchedulerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "scheduler",
        abstract: "Serve the kube-scheduler extender (filter, prioritize) and the node inventory endpoint over HTTP.")

    @OptionGroup var storeOptions: StoreOptions

    @Option(name: .customLong("extender-listen"),
            help: "host:port for POST /filter and /prioritize (kube-scheduler runs in the same pod: keep it on localhost).")
    var extenderListen: String = "127.0.0.1:8888"

    @Option(help: "host:port for POST /inventory, GET /healthz, /readyz and /metrics.")
    var listen: String = "0.0.0.0:8889"

    @Option(name: .customLong("inventory-token-file"),
            help: "File holding the shared inventory token (a mounted Secret); HEARTH_INVENTORY_TOKEN if absent.")
    var inventoryTokenFile: String = "/var/run/secrets/hearth/inventory-token"

    @Option(name: .customLong("inventory-ttl"), help: "Seconds an inventory report stays valid.")
    var inventoryTTL: Int = 90

    @Flag(name: .customLong("no-kubernetes-fallback"),
          help: "Do not ask the API server for PVCs missing from the store's PVC index.")
    var noKubernetesFallback = false

    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "info"

    func validate() throws {
        _ = try Self.hostPort(extenderListen, "--extender-listen")
        _ = try Self.hostPort(listen, "--listen")
        guard inventoryTTL > 0 else { throw ValidationError("--inventory-ttl must be positive") }
    }

    func run() async throws {
        var logger = Logger(label: "hearth.scheduler")
        logger.logLevel = Logger.Level(rawValue: logLevel) ?? .info
        let objects = try storeOptions.open()
        let catalog = Catalog(objects)
        let kubernetes = noKubernetesFallback ? nil : try KubernetesClient.inCluster()
        if kubernetes == nil && !noKubernetesFallback {
            logger.notice("not in a cluster (no KUBERNETES_SERVICE_HOST): statically provisioned volumes are not scored")
        }
        let inventory = InventoryStore(ttl: .seconds(inventoryTTL))
        let metrics = SchedulerMetrics()
        let extender = LocalityExtender(
            inventory: inventory,
            resolver: CatalogVolumeResolver(catalog: catalog, kubernetes: kubernetes, logger: logger),
            // The controller's publication records are the lease; the nodes' reports
            // stand in only while the store cannot be read.
            leases: FallbackLeaseSource(primary: PublicationLeaseSource(publications: Publications(objects)),
                                        fallback: InventoryLeaseSource(inventory: inventory)),
            metrics: metrics, logger: logger)

        let tokenFile = SecretFile(path: inventoryTokenFile)
        let environmentToken = ProcessInfo.processInfo.environment["HEARTH_INVENTORY_TOKEN"]
        if tokenFile.read() == nil && (environmentToken ?? "").isEmpty {
            logger.warning("no inventory token in \(inventoryTokenFile) or HEARTH_INVENTORY_TOKEN: every report will be refused")
        }
        let probe = CachedProbe {
            do {
                _ = try await objects.list(prefix: "records/volumes/", startAfter: nil, continuationToken: nil, limit: 1)
                return nil
            } catch {
                return "object store unreachable: \(error)"
            }
        }
        let http = SchedulerHTTP(extender: extender, metrics: metrics, configuration: SchedulerHTTPConfiguration(
            inventoryToken: { tokenFile.read() ?? environmentToken }, readiness: { await probe() }))

        let (inventoryHost, inventoryPort) = try Self.hostPort(listen, "--listen")
        let (extenderHost, extenderPort) = try Self.hostPort(extenderListen, "--extender-listen")
        let inventoryApp = http.application([.inventory, .observability], host: inventoryHost, port: inventoryPort,
                                            logger: logger) { [logger] port in
            logger.info("inventory, health and metrics on \(inventoryHost):\(port)")
        }
        let extenderApp = http.application([.extender, .observability], host: extenderHost, port: extenderPort,
                                           logger: logger, services: [inventoryApp]) { [logger] port in
            logger.info("extender (filter, prioritize) on \(extenderHost):\(port)")
        }
        try await extenderApp.runService()
        try await kubernetes?.shutdown()
    }

    static func hostPort(_ text: String, _ flag: String) throws -> (String, Int) {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
              (0...65535).contains(port) else {
            throw ValidationError("\(flag) must be host:port, e.g. 127.0.0.1:8888")
        }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return (host.isEmpty ? "0.0.0.0" : host, port)
    }
}
