import Foundation
import HearthCSI
import HearthScheduler
import Logging

/// Snapshot warnings as Kubernetes Events on the VolumeSnapshot (named by
/// external-snapshotter's `--extra-create-metadata`), where `kubectl describe
/// volumesnapshot` shows them. The controller's service account may create
/// events (deploy/base/rbac-controller.yaml). Failing to post is logged, never
/// fails the snapshot.
struct KubernetesSnapshotEvents: SnapshotWarningSink {
    let api: KubernetesClient
    let logger: Logger

    func pinnedLatestCommit(_ warning: SnapshotWarning) async {
        guard let name = warning.kubernetes.snapshotName, let namespace = warning.kubernetes.snapshotNamespace else {
            logger.notice("snapshot \(warning.snapshotName) carries no VolumeSnapshot name (run csi-snapshotter with --extra-create-metadata): no event")
            return
        }
        let now = ISO8601DateFormatter().string(from: Date())
        let event: [String: Any] = [
            "apiVersion": "v1", "kind": "Event",
            "metadata": ["generateName": name + ".", "namespace": namespace],
            "involvedObject": ["apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
                               "name": name, "namespace": namespace],
            "type": "Warning", "reason": "SnapshotOfLatestCommit",
            "message": "volume \(warning.volumeID) was not committed before the snapshot (\(warning.reason)); "
                + "the snapshot holds its latest commit, not writes still in the node's cache",
            "source": ["component": "hearth-controller"],
            "reportingComponent": "hearth.csi.dev/controller",
            "reportingInstance": ProcessInfo.processInfo.hostName,
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        ]
        do {
            let body = try JSONSerialization.data(withJSONObject: event, options: [.sortedKeys])
            try await api.post("/api/v1/namespaces/\(KubernetesClient.escape(namespace))/events", json: body)
        } catch {
            logger.warning("cannot post the snapshot warning event for \(namespace)/\(name): \(error)")
        }
    }
}
