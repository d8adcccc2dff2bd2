import Foundation
import HearthRPC
import XCTest

/// Our client against our server, over a unix socket and over TCP.
final class RPCBehaviourTests: XCTestCase {
    func withServer(
        options: RPCServerOptions = RPCServerOptions(), channelOptions: RPCChannelOptions = RPCChannelOptions(),
        _ body: (EchoServer, RPCChannel, String) async throws -> Void
    ) async throws {
        for (name, endpoint) in bothTransports() {
            let server = try EchoServer(endpoints: [endpoint], options: options)
            let channel = RPCChannel(endpoint: server.dialEndpoint, options: channelOptions)
            do {
                try await body(server, channel, name)
            } catch {
                XCTFail("\(name): \(error)")
            }
            await channel.close()
            await server.server.shutdown(grace: .seconds(1))
        }
    }

    func testUnaryRoundTripWithMetadataIncludingBinary() async throws {
        try await withServer { _, channel, transport in
            var metadata = RPCMetadata()
            metadata.add("x-text", "hello")
            metadata.add("x-data-bin", bytes: [0, 255, 10, 13, 0])
            let payload = (0..<1000).map { UInt8($0 % 256) }
            let reply = try await channel.unary("/test.Echo/Echo", payload, metadata: metadata)
            XCTAssertEqual(reply.message, payload, transport)
            XCTAssertEqual(reply.initialMetadata["x-text"], "hello", transport)
            XCTAssertEqual(reply.initialMetadata.bytes("x-data-bin"), [0, 255, 10, 13, 0], transport)
            XCTAssertEqual(reply.trailingMetadata["trailer-echo"], "done", transport)
            XCTAssertEqual(reply.trailingMetadata.bytes("trailer-bin"), [0, 1, 2, 255, 254], transport)
        }
    }

    func testEmptyAndInlineSizedMessagesSurviveIntact() async throws {
        // Messages up to 23 bytes live inline in a grpc_slice: the case that
        // corrupts when a slice is read by value.
        try await withServer { _, channel, transport in
            for size in [0, 1, 7, 22, 23, 24, 100] {
                let payload = (0..<size).map { UInt8(($0 * 31 + size) % 256) }
                let reply = try await channel.unary("/test.Echo/Echo", payload)
                XCTAssertEqual(reply.message, payload, "\(transport) size \(size)")
            }
        }
    }

    func testStatusCodeMessageAndTrailersReachTheClient() async throws {
        try await withServer { _, channel, _ in
            for code in [RPCCode.notFound, .alreadyExists, .failedPrecondition, .resourceExhausted, .aborted, .outOfRange] {
                var metadata = RPCMetadata()
                metadata.add("x-code", "\(code.rawValue)")
                metadata.add("x-message", "because \(code)")
                let error = await assertRPCError(code) { try await channel.unary("/test.Echo/Fail", [], metadata: metadata) }
                XCTAssertEqual(error?.message, "because \(code)")
                XCTAssertEqual(error?.trailingMetadata.bytes("failure-detail-bin"), [9, 8, 7])
            }
        }
    }

    func testUnknownMethodIsUnimplemented() async throws {
        try await withServer { _, channel, _ in
            let error = await assertRPCError(.unimplemented) { try await channel.unary("/test.Echo/Nope", [1]) }
            XCTAssertTrue(error?.message.contains("/test.Echo/Nope") ?? false, error?.message ?? "")
        }
    }

    func testDeadlineExceededEndsCallAndCancelsHandler() async throws {
        try await withServer { server, channel, _ in
            let before = server.observed.cancelledWhileRunning
            let started = ContinuousClock.now
            await assertRPCError(.deadlineExceeded) {
                try await channel.unary("/test.Echo/Sleep", Array("5000".utf8), timeout: .milliseconds(200))
            }
            XCTAssertLessThan(ContinuousClock.now - started, .seconds(3), "the client enforces the deadline")
            try await waitFor { server.observed.cancelledWhileRunning > before }
        }
    }

    func testHandlerSeesRemainingTime() async throws {
        try await withServer { _, channel, _ in
            let reply = try await channel.unary("/test.Echo/Deadline", [], timeout: .seconds(10))
            let left = Int(String(decoding: reply.message, as: UTF8.self)) ?? -1
            XCTAssertGreaterThan(left, 8000)
            XCTAssertLessThanOrEqual(left, 10500, "grpc-timeout is rounded up on the wire, never by more")
            let none = try await channel.unary("/test.Echo/Deadline", [])
            XCTAssertEqual(String(decoding: none.message, as: UTF8.self), "none")
        }
    }

    func testCancelledClientTaskCancelsCallAndServerHandler() async throws {
        try await withServer { server, channel, _ in
            let before = server.observed.cancelledWhileRunning
            let task = Task { try await channel.unary("/test.Echo/Sleep", Array("10000".utf8)) }
            try await waitFor { server.observed.running > 0 }
            let cancelledAt = ContinuousClock.now
            task.cancel()
            do {
                _ = try await task.value
                XCTFail("a cancelled call must not succeed")
            } catch let error as RPCError {
                XCTAssertEqual(error.code, .cancelled)
            }
            XCTAssertLessThan(ContinuousClock.now - cancelledAt, .seconds(2))
            // The server learns while the handler runs, not when it would have ended.
            try await waitFor(within: .seconds(3)) { server.observed.cancelledWhileRunning > before }
        }
    }

    func testTaskCancelledBeforeTheCallStartsNeverReachesTheServer() async throws {
        try await withServer { _, channel, _ in
            let task = Task {
                withUnsafeCurrentTask { $0?.cancel() }
                return try await channel.unary("/test.Echo/Echo", [1, 2, 3])
            }
            await assertRPCError(.cancelled) { try await task.value }
        }
    }

    func testOversizedMessagesAreRejectedBothWays() async throws {
        var options = RPCServerOptions()
        options.maxReceiveMessageBytes = 64 * 1024
        options.maxSendMessageBytes = 64 * 1024
        var channelOptions = RPCChannelOptions()
        channelOptions.maxReceiveMessageBytes = 32 * 1024
        try await withServer(options: options, channelOptions: channelOptions) { _, channel, _ in
            await assertRPCError(.resourceExhausted) {
                try await channel.unary("/test.Echo/Echo", [UInt8](repeating: 1, count: 100 * 1024))
            }
            await assertRPCError(.resourceExhausted) { try await channel.unary("/test.Echo/Big", Array("100000".utf8)) }
            await assertRPCError(.resourceExhausted) { try await channel.unary("/test.Echo/Big", Array("40000".utf8)) }
            let fits = try await channel.unary("/test.Echo/Big", Array("30000".utf8))
            XCTAssertEqual(fits.message.count, 30000)
        }
    }

    func testInvalidMetadataIsRefusedLocally() async throws {
        try await withServer { _, channel, _ in
            var bad = RPCMetadata()
            bad.add("x-text", "line\nbreak")
            await assertRPCError(.invalidArgument) { try await channel.unary("/test.Echo/Echo", [], metadata: bad) }
            var badKey = RPCMetadata()
            badKey.add("Bad Key", "v")
            await assertRPCError(.invalidArgument) { try await channel.unary("/test.Echo/Echo", [], metadata: badKey) }
            // The channel still works afterwards.
            _ = try await channel.unary("/test.Echo/Echo", [1])
        }
    }

    func testGracefulShutdownLetsCallsFinishThenRefusesNewOnes() async throws {
        let server = try EchoServer(endpoints: [.unix(path: temporarySocketPath())])
        let channel = RPCChannel(endpoint: server.dialEndpoint)
        let inFlight = Task { try await channel.unary("/test.Echo/Sleep", Array("300".utf8)) }
        try await waitFor { server.observed.running > 0 }
        await server.server.shutdown(grace: .seconds(5))
        let reply = try await inFlight.value
        XCTAssertEqual(String(decoding: reply.message, as: UTF8.self), "slept 300")
        await assertRPCError(.unavailable) { try await channel.unary("/test.Echo/Echo", [1], timeout: .seconds(2)) }
        await channel.close()
    }

    func testShutdownCancelsCallsThatOutliveTheGrace() async throws {
        let server = try EchoServer(endpoints: [.tcp(host: "127.0.0.1", port: 0)])
        let channel = RPCChannel(endpoint: server.dialEndpoint)
        let inFlight = Task { try await channel.unary("/test.Echo/Sleep", Array("60000".utf8)) }
        try await waitFor { server.observed.running > 0 }
        let started = ContinuousClock.now
        await server.server.shutdown(grace: .milliseconds(300))
        XCTAssertLessThan(ContinuousClock.now - started, .seconds(5))
        do {
            _ = try await inFlight.value
            XCTFail("a call cancelled by shutdown must not succeed")
        } catch let error as RPCError {
            XCTAssertTrue([.cancelled, .unavailable].contains(error.code), "\(error)")
        }
        XCTAssertEqual(server.observed.cancelledWhileRunning, 1)
        await channel.close()
    }
}

/// Polls `condition` until true or the bound passes (then fails the test).
func waitFor(
    within bound: Duration = .seconds(5), file: StaticString = #filePath, line: UInt = #line,
    _ condition: () -> Bool
) async throws {
    let giveUp = ContinuousClock.now + bound
    while !condition() {
        if ContinuousClock.now > giveUp {
            XCTFail("condition not met within \(bound)", file: file, line: line)
            return
        }
        try await Task.sleep(for: .milliseconds(10))
    }
}
