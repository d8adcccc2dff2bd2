import CSIProto
import HearthRPC
import HearthStore
import SwiftProtobuf

/// The one mapping from what went wrong to the gRPC code the CSI spec
/// prescribes. Services throw `RPCError` where they know the code; store
/// errors pass through here.
enum CSIErrors {
    static func from(_ error: any Error) -> RPCError {
        switch error {
        case let error as RPCError:
            return error
        case let error as StoreError:
            switch error {
            case .notFound(let what): return RPCError(.notFound, "\(what) does not exist")
            case .alreadyExists(let what): return RPCError(.alreadyExists, what)
            case .conflict: return RPCError(.aborted, "\(error); retry")
            case .authentication: return RPCError(.unauthenticated, "object store refused the credentials: \(error)")
            case .invalidArgument(let message): return RPCError(.invalidArgument, message)
            case .corrupt: return RPCError(.dataLoss, "\(error)")
            case .unavailable: return RPCError(.unavailable, "\(error)")
            case .protocolError, .io: return RPCError(.internal, "\(error)")
            }
        case let error as PublishError:
            switch error {
            case .heldElsewhere(let message): return RPCError(.failedPrecondition, message)
            case .incompatible(let message): return RPCError(.alreadyExists, message)
            case .nodeFull(let message): return RPCError(.resourceExhausted, message)
            }
        case is CancellationError:
            return RPCError(.cancelled, "the call was cancelled")
        default:
            return RPCError(.internal, "\(error)")
        }
    }

    /// Runs a handler body, turning every error into the right status.
    static func mapped<T>(_ body: () async throws -> T) async throws -> T {
        do { return try await body() } catch { throw from(error) }
    }
}

/// Argument checks shared by every service: one validator per kind of argument.
enum Require {
    static func present(_ value: String, _ field: String) throws {
        guard !value.isEmpty else { throw RPCError(.invalidArgument, "\(field) is required") }
    }

    /// A volume or snapshot id from a request. Ids become parts of object
    /// keys, so anything not shaped like one of ours is refused here.
    static func id(_ value: String, _ field: String) throws {
        try present(value, field)
        do { try Identifiers.validate(value) } catch {
            throw RPCError(.invalidArgument, "\(field) \(value.debugDescription) is not a Hearth id")
        }
    }

    /// True when `value` could be one of our ids (lookups of anything else are NOT_FOUND).
    static func looksLikeID(_ value: String) -> Bool {
        (try? Identifiers.validate(value)) != nil
    }
}

extension RPCRoutes {
    /// Registers a CSI method: typed protobuf in and out, every error mapped
    /// to the status code the CSI spec prescribes.
    mutating func csi<Request: SwiftProtobuf.Message, Response: SwiftProtobuf.Message>(
        _ service: String, _ name: String, _ body: @escaping @Sendable (Request) async throws -> Response
    ) {
        unary(service + name) { (request: Request, _) in try await CSIErrors.mapped { try await body(request) } }
    }
}

/// CSI requests that carry `secrets` (from the StorageClass's secret
/// parameters), so a handler can run under the keys they hold.
protocol CSISecretsCarrying: Sendable { var secrets: [String: String] { get } }

extension Csi_V1_CreateVolumeRequest: CSISecretsCarrying {}
extension Csi_V1_DeleteVolumeRequest: CSISecretsCarrying {}
extension Csi_V1_ControllerPublishVolumeRequest: CSISecretsCarrying {}
extension Csi_V1_ControllerUnpublishVolumeRequest: CSISecretsCarrying {}
extension Csi_V1_ValidateVolumeCapabilitiesRequest: CSISecretsCarrying {}
extension Csi_V1_ControllerExpandVolumeRequest: CSISecretsCarrying {}
extension Csi_V1_ControllerModifyVolumeRequest: CSISecretsCarrying {}
extension Csi_V1_CreateSnapshotRequest: CSISecretsCarrying {}
extension Csi_V1_DeleteSnapshotRequest: CSISecretsCarrying {}
extension Csi_V1_ListSnapshotsRequest: CSISecretsCarrying {}
extension Csi_V1_GetSnapshotRequest: CSISecretsCarrying {}
extension Csi_V1_CreateVolumeGroupSnapshotRequest: CSISecretsCarrying {}
extension Csi_V1_GetVolumeGroupSnapshotRequest: CSISecretsCarrying {}
extension Csi_V1_DeleteVolumeGroupSnapshotRequest: CSISecretsCarrying {}
extension Csi_V1_NodeStageVolumeRequest: CSISecretsCarrying {}
extension Csi_V1_NodePublishVolumeRequest: CSISecretsCarrying {}
extension Csi_V1_NodeExpandVolumeRequest: CSISecretsCarrying {}
