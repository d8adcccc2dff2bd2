import CSIProto
import Foundation
import HearthMounts
import HearthRPC
import XCTest

/// S3 keys from a StorageClass's secrets: the controller and the node sign
/// with them instead of their own, the volume's daemon gets them through its
/// environment, and no log, error or command line shows the secret key.
/// rclone's S3 server checks signatures strictly and knows two key pairs: the
/// plugins' own and a tenant's.
final class SecretsTests: XCTestCase {
    static let tenantSecret = "tenant-5ecret-never-logged"

    func testStorageClassSecretsSignTheVolumesRequests() async throws {
        let root = FileManager.default.temporaryDirectory.path + "/hearth-secrets-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: root + "/bucket", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: root) }
        let server = try await S3TestServer.rclone(root: root, keys: [("plugin", "plugin-secret"), ("tenant", Self.tenantSecret)])
        defer { server.stop() }
        let credentialsFile = root + "/plugin-credentials"
        try "[default]\naws_access_key_id = plugin\naws_secret_access_key = plugin-secret\n"
            .write(toFile: credentialsFile, atomically: true, encoding: .utf8)
        try await LocalCluster.run(storeArguments: [
            "--store", "s3://bucket/hearth", "--s3-endpoint", server.endpoint, "--s3-path-style",
            "--s3-credentials-file", credentialsFile,
        ]) { try await exercise($0) }
    }

    func exercise(_ c: LocalCluster) async throws {
        let tenant = ["accessKeyID": "tenant", "secretAccessKey": Self.tenantSecret]
        let wrong = ["accessKeyID": "tenant", "secretAccessKey": "not-the-" + Self.tenantSecret]
        let capability = mountCapability()

        var create = Csi_V1_CreateVolumeRequest()
        create.name = "pvc-tenant"
        create.capacityRange.requiredBytes = 16 << 20
        create.volumeCapabilities = [capability]

        // Wrong keys in the secrets: refused by the server, although the
        // plugin's own keys would have worked.
        create.secrets = wrong
        try await expectStatus(.unauthenticated, secretAbsent: true) {
            _ = try await c.controllerCall("CreateVolume", create, as: Csi_V1_CreateVolumeResponse.self)
        }
        // Half a key pair: a clear INVALID_ARGUMENT naming what is missing.
        create.secrets = ["accessKeyID": "tenant"]
        try await expectStatus(.invalidArgument, mentioning: "secretAccessKey") {
            _ = try await c.controllerCall("CreateVolume", create, as: Csi_V1_CreateVolumeResponse.self)
        }
        create.secrets = tenant
        let volume = try await c.controllerCall("CreateVolume", create, as: Csi_V1_CreateVolumeResponse.self).volume

        var publish = Csi_V1_ControllerPublishVolumeRequest()
        publish.volumeID = volume.volumeID
        publish.nodeID = c.nodeID
        publish.volumeCapability = capability
        publish.secrets = tenant
        let context = try await c.controllerCall("ControllerPublishVolume", publish, as: Csi_V1_ControllerPublishVolumeResponse.self).publishContext

        var stage = Csi_V1_NodeStageVolumeRequest()
        stage.volumeID = volume.volumeID
        stage.stagingTargetPath = c.kubelet + "/staging/\(volume.volumeID)"
        stage.volumeCapability = capability
        stage.publishContext = context
        stage.secrets = wrong
        try await expectStatus(.unauthenticated, secretAbsent: true) {
            _ = try await c.nodeCall("NodeStageVolume", stage, as: Csi_V1_NodeStageVolumeResponse.self)
        }
        stage.secrets = tenant
        _ = try await c.nodeCall("NodeStageVolume", stage, as: Csi_V1_NodeStageVolumeResponse.self)

        // The daemon has the tenant's keys in its environment, told to prefer
        // them over the node's credentials file, and none on its command line.
        let pid = try daemonPID(c, volume.volumeID, stage.stagingTargetPath)
        let environment = try XCTUnwrap(ProcFile.read("/proc/\(pid)/environ"))
            .split(separator: "\0").map(String.init)
        XCTAssertTrue(environment.contains("AWS_ACCESS_KEY_ID=tenant"))
        XCTAssertTrue(environment.contains("AWS_SECRET_ACCESS_KEY=\(Self.tenantSecret)"))
        let commandLine = try XCTUnwrap(ProcFile.read("/proc/\(pid)/cmdline"))
        XCTAssertTrue(commandLine.contains("--s3-credentials-from-environment"))
        XCTAssertFalse(commandLine.contains(Self.tenantSecret))

        // Data written through the daemon reaches the bucket under those keys.
        let payload = Data((0..<300_000).map { UInt8(truncatingIfNeeded: $0 &* 31 >> 3) })
        try writeDurably(payload, to: stage.stagingTargetPath + "/data")
        try await c.unstage(volume.volumeID, stage.stagingTargetPath)
        _ = try await c.nodeCall("NodeStageVolume", stage, as: Csi_V1_NodeStageVolumeResponse.self)
        XCTAssertEqual(FileManager.default.contents(atPath: stage.stagingTargetPath + "/data"), payload)
        try await c.unstage(volume.volumeID, stage.stagingTargetPath)

        var snapshot = Csi_V1_CreateSnapshotRequest()
        snapshot.name = "snap-tenant"
        snapshot.sourceVolumeID = volume.volumeID
        snapshot.secrets = wrong
        try await expectStatus(.unauthenticated, secretAbsent: true) {
            _ = try await c.controllerCall("CreateSnapshot", snapshot, as: Csi_V1_CreateSnapshotResponse.self)
        }
        snapshot.secrets = tenant
        let snap = try await c.controllerCall("CreateSnapshot", snapshot, as: Csi_V1_CreateSnapshotResponse.self).snapshot
        XCTAssertGreaterThanOrEqual(snap.sizeBytes, Int64(payload.count))

        var deleteSnapshot = Csi_V1_DeleteSnapshotRequest()
        deleteSnapshot.snapshotID = snap.snapshotID
        deleteSnapshot.secrets = tenant
        _ = try await c.controllerCall("DeleteSnapshot", deleteSnapshot, as: Csi_V1_DeleteSnapshotResponse.self)
        var unpublish = Csi_V1_ControllerUnpublishVolumeRequest()
        unpublish.volumeID = volume.volumeID
        unpublish.nodeID = c.nodeID
        unpublish.secrets = tenant
        _ = try await c.controllerCall("ControllerUnpublishVolume", unpublish, as: Csi_V1_ControllerUnpublishVolumeResponse.self)
        var delete = Csi_V1_DeleteVolumeRequest()
        delete.volumeID = volume.volumeID
        delete.secrets = wrong
        try await expectStatus(.unauthenticated, secretAbsent: true) {
            _ = try await c.controllerCall("DeleteVolume", delete, as: Csi_V1_DeleteVolumeResponse.self)
        }
        delete.secrets = tenant
        _ = try await c.controllerCall("DeleteVolume", delete, as: Csi_V1_DeleteVolumeResponse.self)

        // No log anywhere holds the secret key.
        let daemonLogs = (try? FileManager.default.contentsOfDirectory(atPath: c.directory + "/data/logs")) ?? []
        let logs = c.logs() + daemonLogs.map { (try? String(contentsOfFile: c.directory + "/data/logs/" + $0, encoding: .utf8)) ?? "" }.joined()
        XCTAssertFalse(logs.contains(Self.tenantSecret))
        XCTAssertFalse(logs.contains("plugin-secret"))
    }

    func daemonPID(_ c: LocalCluster, _ volumeID: String, _ path: String) throws -> Int {
        let entries = try FileManager.default.contentsOfDirectory(atPath: "/proc").compactMap(Int.init)
        for pid in entries {
            guard let raw = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { continue }
            let arguments = String(decoding: raw, as: UTF8.self).split(separator: "\0").map(String.init)
            if arguments.contains("mount"), arguments.contains(volumeID), arguments.contains(path) { return pid }
        }
        throw E2EError("no daemon for \(volumeID) at \(path)")
    }

    func expectStatus(_ code: RPCCode, mentioning: String? = nil, secretAbsent: Bool = false,
                      _ body: () async throws -> Void) async throws {
        do {
            try await body()
            XCTFail("expected \(code)")
        } catch let error as RPCError {
            XCTAssertEqual(error.code, code, error.message)
            if let mentioning { XCTAssertTrue(error.message.contains(mentioning), error.message) }
            if secretAbsent { XCTAssertFalse(error.message.contains(Self.tenantSecret), error.message) }
        }
    }
}
