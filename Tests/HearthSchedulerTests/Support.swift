import AsyncHTTPClient
import Foundation
import HearthInventory
import HearthScheduler
import HearthStore
import Hummingbird
import Logging
import NIOCore
import Synchronization
import XCTest

/// A clock tests move by hand, to expire inventory without sleeping.
final class ManualClock: Sendable {
    private let offset = Mutex(Duration.zero)
    private let start = ContinuousClock.now
    var now: ContinuousClock.Instant { start + offset.withLock { $0 } }
    func advance(_ by: Duration) { offset.withLock { $0 += by } }
}

/// A real extender on 127.0.0.1 (a free port), with a real HTTP client.
final class ExtenderHarness: Sendable {
    static let token = "s3cret-inventory-token"

    let inventory: InventoryStore
    let clock: ManualClock
    let metrics: SchedulerMetrics
    let port: Int
    private let task: Task<Void, any Error>

    private init(inventory: InventoryStore, clock: ManualClock, metrics: SchedulerMetrics, port: Int, task: Task<Void, any Error>) {
        self.inventory = inventory
        self.clock = clock
        self.metrics = metrics
        self.port = port
        self.task = task
    }

    static func start(resolver: any VolumeResolver, leases: (InventoryStore) -> any LeaseSource = { InventoryLeaseSource(inventory: $0) },
                      ttl: Duration = .seconds(90), maxExtenderBody: Int = 8 << 20, maxInventoryBody: Int = 1 << 20,
                      routes: SchedulerRoutes = .all, token: String? = ExtenderHarness.token) async throws -> ExtenderHarness {
        let clock = ManualClock()
        let inventory = InventoryStore(ttl: ttl, now: { clock.now })
        let metrics = SchedulerMetrics()
        var logger = Logger(label: "test.extender")
        logger.logLevel = .critical
        let extender = LocalityExtender(inventory: inventory, resolver: resolver, leases: leases(inventory),
                                        metrics: metrics, logger: logger)
        var configuration = SchedulerHTTPConfiguration(inventoryToken: { token })
        configuration.maxExtenderBodyBytes = maxExtenderBody
        configuration.maxInventoryBodyBytes = maxInventoryBody
        let http = SchedulerHTTP(extender: extender, metrics: metrics, configuration: configuration)
        let (ports, portSink) = AsyncStream<Int>.makeStream()
        let app = http.application(routes, host: "127.0.0.1", port: 0, logger: logger) { port in portSink.yield(port) }
        let task = Task { try await app.run() }
        var iterator = ports.makeAsyncIterator()
        guard let port = await iterator.next() else { throw CancellationError() }
        return ExtenderHarness(inventory: inventory, clock: clock, metrics: metrics, port: port, task: task)
    }

    func stop() async {
        task.cancel()
        _ = try? await task.value
    }

    struct Reply {
        var status: Int
        var body: Data
        var text: String { String(decoding: body, as: UTF8.self) }
        func json() throws -> Any { try JSONSerialization.jsonObject(with: body, options: [.fragmentsAllowed]) }
        func decode<T: Decodable>(_ type: T.Type) throws -> T { try JSONDecoder().decode(type, from: body) }
    }

    func post(_ path: String, _ body: Data, headers: [(String, String)] = []) async throws -> Reply {
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)/\(path)")
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        request.body = .bytes(ByteBuffer(bytes: body))
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
        let bytes = try await response.body.collect(upTo: 256 << 20)
        return Reply(status: Int(response.status.code), body: Data(bytes.readableBytesView))
    }

    func post(_ path: String, _ text: String, headers: [(String, String)] = []) async throws -> Reply {
        try await post(path, Data(text.utf8), headers: headers)
    }

    func get(_ path: String) async throws -> Reply {
        let request = HTTPClientRequest(url: "http://127.0.0.1:\(port)/\(path)")
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
        let bytes = try await response.body.collect(upTo: 16 << 20)
        return Reply(status: Int(response.status.code), body: Data(bytes.readableBytesView))
    }

    /// Reports `volumes` for `node` with the right token.
    @discardableResult
    func report(_ node: String, _ volumes: [CachedVolume]) async throws -> Reply {
        let reply = try await post("inventory", try JSONEncoder().encode(InventoryReport(node: node, volumes: volumes)),
                                   headers: [("Authorization", "Bearer \(Self.token)")])
        XCTAssertEqual(reply.status, 200, reply.text)
        return reply
    }
}

/// Payloads shaped exactly as kube-scheduler's Go client marshals them: v1.Pod and
/// v1.NodeList with every field a real cluster fills in, keys as `encoding/json`
/// writes them (Go field names for extender types, `null` for nil pointers).
enum GoPayloads {
    static func pod(name: String = "trainer-0", namespace: String = "ml", annotations: [String: String] = [:],
                    claims: [(volume: String, claim: String, readOnly: Bool)], ephemeral: [String] = []) -> String {
        var volumes = claims.map { item in
            let readOnly = item.readOnly ? ",\"readOnly\":true" : ""  // Go omits false (omitempty)
            return "{\"name\":\"\(item.volume)\",\"persistentVolumeClaim\":{\"claimName\":\"\(item.claim)\"\(readOnly)}}"
        }
        volumes += ephemeral.map {
            "{\"name\":\"\($0)\",\"ephemeral\":{\"volumeClaimTemplate\":{\"metadata\":{\"creationTimestamp\":null},\"spec\":{\"accessModes\":[\"ReadWriteOnce\"],\"resources\":{\"requests\":{\"storage\":\"1Gi\"}},\"storageClassName\":\"hearth\"}}}}"
        }
        volumes.append("""
        {"name":"kube-api-access-7xk2p","projected":{"sources":[{"serviceAccountToken":{"expirationSeconds":3607,"path":"token"}},{"configMap":{"name":"kube-root-ca.crt","items":[{"key":"ca.crt","path":"ca.crt"}]}},{"downwardAPI":{"items":[{"path":"namespace","fieldRef":{"apiVersion":"v1","fieldPath":"metadata.namespace"}}]}}],"defaultMode":420}}
        """)
        let annotationJSON = annotations.isEmpty ? "" :
            ",\"annotations\":{" + annotations.map { "\"\($0.key)\":\"\($0.value)\"" }.joined(separator: ",") + "}"
        return """
        {"metadata":{"name":"\(name)","generateName":"trainer-","namespace":"\(namespace)","uid":"6f0d7a52-8a5e-4c0e-9d55-2b1f3c4d5e6f","resourceVersion":"184467","creationTimestamp":"2025-03-01T10:00:00Z","labels":{"app":"trainer","apps.kubernetes.io/pod-index":"0","controller-revision-hash":"trainer-7d9f8b6c5","statefulset.kubernetes.io/pod-name":"\(name)"}\(annotationJSON),"ownerReferences":[{"apiVersion":"apps/v1","kind":"StatefulSet","name":"trainer","uid":"0b7c1e2d-3f4a-5b6c-7d8e-9f0a1b2c3d4e","controller":true,"blockOwnerDeletion":true}],"managedFields":[{"manager":"kube-controller-manager","operation":"Update","apiVersion":"v1","time":"2025-03-01T10:00:00Z","fieldsType":"FieldsV1","fieldsV1":{"f:metadata":{"f:labels":{".":{},"f:app":{}}}}}]},"spec":{"volumes":[\(volumes.joined(separator: ","))],"containers":[{"name":"trainer","image":"python:3.12","command":["python","train.py"],"ports":[{"containerPort":8080,"protocol":"TCP"}],"resources":{"limits":{"cpu":"2","memory":"4Gi"},"requests":{"cpu":"1","memory":"2Gi"}},"volumeMounts":[{"name":"kube-api-access-7xk2p","readOnly":true,"mountPath":"/var/run/secrets/kubernetes.io/serviceaccount"}],"terminationMessagePath":"/dev/termination-log","terminationMessagePolicy":"File","imagePullPolicy":"IfNotPresent"}],"restartPolicy":"Always","terminationGracePeriodSeconds":30,"dnsPolicy":"ClusterFirst","serviceAccountName":"default","serviceAccount":"default","hostname":"\(name)","subdomain":"trainer","securityContext":{},"schedulerName":"hearth-scheduler","tolerations":[{"key":"node.kubernetes.io/not-ready","operator":"Exists","effect":"NoExecute","tolerationSeconds":300},{"key":"node.kubernetes.io/unreachable","operator":"Exists","effect":"NoExecute","tolerationSeconds":300}],"priority":0,"enableServiceLinks":true,"preemptionPolicy":"PreemptLowerPriority"},"status":{"phase":"Pending","conditions":[{"type":"PodScheduled","status":"False","lastProbeTime":null,"lastTransitionTime":"2025-03-01T10:00:00Z","reason":"Unschedulable","message":"0/3 nodes are available"}],"qosClass":"Burstable"}}
        """
    }

    static func node(_ name: String) -> String {
        """
        {"metadata":{"name":"\(name)","uid":"a1b2c3d4-\(name)","resourceVersion":"183990","creationTimestamp":"2025-02-28T09:00:00Z","labels":{"beta.kubernetes.io/arch":"amd64","beta.kubernetes.io/os":"linux","kubernetes.io/arch":"amd64","kubernetes.io/hostname":"\(name)","kubernetes.io/os":"linux"},"annotations":{"kubeadm.alpha.kubernetes.io/cri-socket":"unix:///run/containerd/containerd.sock","node.alpha.kubernetes.io/ttl":"0","volumes.kubernetes.io/controller-managed-attach-detach":"true"}},"spec":{"podCIDR":"10.244.1.0/24","podCIDRs":["10.244.1.0/24"],"providerID":"kind://docker/kind/\(name)","taints":[{"key":"dedicated","value":"gpu","effect":"NoSchedule","timeAdded":null}]},"status":{"capacity":{"cpu":"8","ephemeral-storage":"263174212Ki","hugepages-1Gi":"0","memory":"32823040Ki","pods":"110"},"allocatable":{"cpu":"8","ephemeral-storage":"263174212Ki","hugepages-1Gi":"0","memory":"32823040Ki","pods":"110"},"conditions":[{"type":"MemoryPressure","status":"False","lastHeartbeatTime":"2025-03-01T09:59:00Z","lastTransitionTime":"2025-02-28T09:00:00Z","reason":"KubeletHasSufficientMemory","message":"kubelet has sufficient memory available"},{"type":"Ready","status":"True","lastHeartbeatTime":"2025-03-01T09:59:00Z","lastTransitionTime":"2025-02-28T09:00:20Z","reason":"KubeletReady","message":"kubelet is posting ready status"}],"addresses":[{"type":"InternalIP","address":"172.18.0.3"},{"type":"Hostname","address":"\(name)"}],"daemonEndpoints":{"kubeletEndpoint":{"Port":10250}},"nodeInfo":{"machineID":"5f2c8b1e9a7d4c3b","systemUUID":"5f2c8b1e-9a7d-4c3b","bootID":"0e9d8c7b-6a5f","kernelVersion":"6.9.0-hearth","osImage":"Debian GNU/Linux 12 (bookworm)","containerRuntimeVersion":"containerd://1.7.18","kubeletVersion":"v1.31.0","kubeProxyVersion":"v1.31.0","operatingSystem":"linux","architecture":"amd64"},"images":[{"names":["registry.k8s.io/pause@sha256:ee6521f290b2168b6e0935a181d4cff9be1ac3f505666ef0e3c98fae8199917a","registry.k8s.io/pause:3.10"],"sizeBytes":320368}],"volumesInUse":["kubernetes.io/csi/hearth.csi.dev^vol-aaaa"],"allocatableRatio":1.5}}
        """
    }

    /// ExtenderArgs in the `Nodes` form (nodeCacheCapable: false).
    static func argsWithNodes(pod: String, nodes: [String]) -> String {
        "{\"Pod\":\(pod),\"Nodes\":{\"metadata\":{},\"items\":[\(nodes.map(node).joined(separator: ","))]},\"NodeNames\":null}"
    }

    /// ExtenderArgs in the `NodeNames` form (nodeCacheCapable: true).
    static func argsWithNames(pod: String, nodes: [String]) -> String {
        "{\"Pod\":\(pod),\"Nodes\":null,\"NodeNames\":[\(nodes.map { "\"\($0)\"" }.joined(separator: ","))]}"
    }
}

extension PVCReference {
    static func ml(_ name: String) -> PVCReference { PVCReference(namespace: "ml", name: name) }
}

/// A shareable lock-protected value (a `Mutex` cannot be captured or passed around).
final class Locked<Value: Sendable>: Sendable {
    private let mutex: Mutex<Value>
    init(_ value: Value) { mutex = Mutex(value) }
    func withLock<R>(_ body: (inout Value) -> R) -> R { mutex.withLock { body(&$0) } }
}
