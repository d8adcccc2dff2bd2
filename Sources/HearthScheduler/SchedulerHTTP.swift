import Foundation
import HearthInventory
import HearthStore
import Hummingbird
import Logging
import NIOCore

/// Which endpoints a listener serves. The extender verbs are meant for the
/// kube-scheduler container beside the extender (localhost); inventory must be
/// reachable by every node; health and metrics go everywhere.
public struct SchedulerRoutes: OptionSet, Sendable {
    public let rawValue: Int
    public init(rawValue: Int) { self.rawValue = rawValue }

    /// `POST /filter`, `POST /prioritize`.
    public static let extender = SchedulerRoutes(rawValue: 1)
    /// `POST /inventory`.
    public static let inventory = SchedulerRoutes(rawValue: 2)
    /// `GET /healthz`, `/readyz`, `/metrics`.
    public static let observability = SchedulerRoutes(rawValue: 4)
    public static let all: SchedulerRoutes = [.extender, .inventory, .observability]
}

/// Limits and secrets of the HTTP layer.
public struct SchedulerHTTPConfiguration: Sendable {
    /// A `Nodes`-form request for 5,000 nodes is tens of megabytes; beyond this, 413.
    public var maxExtenderBodyBytes = 128 << 20
    /// A node with 100,000 cached volumes reports ~10 MB; beyond this, 413.
    public var maxInventoryBodyBytes = 16 << 20
    /// The shared inventory token; called per report so a rotated Secret file is
    /// picked up without a restart. nil or empty: every report is refused (403).
    public var inventoryToken: @Sendable () -> String?
    /// nil when ready, else why not (the `/readyz` body).
    public var readiness: @Sendable () async -> String?

    public init(inventoryToken: @escaping @Sendable () -> String?,
                readiness: @escaping @Sendable () async -> String? = { nil }) {
        self.inventoryToken = inventoryToken
        self.readiness = readiness
    }
}

/// The extender's HTTP surface over Hummingbird. Every failure is a 4xx with a JSON
/// `{"error": "..."}` message, never a crash: bad JSON and wrong types → 400, bodies
/// over the limit → 413, no token → 401, a wrong one → 403.
public struct SchedulerHTTP: Sendable {
    public let extender: LocalityExtender
    public let metrics: SchedulerMetrics
    public let configuration: SchedulerHTTPConfiguration

    public init(extender: LocalityExtender, metrics: SchedulerMetrics, configuration: SchedulerHTTPConfiguration) {
        self.extender = extender
        self.metrics = metrics
        self.configuration = configuration
    }

    /// A router with `routes`.
    public func router(_ routes: SchedulerRoutes = .all) -> Router<BasicRequestContext> {
        let router = Router(context: BasicRequestContext.self)
        if routes.contains(.extender) {
            router.post("filter") { request, _ in await measured("filter") { try await filter(request) } }
            router.post("prioritize") { request, _ in await measured("prioritize") { try await prioritize(request) } }
        }
        if routes.contains(.inventory) {
            router.post("inventory") { request, _ in await measured("inventory") { try await inventory(request) } }
        }
        if routes.contains(.observability) {
            router.get("healthz") { _, _ in Self.text(.ok, "ok\n") }
            router.get("readyz") { _, _ -> Response in
                if let reason = await configuration.readiness() { return Self.text(.serviceUnavailable, reason + "\n") }
                return Self.text(.ok, "ok\n")
            }
            router.get("metrics") { _, _ -> Response in
                Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                         body: .init(byteBuffer: ByteBuffer(bytes: metrics.render(inventory: extender.inventory))))
            }
        }
        return router
    }

    // MARK: handlers

    private func filter(_ request: Request) async throws -> Response {
        let args = try await Self.decode(ExtenderArgs<FullNode>.self, request, limit: configuration.maxExtenderBodyBytes)
        let (pod, names) = try Self.validate(args)
        let outcome = await extender.filter(pod: pod, nodes: names)
        var result = ExtenderFilterResult(failedNodes: outcome.failed, failedAndUnresolvableNodes: outcome.unresolvable)
        if args.nodeNames != nil {
            result.nodeNames = outcome.passed.map { names[$0] }
        } else if let nodes = args.nodes {
            result.nodes = NodeList(metadata: nodes.metadata, items: outcome.passed.map { nodes.items[$0] })
        }
        return try Self.json(result)
    }

    private func prioritize(_ request: Request) async throws -> Response {
        let body = try await Self.collect(request, limit: configuration.maxExtenderBodyBytes)
        let (pod, names) = try Self.prioritizeArguments(body)
        let priorities = await extender.prioritize(pod: pod, nodes: names)
        return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: HostPriority.listJSON(priorities)))
    }

    private func inventory(_ request: Request) async throws -> Response {
        guard let header = request.headers[.authorization], header.hasPrefix("Bearer "),
              !header.dropFirst(7).trimmingCharacters(in: .whitespaces).isEmpty else {
            metrics.inventoryReport("unauthorized")
            throw HTTPFailure(.unauthorized, "inventory reports need an Authorization: Bearer <token> header",
                              headers: [.wwwAuthenticate: "Bearer realm=\"hearth-inventory\""])
        }
        let presented = header.dropFirst(7).trimmingCharacters(in: .whitespaces)
        guard let expected = configuration.inventoryToken(), !expected.isEmpty,
              Self.constantTimeEqual(Array(presented.utf8), Array(expected.utf8)) else {
            metrics.inventoryReport("forbidden")
            throw HTTPFailure(.forbidden, "the inventory token is not the one this extender was given")
        }
        let report: InventoryReport
        do {
            report = try await Self.decode(InventoryReport.self, request, limit: configuration.maxInventoryBodyBytes)
            try Self.validate(report)
        } catch {
            metrics.inventoryReport("invalid")
            throw error
        }
        extender.inventory.record(report)
        metrics.inventoryReport("accepted")
        let ttl = Int(extender.inventory.ttl.components.seconds)
        return try Self.json(InventoryAck(node: report.node, volumes: report.volumes.count, ttlSeconds: ttl))
    }

    /// The pod and candidate names of a prioritize body. The scanner takes every
    /// well-formed request; anything else goes through JSONDecoder, which explains
    /// what is wrong (an error answered as 400). Public for the benchmark.
    public static func prioritizeArguments(_ body: ByteBuffer) throws -> (pod: Pod, nodes: [String]) {
        if let fast = body.withUnsafeReadableBytes(ExtenderArgsScanner.scan), let pod = fast.pod, let names = fast.names {
            return (pod, names)
        }
        return try validate(try decode(ExtenderArgs<NodeName>.self, body))
    }

    // MARK: plumbing

    /// Runs a handler, turning ``HTTPFailure`` into its response and anything else
    /// into a 500 with a message, and records the request's status and latency.
    private func measured(_ verb: String, _ body: () async throws -> Response) async -> Response {
        let start = ContinuousClock.now
        let response: Response
        do {
            response = try await body()
        } catch let failure as HTTPFailure {
            response = failure.response
        } catch {
            extender.logger.error("\(verb) failed: \(error)")
            response = HTTPFailure(.internalServerError, "\(verb) failed: \(error)").response
        }
        metrics.request(verb, status: response.status.code, duration: ContinuousClock.now - start)
        return response
    }

    private static func decode<T: Decodable>(_ type: T.Type, _ request: Request, limit: Int) async throws -> T {
        try decode(type, try await collect(request, limit: limit))
    }

    /// The whole body, or 413 beyond `limit`.
    private static func collect(_ request: Request, limit: Int) async throws -> ByteBuffer {
        if let length = request.headers[.contentLength].flatMap(Int.init), length > limit {
            throw HTTPFailure(.contentTooLarge, "request body of \(length) bytes exceeds the limit of \(limit) bytes")
        }
        let body: ByteBuffer
        do {
            body = try await request.body.collect(upTo: limit)
        } catch is NIOTooManyBytesError {
            throw HTTPFailure(.contentTooLarge, "request body exceeds the limit of \(limit) bytes")
        }
        return body
    }

    private static func decode<T: Decodable>(_ type: T.Type, _ body: ByteBuffer) throws -> T {
        do {
            return try JSONDecoder().decode(T.self, from: Data(body.readableBytesView))
        } catch let error as DecodingError {
            throw HTTPFailure(.badRequest, "invalid \(String(describing: T.self).prefix { $0 != "<" }): \(describe(error))")
        } catch {
            throw HTTPFailure(.badRequest, "invalid JSON: \(error)")
        }
    }

    private static func validate<Node>(_ args: ExtenderArgs<Node>) throws -> (Pod, [String]) {
        guard let pod = args.pod else { throw HTTPFailure(.badRequest, "ExtenderArgs.Pod is required") }
        guard args.nodes != nil || args.nodeNames != nil else {
            throw HTTPFailure(.badRequest, "ExtenderArgs needs Nodes or NodeNames")
        }
        return (pod, args.candidateNames)
    }

    private static func validate(_ report: InventoryReport) throws {
        guard (1...253).contains(report.node.utf8.count) else {
            throw HTTPFailure(.badRequest, "inventory report needs a node name of 1...253 bytes")
        }
        for volume in report.volumes {
            do { try Identifiers.validate(volume.volumeID) } catch {
                throw HTTPFailure(.badRequest, "inventory report names an invalid volume id \(volume.volumeID.debugDescription)")
            }
            guard volume.cachedBytes >= 0, volume.logicalBytes >= 0 else {
                throw HTTPFailure(.badRequest, "volume \(volume.volumeID): byte counts must not be negative")
            }
        }
    }

    /// "type mismatch at Pod.spec.volumes[0].name: expected String" and the like.
    static func describe(_ error: DecodingError) -> String {
        func path(_ keys: [any CodingKey]) -> String {
            let text = keys.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined()
            return text.hasPrefix(".") ? String(text.dropFirst()) : (text.isEmpty ? "top level" : text)
        }
        switch error {
        case .typeMismatch(let type, let context):
            return "wrong type at \(path(context.codingPath)): expected \(type)"
        case .valueNotFound(let type, let context):
            return "missing value at \(path(context.codingPath)): expected \(type)"
        case .keyNotFound(let key, let context):
            return "missing key \(path(context.codingPath + [key]))"
        case .dataCorrupted(let context):
            let underlying = context.underlyingError.map { ": \($0)" } ?? ""
            return "malformed JSON at \(path(context.codingPath)): \(context.debugDescription)\(underlying)"
        @unknown default:
            return "\(error)"
        }
    }

    private static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        var difference = UInt8(truncatingIfNeeded: a.count ^ b.count)
        for index in 0..<max(a.count, b.count) {
            difference |= (index < a.count ? a[index] : 0) ^ (index < b.count ? b[index] : 0)
        }
        return difference == 0
    }

    static func json<T: Encodable>(_ value: T) throws -> Response {
        let data = try JSONEncoder().encode(value)
        return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    static func text(_ status: HTTPResponse.Status, _ text: String) -> Response {
        Response(status: status, headers: [.contentType: "text/plain; charset=utf-8"], body: .init(byteBuffer: ByteBuffer(string: text)))
    }
}

/// A refusal with its status and message, thrown by handlers and answered as JSON.
struct HTTPFailure: Error {
    var status: HTTPResponse.Status
    var message: String
    var headers: HTTPFields

    init(_ status: HTTPResponse.Status, _ message: String, headers: HTTPFields = [:]) {
        self.status = status
        self.message = message
        self.headers = headers
    }

    var response: Response {
        var headers = self.headers
        headers[.contentType] = "application/json"
        let body = (try? JSONEncoder().encode(["error": message])) ?? Data("{}".utf8)
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }
}

extension SchedulerHTTP {
    /// A Hummingbird application serving `routes` on `host:port` (port 0 picks a free
    /// one; `onRunning` receives the bound port). Run it, or hand it to a ServiceGroup.
    /// `services` run alongside (and stop with) it, e.g. a second listener.
    public func application(_ routes: SchedulerRoutes, host: String, port: Int, logger: Logger,
                            services: [any ApplicationProtocol] = [],
                            onRunning: @escaping @Sendable (Int) async -> Void = { _ in }) -> some ApplicationProtocol {
        Application(router: router(routes),
                    configuration: .init(address: .hostname(host, port: port), serverName: "hearth-scheduler"),
                    services: services,
                    onServerRunning: { channel in await onRunning(channel.localAddress?.port ?? port) },
                    logger: logger)
    }
}
