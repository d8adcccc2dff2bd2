import CSIProto
import HearthRPC
import HearthStore

/// ControllerPublish/Unpublish as a single-writer lease per volume: one node
/// writes, any number read. This is what makes MULTI_NODE_SINGLE_WRITER safe
/// with a write-back cache, and what the scheduler extender reads to keep
/// writers on the lease holder.
extension ControllerService {
    func publish(_ request: Csi_V1_ControllerPublishVolumeRequest) async throws -> Csi_V1_ControllerPublishVolumeResponse {
        try Require.present(request.volumeID, "volume_id")
        try Require.present(request.nodeID, "node_id")
        guard request.hasVolumeCapability else { throw RPCError(.invalidArgument, "volume_capability is required") }
        if let problem = VolumeCapabilities.problem(request.volumeCapability) { throw RPCError(.invalidArgument, problem) }
        guard Require.looksLikeID(request.volumeID) else { throw RPCError(.notFound, "volume \(request.volumeID) does not exist") }
        _ = try await catalog.volume(request.volumeID)
        guard let node = try await nodes.node(request.nodeID) else {
            throw RPCError(.notFound, "node \(request.nodeID) is not registered (no hearth node plugin has run there)")
        }
        let mode = request.volumeCapability.accessMode.mode
        let writer = !request.readonly && !VolumeCapabilities.isReadOnly(mode)
        let lease = try await publications.publish(PublishRequest(
            volumeID: request.volumeID, nodeID: request.nodeID, writer: writer,
            singleNode: VolumeCapabilities.isSingleNode(mode), maxVolumesOnNode: node.maxVolumes))
        logger.info("volume published", metadata: [
            "id": "\(request.volumeID)", "node": "\(request.nodeID)", "writer": "\(lease.writer ?? "-")",
        ])
        var response = Csi_V1_ControllerPublishVolumeResponse()
        response.publishContext = [PublishContext.access: writer ? PublishContext.readWrite : PublishContext.readOnly]
        return response
    }

    func unpublish(_ request: Csi_V1_ControllerUnpublishVolumeRequest) async throws -> Csi_V1_ControllerUnpublishVolumeResponse {
        try Require.present(request.volumeID, "volume_id")
        // Unknown volume or node: nothing is published there, which is what was asked.
        guard Require.looksLikeID(request.volumeID) else { return Csi_V1_ControllerUnpublishVolumeResponse() }
        try await publications.unpublish(volumeID: request.volumeID, nodeID: request.nodeID.isEmpty ? nil : request.nodeID)
        logger.info("volume unpublished", metadata: ["id": "\(request.volumeID)", "node": "\(request.nodeID)"])
        return Csi_V1_ControllerUnpublishVolumeResponse()
    }
}

/// Keys of the publish context the controller hands the node.
enum PublishContext {
    static let access = "hearth.csi.dev/access"
    static let readWrite = "rw"
    static let readOnly = "ro"
}
