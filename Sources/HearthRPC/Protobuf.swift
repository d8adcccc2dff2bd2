import SwiftProtobuf

/// The method table of a server, filled with typed protobuf handlers.
/// Requests that do not decode answer INVALID_ARGUMENT before the handler runs.
public struct RPCRoutes: Sendable {
    public private(set) var handlers: [String: RPCHandler] = [:]

    public init() {}

    /// Registers `/service/method`. The handler gets the decoded request and
    /// the call's context (metadata, deadline, peer).
    public mutating func unary<Request: SwiftProtobuf.Message, Response: SwiftProtobuf.Message>(
        _ method: String, _ body: @escaping @Sendable (Request, RPCServerRequest) async throws -> Response
    ) {
        handlers[method] = { call in
            let request: Request
            do {
                request = try Request(serializedBytes: call.message)
            } catch {
                throw RPCError(.invalidArgument, "cannot decode \(Request.protoMessageName): \(error)")
            }
            let response = try await body(request, call)
            return RPCServerResponse(try response.serializedBytes())
        }
    }

    /// Registers a bytes-level handler (tests, proxies).
    public mutating func raw(_ method: String, _ handler: @escaping RPCHandler) {
        handlers[method] = handler
    }

    public mutating func merge(_ other: RPCRoutes) {
        handlers.merge(other.handlers) { _, new in new }
    }
}

extension RPCChannel {
    /// A typed unary call: encodes the request, decodes the response (a
    /// response that does not decode is INTERNAL).
    public func call<Request: SwiftProtobuf.Message, Response: SwiftProtobuf.Message>(
        _ method: String, _ request: Request, as: Response.Type = Response.self,
        metadata: RPCMetadata = RPCMetadata(), timeout: Duration? = nil
    ) async throws -> Response {
        let reply = try await unary(method, try request.serializedBytes(), metadata: metadata, timeout: timeout)
        do {
            return try Response(serializedBytes: reply.message)
        } catch {
            throw RPCError(.internal, "cannot decode \(Response.protoMessageName): \(error)")
        }
    }
}
