import CSIProto
import Foundation
import XCTest

/// What a volume held before its daemon was killed (kill -9) is what it holds
/// after the successor took the connection over: files written and closed, with
/// and without fsync, including ones whose working copy a commit had already
/// retired (the journal's size for those is stale; the head's is right).
final class KilledDaemonTests: XCTestCase {
    func testClosedFilesReadBackWholeAfterAKill() async throws {
        try await LocalCluster.run { c in
            let id = try await c.createVolume("pvc-kill", bytes: 1 << 30).volumeID
            let staging = c.kubelet + "/staging/\(id)"
            try await c.stage(id, staging, mountCapability(), [:])
            let synced = Data((0..<(3 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 7919 >> 3) })
            try writeDurably(synced, to: staging + "/synced")
            let unsynced = Data("written, never fsync'd\n".utf8)
            FileManager.default.createFile(atPath: staging + "/unsynced", contents: unsynced)
            let killed = try XCTUnwrap(NodeUpgradeTests.daemonPID(id))
            XCTAssertEqual(kill(killed, SIGKILL), 0)

            // The first access waits for the successor; nothing fails.
            XCTAssertEqual(FileManager.default.contents(atPath: staging + "/synced"), synced)
            XCTAssertEqual(FileManager.default.contents(atPath: staging + "/unsynced"), unsynced)
            let successor = try XCTUnwrap(NodeUpgradeTests.daemonPID(id))
            XCTAssertNotEqual(successor, killed)

            // And the successor commits them whole.
            try await c.unstage(id, staging)
            try await c.stage(id, staging, mountCapability(), [:])
            XCTAssertEqual(FileManager.default.contents(atPath: staging + "/synced"), synced)
            XCTAssertEqual(FileManager.default.contents(atPath: staging + "/unsynced"), unsynced)
            try await c.unstage(id, staging)
        }
    }
}
