import Foundation
import HearthRPC

/// The single validator for paths in node requests: absolute, no `..`, and
/// inside one of the roots the plugin was given (kubelet's directory by
/// default), so a request can never make the node mount over /etc.
public struct PathPolicy: Sendable {
    public let roots: [String]

    public init(roots: [String]) {
        self.roots = roots.map { URL(fileURLWithPath: $0).standardizedFileURL.path }
    }

    /// The normalised path, or INVALID_ARGUMENT saying what is wrong.
    public func check(_ path: String, _ field: String) throws -> String {
        guard !path.isEmpty else { throw RPCError(.invalidArgument, "\(field) is required") }
        guard path.hasPrefix("/") else { throw RPCError(.invalidArgument, "\(field) \(path.debugDescription) must be absolute") }
        guard !path.split(separator: "/").contains("..") else {
            throw RPCError(.invalidArgument, "\(field) \(path.debugDescription) must not contain ..")
        }
        guard !path.utf8.contains(0) else { throw RPCError(.invalidArgument, "\(field) contains a NUL byte") }
        let normalised = URL(fileURLWithPath: path).standardizedFileURL.path
        guard roots.contains(where: { normalised == $0 || normalised.hasPrefix($0 + "/") }) else {
            throw RPCError(.invalidArgument, "\(field) \(path.debugDescription) is outside the directories this node serves (\(roots.joined(separator: ", ")))")
        }
        return normalised
    }
}
