import CSIProto
import Foundation
import HearthRPC
import HearthStore
import Logging
import SwiftProtobuf

/// CSI GroupController: several volumes snapshotted at one point. Each
/// volume's writer is asked to commit first (as for single snapshots), then
/// every head is pinned; member snapshots carry the group id and can only
/// be deleted with their group.
public struct GroupControllerService: Sendable {
    let controller: ControllerService

    public init(controller: ControllerService) { self.controller = controller }

    static let service = "/csi.v1.GroupController/"

    public var routes: RPCRoutes {
        var r = RPCRoutes()
        r.csi(Self.service, "GroupControllerGetCapabilities", capabilities)
        r.csi(Self.service, "CreateVolumeGroupSnapshot", withSecrets { $0.create })
        r.csi(Self.service, "GetVolumeGroupSnapshot", withSecrets { $0.get })
        r.csi(Self.service, "DeleteVolumeGroupSnapshot", withSecrets { $0.delete })
        return r
    }

    /// A handler run on the controller scoped to its request's secrets.
    func withSecrets<Request: CSISecretsCarrying, Response>(
        _ method: @escaping @Sendable (GroupControllerService) -> @Sendable (Request) async throws -> Response
    ) -> @Sendable (Request) async throws -> Response {
        { request in
            try await method(GroupControllerService(controller: try controller.scoped(request.secrets)))(request)
        }
    }

    func capabilities(_ request: Csi_V1_GroupControllerGetCapabilitiesRequest) async throws -> Csi_V1_GroupControllerGetCapabilitiesResponse {
        var capability = Csi_V1_GroupControllerServiceCapability()
        capability.rpc.type = .createDeleteGetVolumeGroupSnapshot
        var response = Csi_V1_GroupControllerGetCapabilitiesResponse()
        response.capabilities = [capability]
        return response
    }

    func create(_ request: Csi_V1_CreateVolumeGroupSnapshotRequest) async throws -> Csi_V1_CreateVolumeGroupSnapshotResponse {
        try Require.present(request.name, "name")
        guard !request.sourceVolumeIds.isEmpty else { throw RPCError(.invalidArgument, "source_volume_ids is required") }
        let unknown = request.parameters.keys.filter { !SnapshotMetadata.groupKeys.contains($0) }
        guard unknown.isEmpty else {
            throw RPCError(.invalidArgument, "group snapshot parameters are not supported (got \(unknown.sorted()))")
        }
        guard Set(request.sourceVolumeIds).count == request.sourceVolumeIds.count else {
            throw RPCError(.invalidArgument, "source_volume_ids names a volume twice")
        }
        for id in request.sourceVolumeIds where !Require.looksLikeID(id) {
            throw RPCError(.notFound, "volume \(id) does not exist")
        }
        let catalog = controller.catalog
        if let existing = try await catalog.groupSnapshot(named: request.name) {
            guard existing.sourceVolumeIDs == request.sourceVolumeIds.sorted() else {
                throw RPCError(.alreadyExists, "group snapshot \(request.name.debugDescription) exists for other volumes")
            }
            return try await response(existing)
        }
        for id in request.sourceVolumeIds { _ = try await catalog.volume(id) }
        await withTaskGroup(of: Void.self) { group in
            for id in request.sourceVolumeIds { group.addTask { _ = await controller.commitBeforeSnapshot(id) } }
        }
        let record = try await catalog.createGroupSnapshot(name: request.name, volumeIDs: request.sourceVolumeIds)
        controller.logger.info("group snapshot taken", metadata: ["id": "\(record.id)", "volumes": "\(record.sourceVolumeIDs)"])
        return try await response(record)
    }

    func response(_ record: GroupSnapshotRecord) async throws -> Csi_V1_CreateVolumeGroupSnapshotResponse {
        var response = Csi_V1_CreateVolumeGroupSnapshotResponse()
        response.groupSnapshot = try await message(record)
        return response
    }

    func message(_ record: GroupSnapshotRecord) async throws -> Csi_V1_VolumeGroupSnapshot {
        var group = Csi_V1_VolumeGroupSnapshot()
        group.groupSnapshotID = record.id
        for id in record.snapshotIDs {
            group.snapshots.append(controller.snapshot(try await controller.catalog.snapshot(id)))
        }
        group.creationTime = Google_Protobuf_Timestamp(date: record.createdAt)
        group.readyToUse = true
        return group
    }

    func get(_ request: Csi_V1_GetVolumeGroupSnapshotRequest) async throws -> Csi_V1_GetVolumeGroupSnapshotResponse {
        try Require.present(request.groupSnapshotID, "group_snapshot_id")
        guard Require.looksLikeID(request.groupSnapshotID) else {
            throw RPCError(.notFound, "group snapshot \(request.groupSnapshotID) does not exist")
        }
        let record = try await controller.catalog.groupSnapshot(request.groupSnapshotID)
        try checkMembers(request.snapshotIds, record)
        var response = Csi_V1_GetVolumeGroupSnapshotResponse()
        response.groupSnapshot = try await message(record)
        return response
    }

    func delete(_ request: Csi_V1_DeleteVolumeGroupSnapshotRequest) async throws -> Csi_V1_DeleteVolumeGroupSnapshotResponse {
        try Require.present(request.groupSnapshotID, "group_snapshot_id")
        guard Require.looksLikeID(request.groupSnapshotID) else { return Csi_V1_DeleteVolumeGroupSnapshotResponse() }
        guard let record = try? await controller.catalog.groupSnapshot(request.groupSnapshotID) else {
            return Csi_V1_DeleteVolumeGroupSnapshotResponse()
        }
        try checkMembers(request.snapshotIds, record)
        try await controller.catalog.deleteGroupSnapshot(record.id)
        return Csi_V1_DeleteVolumeGroupSnapshotResponse()
    }

    /// The spec asks plugins that can detect it to refuse a member list that does not match.
    func checkMembers(_ ids: [String], _ record: GroupSnapshotRecord) throws {
        guard ids.isEmpty || Set(ids) == Set(record.snapshotIDs) else {
            throw RPCError(.invalidArgument, "snapshot_ids \(ids.sorted()) do not match group \(record.id)'s snapshots \(record.snapshotIDs.sorted())")
        }
    }
}
