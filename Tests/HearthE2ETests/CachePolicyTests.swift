import CSIProto
import Foundation
import HearthRPC
import XCTest

/// `cachePolicy`: `keep` leaves a volume's bytes in the node cache after
/// unstage (the next pod starts warm), `drop` empties them; the policy is
/// read at unstage, so ControllerModifyVolume changes it for a volume in use.
final class CachePolicyTests: XCTestCase {
    func testDropEmptiesTheCacheAtUnstageAndKeepDoesNot() async throws {
        try await LocalCluster.run { try await scenario($0) }
    }

    func scenario(_ c: LocalCluster) async throws {
        let objects = c.directory + "/data/cache/objects"
        let dropped = try await cycle(c, name: "pvc-drop", policy: "drop", seed: 1)
        XCTAssertLessThan(allocatedBytes(objects), 64 << 10, "drop left bytes in the cache")

        let kept = try await cycle(c, name: "pvc-keep", policy: "keep", seed: 2)
        XCTAssertGreaterThanOrEqual(allocatedBytes(objects), 3 << 20, "keep lost its cached bytes")

        // The policy is mutable: switched to drop, the next unstage empties it.
        var modify = Csi_V1_ControllerModifyVolumeRequest()
        modify.volumeID = kept
        modify.mutableParameters = ["cachePolicy": "drop"]
        _ = try await c.controllerCall("ControllerModifyVolume", modify, as: Csi_V1_ControllerModifyVolumeResponse.self)
        let staging = try await stage(c, kept)
        XCTAssertEqual(FileManager.default.contents(atPath: staging + "/data"), Self.payload(seed: 2))
        try await c.unstage(kept, staging)
        XCTAssertLessThan(allocatedBytes(objects), 64 << 10, "drop after modify left bytes in the cache")

        // Dropped bytes come back from the store on demand.
        let again = try await stage(c, dropped)
        XCTAssertEqual(FileManager.default.contents(atPath: again + "/data"), Self.payload(seed: 1))
        try await c.unstage(dropped, again)
    }

    /// Creates a volume with `policy`, writes 3 MiB through a staged mount, unstages.
    func cycle(_ c: LocalCluster, name: String, policy: String, seed: UInt8) async throws -> String {
        let volume = try await c.createVolume(name, parameters: ["cachePolicy": policy])
        let staging = try await stage(c, volume.volumeID)
        try writeDurably(Self.payload(seed: seed), to: staging + "/data")
        try await c.unstage(volume.volumeID, staging)
        return volume.volumeID
    }

    func stage(_ c: LocalCluster, _ id: String) async throws -> String {
        let staging = c.kubelet + "/staging/\(id)"
        try await c.stage(id, staging, mountCapability(), [:])
        return staging
    }

    static func payload(seed: UInt8) -> Data {
        Data((0..<(3 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 2654435761 >> 11) ^ seed })
    }

    /// Disk blocks of the cache's clean files (sparse: punched bytes take none).
    func allocatedBytes(_ directory: String) -> Int64 {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        var total: Int64 = 0
        for name in names where !name.hasSuffix(".map") {
            var st = stat()
            if lstat(directory + "/" + name, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG { total += Int64(st.st_blocks) * 512 }
        }
        return total
    }
}
