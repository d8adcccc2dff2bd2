import CSIProto
import HearthRPC

/// What Hearth volumes support, in one place: filesystem (mount) access, not
/// raw block; every access mode except MULTI_NODE_MULTI_WRITER, because the
/// write-back cache holds one writer's data per volume (MULTI_NODE_SINGLE_WRITER
/// works through the single-writer lease).
enum VolumeCapabilities {
    typealias Mode = Csi_V1_VolumeCapability.AccessMode.Mode

    static let supportedModes: Set<Mode> = [
        .singleNodeWriter, .singleNodeReaderOnly, .multiNodeReaderOnly, .multiNodeSingleWriter,
        .singleNodeSingleWriter, .singleNodeMultiWriter,
    ]

    static let supportedText = "supported: SINGLE_NODE_WRITER, SINGLE_NODE_READER_ONLY, SINGLE_NODE_SINGLE_WRITER, SINGLE_NODE_MULTI_WRITER, MULTI_NODE_READER_ONLY, MULTI_NODE_SINGLE_WRITER (one writer node at a time through the publish lease)"

    /// Nil when supported, else the reason.
    static func problem(_ capability: Csi_V1_VolumeCapability) -> String? {
        switch capability.accessType {
        case .block?: return "raw block volumes are not supported: Hearth volumes are filesystems (use a mount capability)"
        case nil: return "volume capability needs an access type (mount)"
        case .mount?: break
        }
        guard capability.hasAccessMode else { return "volume capability needs an access mode" }
        let mode = capability.accessMode.mode
        if mode == .multiNodeMultiWriter {
            return "MULTI_NODE_MULTI_WRITER is not supported: a volume has one writer node at a time; \(supportedText)"
        }
        guard supportedModes.contains(mode) else { return "access mode \(mode) is not supported; \(supportedText)" }
        return nil
    }

    /// Checks a request's capability list (required, each supported).
    static func validate(_ capabilities: [Csi_V1_VolumeCapability], field: String = "volume_capabilities") throws {
        guard !capabilities.isEmpty else { throw RPCError(.invalidArgument, "\(field) is required") }
        for capability in capabilities {
            if let problem = problem(capability) { throw RPCError(.invalidArgument, problem) }
        }
    }

    /// Modes that let only one node have the volume.
    static func isSingleNode(_ mode: Mode) -> Bool {
        [.singleNodeWriter, .singleNodeReaderOnly, .singleNodeSingleWriter, .singleNodeMultiWriter].contains(mode)
    }

    static func isReadOnly(_ mode: Mode) -> Bool {
        mode == .singleNodeReaderOnly || mode == .multiNodeReaderOnly
    }
}
