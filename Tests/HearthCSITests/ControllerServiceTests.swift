import CSIProto
import Foundation
import HearthCSI
import HearthRPC
import HearthStore
import XCTest

/// The CSI Controller over a real socket and a real directory store: what
/// external-provisioner, -attacher, -resizer and -snapshotter would send.
final class ControllerServiceTests: XCTestCase {
    var h: ControllerHarness!

    override func setUp() async throws { h = try ControllerHarness() }
    override func tearDown() async throws { await h.close() }

    func testCreateVolumeIsIdempotentAndRejectsMismatchedRecreate() async throws {
        var request = createRequest("pvc-1", bytes: 5 << 20)
        request.parameters = [
            "commitInterval": "5s", "csi.storage.k8s.io/pvc/name": "data", "csi.storage.k8s.io/pvc/namespace": "apps",
            "csi.storage.k8s.io/pv/name": "pvc-1",
        ]
        let first: Csi_V1_CreateVolumeResponse = try await h.controller("CreateVolume", request)
        let again: Csi_V1_CreateVolumeResponse = try await h.controller("CreateVolume", request)
        XCTAssertEqual(first.volume.volumeID, again.volume.volumeID)
        XCTAssertEqual(first.volume.capacityBytes, 5 << 20)
        XCTAssertEqual(first.volume.volumeContext, ["commitInterval": "5s"])
        XCTAssertEqual(first.volume.accessibleTopology.first?.segments.keys.first, "topology.hearth.csi.dev/store")
        // The PVC index the scheduler extender reads.
        let byPVC = try await Catalog(h.store).volume(pvc: PVCReference(namespace: "apps", name: "data"))
        XCTAssertEqual(byPVC?.id, first.volume.volumeID)

        var bigger = request
        bigger.capacityRange.requiredBytes = 6 << 20
        await expectCode(.alreadyExists) { try await self.h.controller("CreateVolume", bigger, as: Csi_V1_CreateVolumeResponse.self) }
    }

    func testCreateVolumeValidatesItsArguments() async throws {
        typealias R = Csi_V1_CreateVolumeResponse
        await expectCode(.invalidArgument) { try await self.h.controller("CreateVolume", createRequest(""), as: R.self) }
        var noCaps = createRequest("a")
        noCaps.volumeCapabilities = []
        await expectCode(.invalidArgument) { try await self.h.controller("CreateVolume", noCaps, as: R.self) }
        let mnmw = await expectCode(.invalidArgument) {
            try await self.h.controller("CreateVolume", createRequest("b", mode: .multiNodeMultiWriter), as: R.self)
        }
        XCTAssertTrue(mnmw.contains("MULTI_NODE_SINGLE_WRITER"), "the refusal says what is supported: \(mnmw)")
        var block = createRequest("c")
        block.volumeCapabilities = [capability(.singleNodeWriter, block: true)]
        await expectCode(.invalidArgument) { try await self.h.controller("CreateVolume", block, as: R.self) }
        await expectCode(.invalidArgument) {
            try await self.h.controller("CreateVolume", createRequest("d", parameters: ["comitInterval": "5s"]), as: R.self)
        }
        var inverted = createRequest("e")
        inverted.capacityRange.limitBytes = 1024
        await expectCode(.invalidArgument) { try await self.h.controller("CreateVolume", inverted, as: R.self) }
        await expectCode(.outOfRange) { try await self.h.controller("CreateVolume", createRequest("f", bytes: 1 << 60), as: R.self) }
        var fromNothing = createRequest("g")
        fromNothing.volumeContentSource.snapshot.snapshotID = "snap-doesnotexist"
        await expectCode(.notFound) { try await self.h.controller("CreateVolume", fromNothing, as: R.self) }
        var traversal = createRequest("h")
        traversal.volumeContentSource.volume.volumeID = "../../records/volumes/x"
        await expectCode(.notFound) { try await self.h.controller("CreateVolume", traversal, as: R.self) }
    }

    func testPublishIsASingleWriterLease() async throws {
        try await h.registerNode("node-a")
        try await h.registerNode("node-b")
        let created: Csi_V1_CreateVolumeResponse = try await h.controller(
            "CreateVolume", createRequest("shared", mode: .multiNodeSingleWriter))
        func publish(_ node: String, readonly: Bool) -> Csi_V1_ControllerPublishVolumeRequest {
            var r = Csi_V1_ControllerPublishVolumeRequest()
            r.volumeID = created.volume.volumeID
            r.nodeID = node
            r.readonly = readonly
            r.volumeCapability = capability(.multiNodeSingleWriter)
            return r
        }
        typealias P = Csi_V1_ControllerPublishVolumeResponse
        let a: P = try await h.controller("ControllerPublishVolume", publish("node-a", readonly: false))
        XCTAssertEqual(a.publishContext["hearth.csi.dev/access"], "rw")
        let again: P = try await h.controller("ControllerPublishVolume", publish("node-a", readonly: false))
        XCTAssertEqual(again.publishContext, a.publishContext, "publishing twice is idempotent")
        let held = await expectCode(.failedPrecondition) {
            try await self.h.controller("ControllerPublishVolume", publish("node-b", readonly: false), as: P.self)
        }
        XCTAssertTrue(held.contains("node-a"), held)
        let reader: P = try await h.controller("ControllerPublishVolume", publish("node-b", readonly: true))
        XCTAssertEqual(reader.publishContext["hearth.csi.dev/access"], "ro")
        await expectCode(.alreadyExists) {
            try await self.h.controller("ControllerPublishVolume", publish("node-a", readonly: true), as: P.self)
        }
        await expectCode(.notFound) {
            try await self.h.controller("ControllerPublishVolume", publish("node-nowhere", readonly: true), as: P.self)
        }

        var get = Csi_V1_ControllerGetVolumeRequest()
        get.volumeID = created.volume.volumeID
        let status: Csi_V1_ControllerGetVolumeResponse = try await h.controller("ControllerGetVolume", get)
        XCTAssertEqual(status.status.publishedNodeIds, ["node-a", "node-b"])
        XCTAssertFalse(status.status.volumeCondition.abnormal)

        var delete = Csi_V1_DeleteVolumeRequest()
        delete.volumeID = created.volume.volumeID
        await expectCode(.failedPrecondition) { try await self.h.controller("DeleteVolume", delete, as: Csi_V1_DeleteVolumeResponse.self) }

        // Once the writer leaves, another node may write.
        var unpublish = Csi_V1_ControllerUnpublishVolumeRequest()
        unpublish.volumeID = created.volume.volumeID
        unpublish.nodeID = "node-a"
        let _: Csi_V1_ControllerUnpublishVolumeResponse = try await h.controller("ControllerUnpublishVolume", unpublish)
        let _: Csi_V1_ControllerUnpublishVolumeResponse = try await h.controller("ControllerUnpublishVolume", unpublish)
        await expectCode(.alreadyExists) {
            // node-b reads; asking to write from the same node is incompatible until it unpublishes.
            try await self.h.controller("ControllerPublishVolume", publish("node-b", readonly: false), as: P.self)
        }
        unpublish.nodeID = ""
        let _: Csi_V1_ControllerUnpublishVolumeResponse = try await h.controller("ControllerUnpublishVolume", unpublish)
        let _: Csi_V1_DeleteVolumeResponse = try await h.controller("DeleteVolume", delete)
        let _: Csi_V1_DeleteVolumeResponse = try await h.controller("DeleteVolume", delete)
        await expectCode(.notFound) { try await self.h.controller("ControllerGetVolume", get, as: Csi_V1_ControllerGetVolumeResponse.self) }
    }

    func testSingleNodeModesAndAttachLimit() async throws {
        try await h.registerNode("small", maxVolumes: 1)
        try await h.registerNode("other")
        let one: Csi_V1_CreateVolumeResponse = try await h.controller("CreateVolume", createRequest("one"))
        let two: Csi_V1_CreateVolumeResponse = try await h.controller("CreateVolume", createRequest("two"))
        func publish(_ volume: String, _ node: String, readonly: Bool = false) -> Csi_V1_ControllerPublishVolumeRequest {
            var r = Csi_V1_ControllerPublishVolumeRequest()
            r.volumeID = volume
            r.nodeID = node
            r.readonly = readonly
            r.volumeCapability = capability(.singleNodeWriter)
            return r
        }
        typealias P = Csi_V1_ControllerPublishVolumeResponse
        let _: P = try await h.controller("ControllerPublishVolume", publish(one.volume.volumeID, "small"))
        await expectCode(.resourceExhausted) {
            try await self.h.controller("ControllerPublishVolume", publish(two.volume.volumeID, "small"), as: P.self)
        }
        await expectCode(.failedPrecondition) {
            try await self.h.controller("ControllerPublishVolume", publish(one.volume.volumeID, "other", readonly: true), as: P.self)
        }
    }

    func testListVolumesPagesWithStableTokens() async throws {
        var ids: Set<String> = []
        for i in 0..<7 {
            let r: Csi_V1_CreateVolumeResponse = try await h.controller("CreateVolume", createRequest("list-\(i)"))
            ids.insert(r.volume.volumeID)
        }
        var seen: [String] = []
        var request = Csi_V1_ListVolumesRequest()
        request.maxEntries = 3
        var pages = 0
        repeat {
            let page: Csi_V1_ListVolumesResponse = try await h.controller("ListVolumes", request)
            XCTAssertLessThanOrEqual(page.entries.count, 3)
            seen += page.entries.map(\.volume.volumeID)
            request.startingToken = page.nextToken
            pages += 1
        } while !request.startingToken.isEmpty && pages < 10
        XCTAssertEqual(Set(seen), ids)
        XCTAssertEqual(seen.count, ids.count, "no volume listed twice")
        request.startingToken = "not-a-token"
        await expectCode(.aborted) { try await self.h.controller("ListVolumes", request, as: Csi_V1_ListVolumesResponse.self) }
    }

    func testExpandModifyAndCapacity() async throws {
        let created: Csi_V1_CreateVolumeResponse = try await h.controller("CreateVolume", createRequest("grow", bytes: 1 << 20))
        var expand = Csi_V1_ControllerExpandVolumeRequest()
        expand.volumeID = created.volume.volumeID
        expand.capacityRange.requiredBytes = 4 << 20
        let grown: Csi_V1_ControllerExpandVolumeResponse = try await h.controller("ControllerExpandVolume", expand)
        XCTAssertEqual(grown.capacityBytes, 4 << 20)
        XCTAssertTrue(grown.nodeExpansionRequired)
        expand.capacityRange.requiredBytes = 2 << 20
        let notShrunk: Csi_V1_ControllerExpandVolumeResponse = try await h.controller("ControllerExpandVolume", expand)
        XCTAssertEqual(notShrunk.capacityBytes, 4 << 20, "expansion never shrinks")

        var modify = Csi_V1_ControllerModifyVolumeRequest()
        modify.volumeID = created.volume.volumeID
        modify.mutableParameters = ["commitInterval": "30s"]
        let _: Csi_V1_ControllerModifyVolumeResponse = try await h.controller("ControllerModifyVolume", modify)
        let modified = try await Catalog(h.store).volume(created.volume.volumeID)
        XCTAssertEqual(modified.parameters["commitInterval"], "30s")
        modify.mutableParameters = ["capacity": "1"]
        await expectCode(.invalidArgument) { try await self.h.controller("ControllerModifyVolume", modify, as: Csi_V1_ControllerModifyVolumeResponse.self) }
        modify.mutableParameters = ["commitInterval": "forever"]
        await expectCode(.invalidArgument) { try await self.h.controller("ControllerModifyVolume", modify, as: Csi_V1_ControllerModifyVolumeResponse.self) }

        let capacity: Csi_V1_GetCapacityResponse = try await h.controller("GetCapacity", Csi_V1_GetCapacityRequest())
        XCTAssertGreaterThan(capacity.availableCapacity, 0)
    }

    func testSnapshotsAndClonesAreO1Records() async throws {
        let source: Csi_V1_CreateVolumeResponse = try await h.controller("CreateVolume", createRequest("src"))
        var snap = Csi_V1_CreateSnapshotRequest()
        snap.name = "snap-of-src"
        snap.sourceVolumeID = source.volume.volumeID
        let taken: Csi_V1_CreateSnapshotResponse = try await h.controller("CreateSnapshot", snap)
        XCTAssertTrue(taken.snapshot.readyToUse)
        XCTAssertTrue(taken.snapshot.hasCreationTime)
        let again: Csi_V1_CreateSnapshotResponse = try await h.controller("CreateSnapshot", snap)
        XCTAssertEqual(again.snapshot.snapshotID, taken.snapshot.snapshotID)
        let other: Csi_V1_CreateVolumeResponse = try await h.controller("CreateVolume", createRequest("other"))
        snap.sourceVolumeID = other.volume.volumeID
        await expectCode(.alreadyExists) { try await self.h.controller("CreateSnapshot", snap, as: Csi_V1_CreateSnapshotResponse.self) }

        var restore = createRequest("restored")
        restore.volumeContentSource.snapshot.snapshotID = taken.snapshot.snapshotID
        let restored: Csi_V1_CreateVolumeResponse = try await h.controller("CreateVolume", restore)
        XCTAssertEqual(restored.volume.contentSource.snapshot.snapshotID, taken.snapshot.snapshotID)
        var clone = createRequest("clone")
        clone.volumeContentSource.volume.volumeID = restored.volume.volumeID
        let cloned: Csi_V1_CreateVolumeResponse = try await h.controller("CreateVolume", clone)
        XCTAssertEqual(cloned.volume.contentSource.volume.volumeID, restored.volume.volumeID)

        var list = Csi_V1_ListSnapshotsRequest()
        list.sourceVolumeID = source.volume.volumeID
        let bySource: Csi_V1_ListSnapshotsResponse = try await h.controller("ListSnapshots", list)
        XCTAssertEqual(bySource.entries.map(\.snapshot.snapshotID), [taken.snapshot.snapshotID])
        list = Csi_V1_ListSnapshotsRequest()
        list.snapshotID = "snap-nonexistent"
        let none: Csi_V1_ListSnapshotsResponse = try await h.controller("ListSnapshots", list)
        XCTAssertTrue(none.entries.isEmpty)

        var delete = Csi_V1_DeleteSnapshotRequest()
        delete.snapshotID = taken.snapshot.snapshotID
        let _: Csi_V1_DeleteSnapshotResponse = try await h.controller("DeleteSnapshot", delete)
        let _: Csi_V1_DeleteSnapshotResponse = try await h.controller("DeleteSnapshot", delete)
        // The restored volume stays whole without its snapshot.
        var get = Csi_V1_ControllerGetVolumeRequest()
        get.volumeID = restored.volume.volumeID
        let status: Csi_V1_ControllerGetVolumeResponse = try await h.controller("ControllerGetVolume", get)
        XCTAssertFalse(status.status.volumeCondition.abnormal, status.status.volumeCondition.message)
    }

    func testGrpcioClientDrivesTheController() async throws {
        try await h.registerNode("py-node")
        let result = try await runPythonCheck("controller_checks.py", ["unix:\(h.socket)", "py-node"])
        XCTAssertEqual(result.status, 0, result.output)
        XCTAssertTrue(result.output.contains("ok controller"), result.output)
    }
}
