import CSIProto
import Foundation
import HearthRPC
import XCTest

/// Issue 5's local end-to-end: everything kubelet and the sidecars do, with
/// real processes, real FUSE mounts and bind mounts, on the embedded store
/// and then on S3 (moto on 127.0.0.1).
final class LocalEndToEndTests: XCTestCase {
    func testLifecycleOnTheDirectoryStore() async throws {
        try await LocalCluster.run { try await lifecycle($0) }
    }

    func testLifecycleOnS3() async throws {
        let moto = try await S3TestServer.start()
        defer { moto.stop() }
        try await moto.createBucket("e2e")
        try await LocalCluster.run(
            storeArguments: ["--store", "s3://e2e/cluster", "--s3-endpoint", moto.endpoint, "--s3-path-style"],
            environment: ["AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"]) { try await lifecycle($0) }
    }

    func lifecycle(_ c: LocalCluster) async throws {
        let capability = mountCapability(.singleNodeMultiWriter)

        // external-provisioner
        var create = Csi_V1_CreateVolumeRequest()
        create.name = "pvc-e2e"
        create.capacityRange.requiredBytes = 64 << 20
        create.volumeCapabilities = [capability]
        create.parameters = ["csi.storage.k8s.io/pvc/name": "data", "csi.storage.k8s.io/pvc/namespace": "default"]
        let volume = try await c.controllerCall("CreateVolume", create, as: Csi_V1_CreateVolumeResponse.self).volume

        // external-attacher, then kubelet: stage once, publish to two pods.
        let context = try await c.publish(volume.volumeID, capability)
        let staging = c.kubelet + "/plugins/kubernetes.io/csi/hearth.csi.dev/\(volume.volumeID)/globalmount"
        try await c.stage(volume.volumeID, staging, capability, context)
        let podA = c.kubelet + "/pods/a/volumes/kubernetes.io~csi/pvc-e2e/mount"
        let podB = c.kubelet + "/pods/b/volumes/kubernetes.io~csi/pvc-e2e/mount"
        try await c.nodePublish(volume.volumeID, staging, podA, capability, readOnly: false)
        try await c.nodePublish(volume.volumeID, staging, podB, capability, readOnly: true)
        try await c.nodePublish(volume.volumeID, staging, podA, capability, readOnly: false)  // kubelet retries

        // Write through one pod's mount, read through the other's.
        let payload = Data((0..<(3 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 2654435761 >> 13) })
        try FileManager.default.createDirectory(atPath: podA + "/dir", withIntermediateDirectories: true)
        try writeDurably(payload, to: podA + "/dir/blob")
        try writeDurably(Data("hello".utf8), to: podA + "/small.txt")
        XCTAssertEqual(FileManager.default.contents(atPath: podB + "/dir/blob"), payload)
        XCTAssertEqual(FileManager.default.contents(atPath: podB + "/small.txt"), Data("hello".utf8))
        XCTAssertFalse(FileManager.default.createFile(atPath: podB + "/nope", contents: Data()), "the read-only publish refuses writes")

        var statsRequest = Csi_V1_NodeGetVolumeStatsRequest()
        statsRequest.volumeID = volume.volumeID
        statsRequest.volumePath = podA
        let stats = try await c.nodeCall("NodeGetVolumeStats", statsRequest, as: Csi_V1_NodeGetVolumeStatsResponse.self)
        let bytes = try XCTUnwrap(stats.usage.first { $0.unit == .bytes })
        XCTAssertEqual(bytes.total, 64 << 20)
        XCTAssertGreaterThanOrEqual(bytes.used, Int64(payload.count))
        XCTAssertFalse(stats.volumeCondition.abnormal, stats.volumeCondition.message)

        // external-snapshotter, then a restore staged and read like any volume.
        var snap = Csi_V1_CreateSnapshotRequest()
        snap.name = "snap-e2e"
        snap.sourceVolumeID = volume.volumeID
        let snapshot = try await c.controllerCall("CreateSnapshot", snap, as: Csi_V1_CreateSnapshotResponse.self).snapshot
        XCTAssertTrue(snapshot.readyToUse)
        XCTAssertGreaterThanOrEqual(snapshot.sizeBytes, Int64(payload.count))
        var restoreRequest = create
        restoreRequest.name = "pvc-e2e-restore"
        restoreRequest.parameters = [:]
        restoreRequest.volumeContentSource.snapshot.snapshotID = snapshot.snapshotID
        let restored = try await c.controllerCall("CreateVolume", restoreRequest, as: Csi_V1_CreateVolumeResponse.self).volume
        let restoredContext = try await c.publish(restored.volumeID, capability)
        let restoredStaging = c.kubelet + "/plugins/kubernetes.io/csi/hearth.csi.dev/\(restored.volumeID)/globalmount"
        try await c.stage(restored.volumeID, restoredStaging, capability, restoredContext)
        let podC = c.kubelet + "/pods/c/volumes/kubernetes.io~csi/restore/mount"
        try await c.nodePublish(restored.volumeID, restoredStaging, podC, capability, readOnly: false)
        XCTAssertEqual(FileManager.default.contents(atPath: podC + "/dir/blob"), payload)
        // Copy-on-write: the restore diverges without touching the source.
        try writeDurably(Data("restored".utf8), to: podC + "/small.txt")
        XCTAssertEqual(FileManager.default.contents(atPath: podA + "/small.txt"), Data("hello".utf8))

        // external-resizer, then kubelet's NodeExpandVolume: the mounted volume grows online.
        var expand = Csi_V1_ControllerExpandVolumeRequest()
        expand.volumeID = volume.volumeID
        expand.capacityRange.requiredBytes = 128 << 20
        let expanded = try await c.controllerCall("ControllerExpandVolume", expand, as: Csi_V1_ControllerExpandVolumeResponse.self)
        XCTAssertEqual(expanded.capacityBytes, 128 << 20)
        var nodeExpand = Csi_V1_NodeExpandVolumeRequest()
        nodeExpand.volumeID = volume.volumeID
        nodeExpand.volumePath = podA
        let nodeExpanded = try await c.nodeCall("NodeExpandVolume", nodeExpand, as: Csi_V1_NodeExpandVolumeResponse.self)
        XCTAssertEqual(nodeExpanded.capacityBytes, 128 << 20)
        try await waitUntil("statfs shows the new capacity") { totalBytes(podA) == 128 << 20 }

        // Tear down in kubelet's order, each step twice (retries must succeed).
        for (id, staging, targets) in [(volume.volumeID, staging, [podA, podB]), (restored.volumeID, restoredStaging, [podC])] {
            for target in targets {
                for _ in 0..<2 {
                    var unpublish = Csi_V1_NodeUnpublishVolumeRequest()
                    unpublish.volumeID = id
                    unpublish.targetPath = target
                    _ = try await c.nodeCall("NodeUnpublishVolume", unpublish, as: Csi_V1_NodeUnpublishVolumeResponse.self)
                }
                XCTAssertFalse(FileManager.default.fileExists(atPath: target), "target removed")
            }
            for _ in 0..<2 {
                var unstage = Csi_V1_NodeUnstageVolumeRequest()
                unstage.volumeID = id
                unstage.stagingTargetPath = staging
                _ = try await c.nodeCall("NodeUnstageVolume", unstage, as: Csi_V1_NodeUnstageVolumeResponse.self)
            }
            var controllerUnpublish = Csi_V1_ControllerUnpublishVolumeRequest()
            controllerUnpublish.volumeID = id
            controllerUnpublish.nodeID = c.nodeID
            _ = try await c.controllerCall("ControllerUnpublishVolume", controllerUnpublish, as: Csi_V1_ControllerUnpublishVolumeResponse.self)
        }
        var deleteSnapshot = Csi_V1_DeleteSnapshotRequest()
        deleteSnapshot.snapshotID = snapshot.snapshotID
        _ = try await c.controllerCall("DeleteSnapshot", deleteSnapshot, as: Csi_V1_DeleteSnapshotResponse.self)
        for id in [volume.volumeID, restored.volumeID] {
            var delete = Csi_V1_DeleteVolumeRequest()
            delete.volumeID = id
            _ = try await c.controllerCall("DeleteVolume", delete, as: Csi_V1_DeleteVolumeResponse.self)
        }
        let listed = try await c.controllerCall("ListVolumes", Csi_V1_ListVolumesRequest(), as: Csi_V1_ListVolumesResponse.self)
        XCTAssertTrue(listed.entries.isEmpty)
    }
}

extension LocalCluster {
    func publish(_ id: String, _ capability: Csi_V1_VolumeCapability) async throws -> [String: String] {
        var request = Csi_V1_ControllerPublishVolumeRequest()
        request.volumeID = id
        request.nodeID = nodeID
        request.volumeCapability = capability
        return try await controllerCall("ControllerPublishVolume", request, as: Csi_V1_ControllerPublishVolumeResponse.self).publishContext
    }

    func stage(_ id: String, _ staging: String, _ capability: Csi_V1_VolumeCapability, _ context: [String: String]) async throws {
        var request = Csi_V1_NodeStageVolumeRequest()
        request.volumeID = id
        request.stagingTargetPath = staging
        request.volumeCapability = capability
        request.publishContext = context
        _ = try await nodeCall("NodeStageVolume", request, as: Csi_V1_NodeStageVolumeResponse.self)
    }

    func nodePublish(_ id: String, _ staging: String, _ target: String,
                     _ capability: Csi_V1_VolumeCapability, readOnly: Bool) async throws {
        var request = Csi_V1_NodePublishVolumeRequest()
        request.volumeID = id
        request.stagingTargetPath = staging
        request.targetPath = target
        request.volumeCapability = capability
        request.readonly = readOnly
        _ = try await nodeCall("NodePublishVolume", request, as: Csi_V1_NodePublishVolumeResponse.self)
    }
}

/// Writes and fsyncs, as an application that needs its data kept does.
func writeDurably(_ data: Data, to path: String) throws {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    guard fd >= 0 else { throw E2EError("open \(path): \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    let written = data.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    guard written == data.count else { throw E2EError("write \(path): \(written) of \(data.count)") }
    guard fsync(fd) == 0 else { throw E2EError("fsync \(path): \(String(cString: strerror(errno)))") }
}

func totalBytes(_ path: String) -> Int64 {
    var fs = statvfs()
    guard statvfs(path, &fs) == 0 else { return -1 }
    return Int64(fs.f_blocks) * Int64(fs.f_frsize)
}

func waitUntil(_ what: String, within bound: Duration = .seconds(10), _ condition: () -> Bool) async throws {
    let giveUp = ContinuousClock.now + bound
    while !condition() {
        guard ContinuousClock.now < giveUp else { throw E2EError("timed out waiting until \(what)") }
        try await Task.sleep(for: .milliseconds(50))
    }
}
