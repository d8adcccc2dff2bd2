import CSIProto
import Foundation
import HearthRPC
import HearthStore
import SwiftProtobuf

/// Snapshots pin a volume's root: O(1) whatever the volume holds, readable
/// from any node, ready at once.
extension ControllerService {
    func createSnapshot(_ request: Csi_V1_CreateSnapshotRequest) async throws -> Csi_V1_CreateSnapshotResponse {
        try Require.present(request.name, "name")
        try Require.present(request.sourceVolumeID, "source_volume_id")
        let unknown = request.parameters.keys.filter { !SnapshotMetadata.keys.contains($0) }
        guard unknown.isEmpty else {
            throw RPCError(.invalidArgument, "snapshot parameters are not supported (got \(unknown.sorted()))")
        }
        if let existing = try await catalog.snapshot(named: request.name) {
            guard existing.sourceVolumeID == request.sourceVolumeID else {
                throw RPCError(.alreadyExists, "snapshot \(request.name.debugDescription) exists for volume \(existing.sourceVolumeID)")
            }
            var response = Csi_V1_CreateSnapshotResponse()
            response.snapshot = snapshot(existing)
            return response
        }
        guard Require.looksLikeID(request.sourceVolumeID) else {
            throw RPCError(.notFound, "volume \(request.sourceVolumeID) does not exist")
        }
        _ = try await catalog.volume(request.sourceVolumeID)
        if let reason = await commitBeforeSnapshot(request.sourceVolumeID) {
            await snapshotWarnings.pinnedLatestCommit(
                SnapshotWarning(snapshotName: request.name, volumeID: request.sourceVolumeID, reason: reason,
                                kubernetes: SnapshotMetadata(request.parameters)))
        }
        let record = try await catalog.createSnapshot(name: request.name, sourceVolumeID: request.sourceVolumeID)
        logger.info("snapshot taken", metadata: ["id": "\(record.id)", "volume": "\(record.sourceVolumeID)", "root": "\(record.root)"])
        var response = Csi_V1_CreateSnapshotResponse()
        response.snapshot = snapshot(record)
        return response
    }

    func deleteSnapshot(_ request: Csi_V1_DeleteSnapshotRequest) async throws -> Csi_V1_DeleteSnapshotResponse {
        try Require.present(request.snapshotID, "snapshot_id")
        guard Require.looksLikeID(request.snapshotID) else { return Csi_V1_DeleteSnapshotResponse() }
        if let record = try? await catalog.snapshot(request.snapshotID), let group = record.groupID {
            throw RPCError(.failedPrecondition, "snapshot \(record.id) belongs to group snapshot \(group); delete the group instead")
        }
        try await catalog.deleteSnapshot(request.snapshotID)
        return Csi_V1_DeleteSnapshotResponse()
    }

    func listSnapshots(_ request: Csi_V1_ListSnapshotsRequest) async throws -> Csi_V1_ListSnapshotsResponse {
        guard request.maxEntries >= 0 else { throw RPCError(.invalidArgument, "max_entries must not be negative") }
        var response = Csi_V1_ListSnapshotsResponse()
        if !request.snapshotID.isEmpty {
            // One snapshot by id: an unknown (or impossible) id lists nothing.
            guard Require.looksLikeID(request.snapshotID) else { return response }
            do {
                let record = try await catalog.snapshot(request.snapshotID)
                if request.sourceVolumeID.isEmpty || record.sourceVolumeID == request.sourceVolumeID {
                    response.entries = [entry(record)]
                }
            } catch StoreError.notFound {}
            return response
        }
        if !request.sourceVolumeID.isEmpty && !Require.looksLikeID(request.sourceVolumeID) { return response }
        let page: RecordPage<SnapshotRecord>
        do {
            page = try await catalog.listSnapshots(
                sourceVolumeID: request.sourceVolumeID.isEmpty ? nil : request.sourceVolumeID,
                maxEntries: Int(request.maxEntries), token: request.startingToken.isEmpty ? nil : request.startingToken)
        } catch StoreError.invalidArgument {
            throw RPCError(.aborted, "starting_token \(request.startingToken.debugDescription) is not valid")
        }
        response.entries = page.records.map(entry)
        response.nextToken = page.nextToken ?? ""
        return response
    }

    func getSnapshot(_ request: Csi_V1_GetSnapshotRequest) async throws -> Csi_V1_GetSnapshotResponse {
        try Require.present(request.snapshotID, "snapshot_id")
        guard Require.looksLikeID(request.snapshotID) else { throw RPCError(.notFound, "snapshot \(request.snapshotID) does not exist") }
        var response = Csi_V1_GetSnapshotResponse()
        response.snapshot = snapshot(try await catalog.snapshot(request.snapshotID))
        return response
    }

    func entry(_ record: SnapshotRecord) -> Csi_V1_ListSnapshotsResponse.Entry {
        var entry = Csi_V1_ListSnapshotsResponse.Entry()
        entry.snapshot = snapshot(record)
        return entry
    }

    func snapshot(_ record: SnapshotRecord) -> Csi_V1_Snapshot {
        var snapshot = Csi_V1_Snapshot()
        snapshot.snapshotID = record.id
        snapshot.sourceVolumeID = record.sourceVolumeID
        snapshot.sizeBytes = record.logicalBytes
        snapshot.creationTime = Google_Protobuf_Timestamp(date: record.createdAt)
        snapshot.readyToUse = true
        snapshot.groupSnapshotID = record.groupID ?? ""
        return snapshot
    }

    /// Asks the node holding the volume's write lease to commit what it has
    /// written, within a bound; past it, the snapshot pins the latest commit.
    /// Nil when the writer committed (or there is none); otherwise why the
    /// snapshot pins the latest commit instead.
    @discardableResult
    func commitBeforeSnapshot(_ volumeID: String) async -> String? {
        guard let writer = try? await publications.lease(volumeID).writer else { return nil }
        let outcome = await commitRequester.commit(volumeID: volumeID, node: writer)
        if let outcome { logger.notice("snapshot of \(volumeID) pins the latest commit: \(outcome)") }
        return outcome
    }
}

/// How the controller asks a node to commit a volume before a snapshot.
public protocol CommitRequester: Sendable {
    /// Nil when the node committed; otherwise why the snapshot will pin the
    /// latest commit instead (node unreachable, timed out, ...).
    func commit(volumeID: String, node: String) async -> String?
}

/// For a controller with no way to reach nodes (tests, single-process setups
/// where the node commits on its own schedule).
public struct NoCommitRequests: CommitRequester {
    public init() {}
    public func commit(volumeID: String, node: String) async -> String? { "no commit channel to node \(node)" }
}
