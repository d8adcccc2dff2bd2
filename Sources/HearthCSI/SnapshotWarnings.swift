/// external-snapshotter's `--extra-create-metadata`: which VolumeSnapshot a
/// CreateSnapshot serves, so a warning can be attached to it.
public struct SnapshotMetadata: Sendable, Hashable {
    static let name = "csi.storage.k8s.io/volumesnapshot/name"
    static let namespace = "csi.storage.k8s.io/volumesnapshot/namespace"
    static let contentName = "csi.storage.k8s.io/volumesnapshotcontent/name"
    /// The only parameters CreateSnapshot accepts.
    static let keys: Set<String> = [name, namespace, contentName]
    /// The same for CreateVolumeGroupSnapshot.
    static let groupKeys: Set<String> = [
        "csi.storage.k8s.io/volumegroupsnapshot/name", "csi.storage.k8s.io/volumegroupsnapshot/namespace",
        "csi.storage.k8s.io/volumegroupsnapshotcontent/name",
    ]

    public var snapshotName: String?
    public var snapshotNamespace: String?
    public var contentName: String?

    init(_ parameters: [String: String]) {
        snapshotName = parameters[Self.name]
        snapshotNamespace = parameters[Self.namespace]
        contentName = parameters[Self.contentName]
    }
}

/// A snapshot taken without the writer's commit (node unreachable or too
/// slow): it holds the latest commit, not everything written before the call.
public struct SnapshotWarning: Sendable {
    public var snapshotName: String
    public var volumeID: String
    public var reason: String
    public var kubernetes: SnapshotMetadata
}

/// Where such warnings go besides the log: a Kubernetes Event on the
/// VolumeSnapshot, so the person who asked for it sees it (`kubectl describe`).
public protocol SnapshotWarningSink: Sendable {
    func pinnedLatestCommit(_ warning: SnapshotWarning) async
}

/// No API server (tests, `hearth serve`): the controller's log line is all.
public struct LogOnlySnapshotWarnings: SnapshotWarningSink {
    public init() {}
    public func pinnedLatestCommit(_ warning: SnapshotWarning) async {}
}
