import ArgumentParser
import AsyncHTTPClient
import Foundation
import HearthInventory
import HearthScheduler
import HearthStore
import Logging
import NIOCore

/// Prioritize latency of the extender as kube-scheduler sees it: a real HTTP server
/// on 127.0.0.1, one request at a time from a real client, pods with 8 Hearth
/// volumes, 100 / 1,000 / 5,000 candidate nodes, both the `NodeNames` and the
/// `Nodes` form. Target: p99 < 5 ms at 5,000 nodes with NodeNames. Also prints the
/// p50 of scoring alone (no HTTP, no JSON) and of parsing the NodeNames request as
/// the server does.
struct SchedulerBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "scheduler", abstract: "Extender prioritize p50/p99 for 100-5,000 nodes, NodeNames and Nodes forms.")

    @Option(help: "Requests per row in the NodeNames form.")
    var requests = 500

    @Option(help: "Requests per row in the Nodes form (bodies are megabytes).")
    var nodesFormRequests = 60

    @Option(help: "Hearth volumes per pod.")
    var volumes = 8

    @Flag(help: "After each row, print the server's own prioritize latency histogram (cumulative over rows): tells the server's time from the client's and the transport's.")
    var serverHistogram = false

    func run() async throws {
        var logger = Logger(label: "bench.scheduler")
        logger.logLevel = .critical
        let claims = (0..<volumes).map { PVCReference(namespace: "bench", name: "claim-\($0)") }
        var table: [PVCReference: ResolvedVolume] = [:]
        for (index, claim) in claims.enumerated() {
            table[claim] = ResolvedVolume(id: "vol-\(index)", logicalBytes: Int64(index + 1) << 30)
        }
        let inventory = InventoryStore(ttl: .seconds(3600))
        let metrics = SchedulerMetrics()
        let extender = LocalityExtender(inventory: inventory, resolver: StaticVolumeResolver(table),
                                        leases: InventoryLeaseSource(inventory: inventory), metrics: metrics, logger: logger)
        let http = SchedulerHTTP(extender: extender, metrics: metrics,
                                 configuration: SchedulerHTTPConfiguration(inventoryToken: { "bench" }))
        let (ports, sink) = AsyncStream<Int>.makeStream()
        let app = http.application(.all, host: "127.0.0.1", port: 0, logger: logger) { sink.yield($0) }
        let server = Task { try await app.run() }
        defer { server.cancel() }
        var iterator = ports.makeAsyncIterator()
        guard let port = await iterator.next() else { return }

        // Every node caches something of one or two volumes; 1 in 10 caches all 8.
        let allNodes = (0..<5000).map { "worker-\($0).zone-\($0 % 3).example.internal" }
        for (index, node) in allNodes.enumerated() {
            let cached = index % 10 == 0 ? Array(0..<volumes) : [index % volumes, (index / 7) % volumes]
            inventory.record(InventoryReport(node: node, volumes: cached.map {
                CachedVolume(volumeID: "vol-\($0)", cachedBytes: (Int64($0 + 1) << 30) / Int64(1 + index % 4), logicalBytes: Int64($0 + 1) << 30)
            }))
        }
        let pod = Self.podJSON(claims: claims)
        print("prioritize, \(volumes) Hearth volumes per pod, every node in the inventory; server: hearth scheduler (Hummingbird) "
            + "on 127.0.0.1, client: AsyncHTTPClient, one request at a time; latency = request sent → response read")
        print(cell("nodes", 8) + cell("form", 11) + cell("body", 10) + cell("p50 ms", 9) + cell("p99 ms", 9)
            + cell("max ms", 9) + cell("score ms", 10) + cell("decode ms", 11) + cell("JSONDecoder ms", 16) + "target")
        for count in [100, 1000, 5000] {
            let nodes = Array(allNodes.prefix(count))
            let byNames = "{\"Pod\":\(pod),\"Nodes\":null,\"NodeNames\":[\(nodes.map { "\"\($0)\"" }.joined(separator: ","))]}"
            let byNodes = "{\"Pod\":\(pod),\"Nodes\":{\"metadata\":{},\"items\":[\(nodes.map(Self.nodeJSON).joined(separator: ","))]},\"NodeNames\":null}"
            // The scoring alone (no HTTP, no JSON): what the extender adds beyond transport.
            let podValue = try JSONDecoder().decode(ExtenderArgs<NodeName>.self, from: Data(byNames.utf8)).pod!
            let scoring = try await Self.measure(requests) { _ = await extender.prioritize(pod: podValue, nodes: nodes) }
            let namesBuffer = ByteBuffer(string: byNames)
            let decoding = try await Self.measure(requests) { _ = try SchedulerHTTP.prioritizeArguments(namesBuffer) }
            // What parsing cost before the scanner (JSONDecoder), for comparison.
            let namesData = Data(byNames.utf8)
            let foundation = try await Self.measure(requests) { _ = try JSONDecoder().decode(ExtenderArgs<NodeName>.self, from: namesData) }
            for (form, body, runs) in [("NodeNames", byNames, requests), ("Nodes", byNodes, nodesFormRequests)] {
                let bytes = ByteBuffer(string: body)
                let stats = try await Self.measure(runs) {
                    var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)/prioritize")
                    request.method = .POST
                    request.headers.add(name: "Content-Type", value: "application/json")
                    request.body = .bytes(bytes)
                    let response = try await HTTPClient.shared.execute(request, timeout: .seconds(60))
                    let answer = try await response.body.collect(upTo: 64 << 20)
                    guard response.status == .ok, answer.readableBytes > 2 else { throw CleanExit.message("prioritize failed: \(response.status)") }
                }
                if serverHistogram {
                    let text = String(decoding: metrics.render(inventory: inventory), as: UTF8.self)
                    print(text.split(separator: "\n").filter { $0.contains("request_duration") && $0.contains("prioritize") }.joined(separator: "\n"))
                }
                let target = form == "NodeNames" && count == 5000 ? (stats.p99 < 5 ? "p99 < 5 ms: met" : "p99 < 5 ms: MISSED") : ""
                print(cell("\(count)", 8) + cell(form, 11) + cell(Self.size(body.utf8.count), 10)
                    + cell(String(format: "%.2f", stats.p50), 9) + cell(String(format: "%.2f", stats.p99), 9)
                    + cell(String(format: "%.2f", stats.max), 9) + cell(String(format: "%.3f", scoring.p50), 10)
                    + cell(form == "NodeNames" ? String(format: "%.3f", decoding.p50) : "", 11)
                    + cell(form == "NodeNames" ? String(format: "%.3f", foundation.p50) : "", 16) + target)
            }
        }
    }

    struct Stats { var p50: Double; var p99: Double; var max: Double }

    /// Runs `body` a few times to warm up, then `runs` times; milliseconds.
    static func measure(_ runs: Int, _ body: () async throws -> Void) async throws -> Stats {
        for _ in 0..<max(3, runs / 10) { try await body() }
        var samples: [Double] = []
        samples.reserveCapacity(runs)
        for _ in 0..<runs {
            let start = ContinuousClock.now
            try await body()
            let elapsed = ContinuousClock.now - start
            samples.append(Double(elapsed.components.seconds) * 1e3 + Double(elapsed.components.attoseconds) / 1e15)
        }
        samples.sort()
        func quantile(_ q: Double) -> Double { samples[min(samples.count - 1, Int((Double(samples.count) * q).rounded(.up)) - 1)] }
        return Stats(p50: quantile(0.5), p99: quantile(0.99), max: samples.last ?? 0)
    }

    static func size(_ bytes: Int) -> String {
        bytes >= 1 << 20 ? String(format: "%.1f MB", Double(bytes) / 1e6) : String(format: "%.0f kB", Double(bytes) / 1e3)
    }

    /// A v1.Pod as the Go client marshals it, with `claims` as PVC volumes.
    static func podJSON(claims: [PVCReference]) -> String {
        let volumes = claims.enumerated().map { "{\"name\":\"data-\($0.offset)\",\"persistentVolumeClaim\":{\"claimName\":\"\($0.element.name)\"}}" }
        return """
        {"metadata":{"name":"bench-0","namespace":"bench","uid":"6f0d7a52-8a5e-4c0e-9d55-2b1f3c4d5e6f","resourceVersion":"184467","creationTimestamp":"2025-03-01T10:00:00Z","labels":{"app":"bench"}},"spec":{"volumes":[\(volumes.joined(separator: ","))],"containers":[{"name":"bench","image":"busybox","resources":{"requests":{"cpu":"100m"}},"terminationMessagePath":"/dev/termination-log","terminationMessagePolicy":"File","imagePullPolicy":"IfNotPresent"}],"restartPolicy":"Always","terminationGracePeriodSeconds":30,"dnsPolicy":"ClusterFirst","serviceAccountName":"default","securityContext":{},"schedulerName":"hearth-scheduler","priority":0,"enableServiceLinks":true,"preemptionPolicy":"PreemptLowerPriority"},"status":{"phase":"Pending","qosClass":"Burstable"}}
        """
    }

    /// A v1.Node as a kubelet fills it in (~2.5 kB).
    static func nodeJSON(_ name: String) -> String {
        """
        {"metadata":{"name":"\(name)","uid":"a1b2c3d4-\(name)","resourceVersion":"183990","creationTimestamp":"2025-02-28T09:00:00Z","labels":{"kubernetes.io/arch":"amd64","kubernetes.io/hostname":"\(name)","kubernetes.io/os":"linux","topology.kubernetes.io/zone":"zone-a"},"annotations":{"node.alpha.kubernetes.io/ttl":"0","volumes.kubernetes.io/controller-managed-attach-detach":"true"}},"spec":{"podCIDR":"10.244.1.0/24","podCIDRs":["10.244.1.0/24"],"providerID":"kind://docker/kind/\(name)"},"status":{"capacity":{"cpu":"8","ephemeral-storage":"263174212Ki","memory":"32823040Ki","pods":"110"},"allocatable":{"cpu":"8","ephemeral-storage":"263174212Ki","memory":"32823040Ki","pods":"110"},"conditions":[{"type":"MemoryPressure","status":"False","lastHeartbeatTime":"2025-03-01T09:59:00Z","lastTransitionTime":"2025-02-28T09:00:00Z","reason":"KubeletHasSufficientMemory","message":"kubelet has sufficient memory available"},{"type":"DiskPressure","status":"False","lastHeartbeatTime":"2025-03-01T09:59:00Z","lastTransitionTime":"2025-02-28T09:00:00Z","reason":"KubeletHasNoDiskPressure","message":"kubelet has no disk pressure"},{"type":"Ready","status":"True","lastHeartbeatTime":"2025-03-01T09:59:00Z","lastTransitionTime":"2025-02-28T09:00:20Z","reason":"KubeletReady","message":"kubelet is posting ready status"}],"addresses":[{"type":"InternalIP","address":"172.18.0.3"},{"type":"Hostname","address":"\(name)"}],"daemonEndpoints":{"kubeletEndpoint":{"Port":10250}},"nodeInfo":{"machineID":"5f2c8b1e9a7d4c3b","systemUUID":"5f2c8b1e-9a7d-4c3b","bootID":"0e9d8c7b-6a5f","kernelVersion":"6.9.0","osImage":"Debian GNU/Linux 12 (bookworm)","containerRuntimeVersion":"containerd://1.7.18","kubeletVersion":"v1.31.0","kubeProxyVersion":"v1.31.0","operatingSystem":"linux","architecture":"amd64"},"images":[{"names":["registry.k8s.io/pause:3.10"],"sizeBytes":320368}]}}
        """
    }
}

private func cell(_ text: String, _ width: Int) -> String {
    text.count >= width ? text + " " : text + String(repeating: " ", count: width - text.count)
}
