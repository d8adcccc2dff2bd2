import Foundation
import HearthScheduler
import NIOCore
import XCTest

/// Prioritize parses its body with a scanner and falls back to JSONDecoder for
/// anything unusual: both paths must give the same pod and names for every valid
/// body, in both forms, and every invalid body must still be a 400 with a message.
final class PrioritizeParsingTests: XCTestCase {
    func parse(_ body: String) throws -> (claims: [PodClaim], annotations: [String: String], nodes: [String]) {
        let parsed = try SchedulerHTTP.prioritizeArguments(ByteBuffer(string: body))
        return (parsed.pod.claims, parsed.pod.metadata.annotations ?? [:], parsed.nodes)
    }

    func reference(_ body: String) throws -> (claims: [PodClaim], annotations: [String: String], nodes: [String]) {
        let args = try JSONDecoder().decode(ExtenderArgs<NodeName>.self, from: Data(body.utf8))
        let pod = try XCTUnwrap(args.pod)
        return (pod.claims, pod.metadata.annotations ?? [:], args.candidateNames)
    }

    func testBothFormsAgreeWithTheDecoder() throws {
        let pod = GoPayloads.pod(annotations: ["hearth.csi.dev/min-cached-share": "50%"],
                                 claims: [("data", "data", false), ("ro", "models", true)])
        let names = ["worker-1", "wörker-2.zone-ü", "w3"]
        let bodies = [
            GoPayloads.argsWithNames(pod: pod, nodes: names),
            GoPayloads.argsWithNodes(pod: pod, nodes: names),
            // Both forms: NodeNames wins, whatever the order of the keys.
            "{\"NodeNames\":[\"a\"],\"Nodes\":{\"metadata\":{},\"items\":[{\"metadata\":{\"name\":\"b\"}}]},\"Pod\":\(pod)}",
            // Old lower-case keys, whitespace everywhere, unknown keys, numbers and literals skipped.
            " {\n \"pod\" : \(pod) , \"extra\" : [1, -2.5e+3, true, false, null, {\"x\": \"\\u00e9\\n\"}],\n \"nodenames\" : [ \"x\" , \"y\" ] } ",
            // Escapes in a name: the decoder's path, same answer.
            "{\"Pod\":\(pod),\"NodeNames\":[\"a\\\"b\",\"c\\u0041\"]}",
            // Nodes with null items and with extra member fields.
            "{\"Pod\":\(pod),\"Nodes\":{\"metadata\":{\"resourceVersion\":\"1\"},\"items\":null}}",
            "{\"Pod\":\(pod),\"Nodes\":{\"items\":[{\"kind\":\"Node\",\"metadata\":{\"uid\":\"u\",\"name\":\"n1\",\"labels\":{\"a\":\"b\"}},\"status\":{}}]}}",
            // Nesting deeper than the scanner goes: the decoder's path.
            "{\"Pod\":\(pod),\"NodeNames\":[\"a\"],\"x\":" + String(repeating: "[", count: 300) + String(repeating: "]", count: 300) + "}",
        ]
        for body in bodies {
            let fast = try parse(body)
            let slow = try reference(body)
            XCTAssertEqual(fast.claims, slow.claims, body)
            XCTAssertEqual(fast.annotations, slow.annotations, body)
            XCTAssertEqual(fast.nodes, slow.nodes, body)
        }
        XCTAssertEqual(try parse(bodies[0]).nodes, names)
        XCTAssertEqual(try parse(bodies[2]).nodes, ["a"])
        XCTAssertEqual(try parse(bodies[4]).nodes, ["a\"b", "cA"])
        XCTAssertEqual(try parse(bodies[6]).nodes, ["n1"])
        XCTAssertEqual(try parse(bodies[0]).claims.map(\.readOnly), [false, true])
    }

    /// (Foundation's decoder tolerates a trailing comma in an array and bad escapes
    /// in values it skips; the scanner refuses both and defers to it, so those
    /// bodies are accepted as the decoder accepts them, and are not listed here.)
    func testInvalidBodiesAreRefused() {
        let pod = GoPayloads.pod(claims: [("data", "data", false)])
        let bad = [
            "", "{", "{}", "[]", "{\"Pod\":\(pod)}",
            "{\"Pod\":\(pod),\"NodeNames\":[\"a\"]} trailing", "{\"Pod\":\(pod),\"NodeNames\":[\"a\u{01}\"]}",
            "{\"Pod\":\(pod),\"NodeNames\":[01]}", "{\"Pod\":\(pod),\"NodeNames\":[\"a\"],\"x\":tru}",
            "{\"Pod\":\(pod),\"Nodes\":{\"items\":[{\"metadata\":{}}]}}",
        ]
        for body in bad {
            XCTAssertThrowsError(try parse(body), body)
        }
        // Invalid UTF-8 in a name.
        var bytes = ByteBuffer(string: "{\"Pod\":\(pod),\"NodeNames\":[\"a")
        bytes.writeBytes([0xff, 0xfe])
        bytes.writeString("\"]}")
        XCTAssertThrowsError(try SchedulerHTTP.prioritizeArguments(bytes))
    }
}
