import Foundation
import HearthRPC
import HearthStore
import Logging

/// The path a "commit now" request travels before a snapshot pins a volume:
/// controller → node plugin (`NodeCommitService`, TCP) → the volume's daemon
/// (`DaemonControl`, a unix socket per daemon). Each hop is a HearthRPC call
/// with a deadline, so a snapshot never waits on a node for longer than the
/// controller's bound.
public enum DaemonControl {
    public static let commitMethod = "/hearth.daemon.v1.Daemon/Commit"

    public static let statsMethod = "/hearth.daemon.v1.Daemon/Stats"

    /// What a daemon serves on its control socket. `commit` returns once
    /// everything written so far is durable in the store; `stats` is the
    /// daemon's counters as JSON, for the node plugin's /metrics.
    public static func routes(commit: @escaping @Sendable () async throws -> Void,
                              stats: (@Sendable () -> [UInt8])? = nil) -> RPCRoutes {
        var routes = RPCRoutes()
        if let stats { routes.raw(statsMethod) { _ in RPCServerResponse(stats()) } }
        routes.raw(commitMethod) { _ in
            do { try await commit() } catch let error as RPCError { throw error } catch {
                throw RPCError(.unavailable, "commit failed: \(error)")
            }
            return RPCServerResponse([])
        }
        return routes
    }

    /// Asks the daemon listening at `socket` to commit, within `timeout`.
    public static func commit(socket: String, timeout: Duration) async throws {
        let channel = RPCChannel(endpoint: .unix(path: socket))
        defer { Task { await channel.close() } }
        _ = try await channel.unary(commitMethod, [], timeout: timeout)
    }
}

extension DaemonControl {
    /// The daemon's counters (JSON), within `timeout`.
    public static func stats(socket: String, timeout: Duration) async throws -> [UInt8] {
        let channel = RPCChannel(endpoint: .unix(path: socket))
        defer { Task { await channel.close() } }
        return try await channel.unary(statsMethod, [], timeout: timeout).message
    }
}

extension NodeService {
    /// A staged volume's daemon counters (JSON), nil when it does not answer.
    public func daemonStats(_ volumeID: String, timeout: Duration = .seconds(1)) async -> [UInt8]? {
        guard let socket = daemons.controlSocket(volumeID) else { return nil }
        return try? await DaemonControl.stats(socket: socket, timeout: timeout)
    }
}

/// The node plugin's endpoint for controllers: commit a volume it serves.
/// Authenticated with a shared token when one is configured.
public struct NodeCommitService: Sendable {
    public static let commitMethod = "/hearth.node.v1.Node/CommitVolume"

    let node: NodeService
    let token: String?

    public init(node: NodeService, token: String?) {
        self.node = node
        self.token = token
    }

    public var routes: RPCRoutes {
        var routes = RPCRoutes()
        let token = token
        let node = node
        routes.raw(Self.commitMethod) { call in
            if let token, call.metadata["authorization"] != "Bearer \(token)" {
                throw RPCError(.unauthenticated, "a valid node token is required")
            }
            let volumeID = String(decoding: call.message, as: UTF8.self)
            try await node.commitVolume(volumeID, timeout: call.timeRemaining ?? .seconds(30))
            return RPCServerResponse([])
        }
        return routes
    }
}

extension NodeService {
    /// Commits what the volume's daemon holds. A volume this node does not
    /// serve has nothing to commit here: NOT_FOUND tells the controller so.
    public func commitVolume(_ volumeID: String, timeout: Duration) async throws {
        guard Require.looksLikeID(volumeID), daemons.state(volumeID) != nil, let socket = daemons.controlSocket(volumeID) else {
            throw RPCError(.notFound, "volume \(volumeID) is not staged on node \(settings.nodeID)")
        }
        try await DaemonControl.commit(socket: socket, timeout: timeout)
    }
}

/// Controller side: reach the lease holder through the address it registered.
public struct NodeCommitClient: CommitRequester {
    let nodes: NodeRegistry
    let token: String?
    let timeout: Duration

    public init(store: any ObjectStore, token: String?, timeout: Duration = .seconds(10)) {
        nodes = NodeRegistry(store)
        self.token = token
        self.timeout = timeout
    }

    public func commit(volumeID: String, node: String) async -> String? {
        guard let record = try? await nodes.node(node), let address = record.address,
              let endpoint = try? RPCEndpoint(parsing: address) else {
            return "node \(node) registered no address to reach it"
        }
        let channel = RPCChannel(endpoint: endpoint)
        defer { Task { await channel.close() } }
        var metadata = RPCMetadata()
        if let token { metadata.add("authorization", "Bearer \(token)") }
        do {
            _ = try await channel.unary(NodeCommitService.commitMethod, Array(volumeID.utf8), metadata: metadata, timeout: timeout)
            return nil
        } catch {
            return "node \(node) did not commit within \(timeout): \(error)"
        }
    }
}

/// `hearth serve`: controller and node share a process, so the commit
/// request is a function call.
public struct LocalCommits: CommitRequester {
    let node: NodeService
    let timeout: Duration

    public init(node: NodeService, timeout: Duration = .seconds(10)) {
        self.node = node
        self.timeout = timeout
    }

    public func commit(volumeID: String, node nodeID: String) async -> String? {
        guard nodeID == node.settings.nodeID else { return "node \(nodeID) is not this process's node" }
        do {
            try await node.commitVolume(volumeID, timeout: timeout)
            return nil
        } catch {
            return "\(error)"
        }
    }
}
