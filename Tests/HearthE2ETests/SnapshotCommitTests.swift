import CSIProto
import Foundation
import HearthRPC
import XCTest

/// Issue 7's "commit before pin": a writer keeps a file open and keeps
/// writing (nothing closes, nothing fsyncs, the periodic commit is an hour
/// away), and a snapshot still holds everything written before the call,
/// because the controller asks the node to commit first.
final class SnapshotCommitTests: XCTestCase {
    func testSnapshotHoldsWhatWasWrittenBeforeTheCall() async throws {
        try await LocalCluster.run(commitPort: try freeTCPPort()) { try await scenario($0) }
    }

    func testGroupSnapshotHoldsWhatWasWrittenToEveryMember() async throws {
        try await LocalCluster.run(commitPort: try freeTCPPort()) { try await groupScenario($0) }
    }

    /// Two volumes of one application written together (a record to each in
    /// turn, never closed or fsync'd), one group snapshot: every member holds
    /// every record written to it before the call, and restores read back.
    func groupScenario(_ c: LocalCluster) async throws {
        let capability = mountCapability()
        var targets: [String] = [], ids: [String] = []
        for name in ["pvc-data", "pvc-log"] {
            let volume = try await c.createVolume(name, parameters: ["commitInterval": "1h"])
            let context = try await c.publish(volume.volumeID, capability)
            let staging = c.kubelet + "/staging/\(volume.volumeID)"
            try await c.stage(volume.volumeID, staging, capability, context)
            let target = c.kubelet + "/pods/app/\(name)"
            try await c.nodePublish(volume.volumeID, staging, target, capability, readOnly: false)
            targets.append(target)
            ids.append(volume.volumeID)
        }
        let fds = targets.map { open($0 + "/journal", O_WRONLY | O_CREAT | O_APPEND, 0o644) }
        guard fds.allSatisfy({ $0 >= 0 }) else { throw E2EError("open journals: \(String(cString: strerror(errno)))") }
        let writer = Task.detached { () -> Int in
            var n = 0
            while !Task.isCancelled {
                let line = Array(String(format: "record %08d\n", n).utf8)
                for fd in fds { guard write(fd, line, line.count) == line.count else { return n } }
                n += 1
                try? await Task.sleep(for: .milliseconds(2))
            }
            return n
        }
        try await Task.sleep(for: .milliseconds(500))
        let before = try targets.map { try XCTUnwrap(FileManager.default.contents(atPath: $0 + "/journal")) }
        var request = Csi_V1_CreateVolumeGroupSnapshotRequest()
        request.name = "group-app"
        request.sourceVolumeIds = ids
        // What csi-snapshotter --extra-create-metadata adds.
        request.parameters = ["csi.storage.k8s.io/volumegroupsnapshot/name": "app",
                              "csi.storage.k8s.io/volumegroupsnapshot/namespace": "default",
                              "csi.storage.k8s.io/volumegroupsnapshotcontent/name": "groupsnapcontent-1"]
        let group = try await c.controller.call("/csi.v1.GroupController/CreateVolumeGroupSnapshot", request,
                                                as: Csi_V1_CreateVolumeGroupSnapshotResponse.self, timeout: .seconds(60)).groupSnapshot
        writer.cancel()
        let written = await writer.value
        for fd in fds { close(fd) }
        XCTAssertGreaterThan(written, 10, "the writer kept writing through the group snapshot")
        XCTAssertEqual(group.snapshots.count, 2)
        XCTAssertTrue(group.readyToUse)

        for (index, id) in ids.enumerated() {
            let member = try XCTUnwrap(group.snapshots.first { $0.sourceVolumeID == id })
            XCTAssertEqual(member.groupSnapshotID, group.groupSnapshotID)
            var restore = Csi_V1_CreateVolumeRequest()
            restore.name = "restore-\(index)"
            restore.capacityRange.requiredBytes = 64 << 20
            restore.volumeCapabilities = [capability]
            restore.volumeContentSource.snapshot.snapshotID = member.snapshotID
            let restored = try await c.controllerCall("CreateVolume", restore, as: Csi_V1_CreateVolumeResponse.self).volume
            let context = try await c.publish(restored.volumeID, capability)
            let staging = c.kubelet + "/staging/\(restored.volumeID)"
            try await c.stage(restored.volumeID, staging, capability, context)
            let pinned = try XCTUnwrap(FileManager.default.contents(atPath: staging + "/journal"))
            XCTAssertGreaterThanOrEqual(pinned.count, before[index].count, "member \(index) lost data written before the call")
            XCTAssertEqual(pinned.prefix(before[index].count), before[index])
            XCTAssertEqual(pinned.count % 16, 0, "member \(index) holds whole records")
        }
        // A member cannot be deleted on its own; the group deletes them all.
        var deleteMember = Csi_V1_DeleteSnapshotRequest()
        deleteMember.snapshotID = group.snapshots[0].snapshotID
        do {
            _ = try await c.controllerCall("DeleteSnapshot", deleteMember, as: Csi_V1_DeleteSnapshotResponse.self)
            XCTFail("a group member was deleted alone")
        } catch let error as RPCError {
            XCTAssertEqual(error.code, .failedPrecondition, error.message)
        }
        var delete = Csi_V1_DeleteVolumeGroupSnapshotRequest()
        delete.groupSnapshotID = group.groupSnapshotID
        _ = try await c.controller.call("/csi.v1.GroupController/DeleteVolumeGroupSnapshot", delete,
                                        as: Csi_V1_DeleteVolumeGroupSnapshotResponse.self, timeout: .seconds(60))
        let left = try await c.controllerCall("ListSnapshots", Csi_V1_ListSnapshotsRequest(), as: Csi_V1_ListSnapshotsResponse.self)
        XCTAssertTrue(left.entries.isEmpty)
    }

    func scenario(_ c: LocalCluster) async throws {
        let capability = mountCapability()
        var create = Csi_V1_CreateVolumeRequest()
        create.name = "pvc-commit"
        create.capacityRange.requiredBytes = 64 << 20
        create.volumeCapabilities = [capability]
        create.parameters = ["commitInterval": "1h"]
        let volume = try await c.controllerCall("CreateVolume", create, as: Csi_V1_CreateVolumeResponse.self).volume
        let context = try await c.publish(volume.volumeID, capability)
        let staging = c.kubelet + "/staging/\(volume.volumeID)"
        try await c.stage(volume.volumeID, staging, capability, context)
        let target = c.kubelet + "/pods/writer/mount"
        try await c.nodePublish(volume.volumeID, staging, target, capability, readOnly: false)

        // The writer: an open file receiving a record every few milliseconds.
        let fd = open(target + "/journal", O_WRONLY | O_CREAT | O_APPEND, 0o644)
        guard fd >= 0 else { throw E2EError("open journal: \(String(cString: strerror(errno)))") }
        let writer = Task.detached { () -> Int in
            var n = 0
            while !Task.isCancelled {
                let line = Array(String(format: "record %08d\n", n).utf8)
                guard write(fd, line, line.count) == line.count else { break }
                n += 1
                try? await Task.sleep(for: .milliseconds(2))
            }
            return n
        }
        try await Task.sleep(for: .milliseconds(500))
        // Everything written up to here must be in the snapshot.
        let before = try XCTUnwrap(FileManager.default.contents(atPath: target + "/journal"))
        XCTAssertGreaterThan(before.count, 0)
        var snap = Csi_V1_CreateSnapshotRequest()
        snap.name = "snap-commit"
        snap.sourceVolumeID = volume.volumeID
        let snapshot = try await c.controllerCall("CreateSnapshot", snap, as: Csi_V1_CreateSnapshotResponse.self).snapshot
        writer.cancel()
        let written = await writer.value
        close(fd)
        XCTAssertGreaterThan(written, 10, "the writer kept writing through the snapshot")

        var restore = create
        restore.name = "pvc-commit-restore"
        restore.parameters = [:]
        restore.volumeContentSource.snapshot.snapshotID = snapshot.snapshotID
        let restored = try await c.controllerCall("CreateVolume", restore, as: Csi_V1_CreateVolumeResponse.self).volume
        let restoredContext = try await c.publish(restored.volumeID, capability)
        let restoredStaging = c.kubelet + "/staging/\(restored.volumeID)"
        try await c.stage(restored.volumeID, restoredStaging, capability, restoredContext)
        let reader = c.kubelet + "/pods/reader/mount"
        try await c.nodePublish(restored.volumeID, restoredStaging, reader, capability, readOnly: true)
        let pinned = try XCTUnwrap(FileManager.default.contents(atPath: reader + "/journal"))
        XCTAssertGreaterThanOrEqual(pinned.count, before.count, "the snapshot lost data written before the call")
        XCTAssertEqual(pinned.prefix(before.count), before, "the snapshot's journal starts with what was written before")
    }
}
