/// gRPC status codes (the numbers are the wire protocol's).
public enum RPCCode: Int, Sendable, CustomStringConvertible {
    case ok = 0
    case cancelled = 1
    case unknown = 2
    case invalidArgument = 3
    case deadlineExceeded = 4
    case notFound = 5
    case alreadyExists = 6
    case permissionDenied = 7
    case resourceExhausted = 8
    case failedPrecondition = 9
    case aborted = 10
    case outOfRange = 11
    case unimplemented = 12
    case `internal` = 13
    case unavailable = 14
    case dataLoss = 15
    case unauthenticated = 16

    public init(wire: Int) {
        self = RPCCode(rawValue: wire) ?? .unknown
    }

    public var description: String {
        switch self {
        case .ok: "OK"
        case .cancelled: "CANCELLED"
        case .unknown: "UNKNOWN"
        case .invalidArgument: "INVALID_ARGUMENT"
        case .deadlineExceeded: "DEADLINE_EXCEEDED"
        case .notFound: "NOT_FOUND"
        case .alreadyExists: "ALREADY_EXISTS"
        case .permissionDenied: "PERMISSION_DENIED"
        case .resourceExhausted: "RESOURCE_EXHAUSTED"
        case .failedPrecondition: "FAILED_PRECONDITION"
        case .aborted: "ABORTED"
        case .outOfRange: "OUT_OF_RANGE"
        case .unimplemented: "UNIMPLEMENTED"
        case .internal: "INTERNAL"
        case .unavailable: "UNAVAILABLE"
        case .dataLoss: "DATA_LOSS"
        case .unauthenticated: "UNAUTHENTICATED"
        }
    }
}

/// A call's non-OK outcome: what a handler throws to choose the status the
/// client sees, and what a client call throws when the server (or the
/// transport, or the deadline) ended the call with one.
public struct RPCError: Error, Sendable, CustomStringConvertible {
    public var code: RPCCode
    public var message: String
    /// Trailing metadata the server sent with the status (client side), or
    /// wants to send (server side).
    public var trailingMetadata: RPCMetadata

    public init(_ code: RPCCode, _ message: String, trailingMetadata: RPCMetadata = RPCMetadata()) {
        self.code = code
        self.message = message
        self.trailingMetadata = trailingMetadata
    }

    public var description: String { "\(code): \(message)" }
}
