import AsyncHTTPClient
import Foundation
import Logging
import NIOCore

/// Errors a report can end in, with the reason the extender gave.
public enum InventoryReportError: Error, Sendable, CustomStringConvertible {
    /// The extender refused the token (401: none sent, 403: wrong one).
    case rejected(status: Int, message: String)
    /// Any other non-2xx answer.
    case failed(status: Int, message: String)

    public var description: String {
        switch self {
        case .rejected(let status, let message): "inventory report rejected (\(status)): \(message)"
        case .failed(let status, let message): "inventory report failed (\(status)): \(message)"
        }
    }
}

/// The node side of the inventory: `hearth node` owns one and tells the scheduler
/// extender which volumes it caches, every `interval` and soon after each change.
///
/// Why push and not pull: the extender must answer kube-scheduler in milliseconds, so
/// it cannot ask nodes while scoring; and nodes behind NAT or with many volumes are
/// cheaper to hear from than to poll. Reports are whole snapshots (idempotent), so a
/// lost or duplicated report is harmless and the next one repairs everything.
///
/// Changes are coalesced: `noteChange()` never blocks and any number of calls made
/// while a report is in flight produce one more report, no sooner than
/// `minimumGap` after the previous one.
public actor InventoryReporter {
    /// Produces the node's current cache contents.
    public typealias Snapshot = @Sendable () async -> [CachedVolume]

    private let url: String
    private let node: String
    private let token: @Sendable () throws -> String
    private let interval: Duration
    private let minimumGap: Duration
    private let client: HTTPClient
    private let snapshot: Snapshot
    private let logger: Logger
    private let wakeups: AsyncStream<Void>
    private let wake: AsyncStream<Void>.Continuation

    /// - Parameters:
    ///   - endpoint: the extender's inventory URL, e.g. `http://hearth-scheduler.kube-system:8889/inventory`.
    ///   - token: returns the shared token; called for every report so a rotated
    ///     Secret (re-projected into the pod's volume) is picked up without a restart.
    public init(endpoint: String, node: String, token: @escaping @Sendable () throws -> String,
                interval: Duration = .seconds(30), minimumGap: Duration = .seconds(1),
                client: HTTPClient = .shared, logger: Logger = Logger(label: "hearth.inventory"),
                snapshot: @escaping Snapshot) {
        self.url = endpoint
        self.node = node
        self.token = token
        self.interval = interval
        self.minimumGap = minimumGap
        self.client = client
        self.snapshot = snapshot
        self.logger = logger
        let stream = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        wakeups = stream.stream
        wake = stream.continuation
    }

    /// A token read from a file (a mounted Secret), trimmed of surrounding whitespace.
    public static func tokenFile(_ path: String) -> @Sendable () throws -> String {
        { try String(contentsOfFile: path, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines) }
    }

    /// Asks for a report soon (the cache gained or lost a volume, a lease changed).
    public nonisolated func noteChange() {
        wake.yield()
    }

    /// Reports now and every `interval` (and after changes) until the task is
    /// cancelled. Failures are logged and retried at the next tick, never thrown: the
    /// extender's data is soft state and scheduling works without it.
    public func run() async {
        let interval = self.interval
        let wake = self.wake
        let ticker = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: interval)
                wake.yield()
            }
        }
        defer { ticker.cancel() }
        wake.yield()
        for await _ in wakeups {
            if Task.isCancelled { break }
            do {
                _ = try await report()
            } catch {
                logger.warning("inventory report to \(url) failed: \(error)")
            }
            try? await Task.sleep(for: minimumGap)
        }
    }

    /// Sends one report of the current snapshot and returns the extender's answer.
    @discardableResult
    public func report() async throws -> InventoryAck {
        let report = InventoryReport(node: node, volumes: await snapshot())
        var request = HTTPClientRequest(url: url)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.headers.add(name: "Authorization", value: "Bearer \(try token())")
        request.body = .bytes(ByteBuffer(bytes: try JSONEncoder().encode(report)))
        let response = try await client.execute(request, timeout: .seconds(10))
        let body = try await response.body.collect(upTo: 1 << 20)
        let text = String(buffer: body)
        switch response.status.code {
        case 200..<300:
            return try JSONDecoder().decode(InventoryAck.self, from: Data(body.readableBytesView))
        case 401, 403:
            throw InventoryReportError.rejected(status: Int(response.status.code), message: text)
        default:
            throw InventoryReportError.failed(status: Int(response.status.code), message: text)
        }
    }
}
