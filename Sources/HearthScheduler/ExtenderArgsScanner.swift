import Foundation

/// The prioritize request's fast path: pulls the pod and the candidate names out of
/// an ExtenderArgs body without building a generic JSON tree.
///
/// Why: prioritize is the call kube-scheduler waits on for every pod, and a
/// `NodeNames` body for 5,000 nodes (or a `Nodes` body of megabytes) costs
/// Foundation's `JSONDecoder` more than everything else the extender does. The scanner
/// walks the bytes once, validating the JSON grammar as it skips what it does not
/// need (node objects, the pod's containers), and hands only the pod's bytes (a
/// kilobyte or two) to `JSONDecoder`.
///
/// It is deliberately strict and small: it answers nil whenever anything is
/// unusual (malformed or mistyped JSON, escapes in keys or names, deep nesting), and
/// the caller then decodes with `JSONDecoder`, which gives the same result for valid
/// input and a precise message (path and expected type) for invalid input. So the
/// scanner only has to be right about what it accepts.
struct ExtenderArgsScanner {
    /// What prioritize needs: the pod (nil when `Pod` is absent or null) and the
    /// candidate names, `NodeNames` winning over `Nodes` as in ``ExtenderArgs``.
    struct Parsed {
        var pod: Pod?
        var names: [String]?
    }

    private let bytes: UnsafeRawBufferPointer
    private var position = 0
    private static let maxDepth = 256

    private init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    /// The parsed request, or nil to make the caller take the `JSONDecoder` path.
    static func scan(_ bytes: UnsafeRawBufferPointer) -> Parsed? {
        var scanner = ExtenderArgsScanner(bytes)
        return scanner.arguments()
    }

    private mutating func arguments() -> Parsed? {
        guard consume(UInt8(ascii: "{")) else { return nil }
        var pod: Pod?
        var names: [String]?
        var nodeListNames: [String]?
        var first = true
        while true {
            skipWhitespace()
            if consume(UInt8(ascii: "}")) { break }
            if !first { guard consume(UInt8(ascii: ",")) else { return nil } }
            first = false
            guard let key = plainString() else { return nil }
            guard consume(UInt8(ascii: ":")) else { return nil }
            switch Self.lowercased(key) {
            case "pod":
                let start = skipWhitespaceAndMark()
                guard skipValue(depth: 0) else { return nil }
                pod = nil
                if !isNull(start..<position) {
                    guard let decoded = try? JSONDecoder().decode(Pod.self, from: Data(bytes[start..<position])) else { return nil }
                    pod = decoded
                }
            case "nodenames":
                if consumeNull() { names = nil; continue }
                guard let list = stringArray() else { return nil }
                names = list
            case "nodes":
                if consumeNull() { nodeListNames = nil; continue }
                guard let list = nodeList() else { return nil }
                nodeListNames = list
            default:
                guard skipValue(depth: 0) else { return nil }
            }
        }
        skipWhitespace()
        guard position == bytes.count else { return nil }
        return Parsed(pod: pod, names: names ?? nodeListNames)
    }

    /// `{"metadata": any, "items": [{"metadata": {"name": "..."}, ...}, ...]}` → names.
    private mutating func nodeList() -> [String]? {
        guard consume(UInt8(ascii: "{")) else { return nil }
        var names: [String] = []
        var first = true
        while true {
            skipWhitespace()
            if consume(UInt8(ascii: "}")) { return names }
            if !first { guard consume(UInt8(ascii: ",")) else { return nil } }
            first = false
            guard let key = plainString(), consume(UInt8(ascii: ":")) else { return nil }
            if key == "items" {
                if consumeNull() { names = []; continue }
                guard consume(UInt8(ascii: "[")) else { return nil }
                names = []
                var firstItem = true
                while true {
                    skipWhitespace()
                    if consume(UInt8(ascii: "]")) { break }
                    if !firstItem { guard consume(UInt8(ascii: ",")) else { return nil } }
                    firstItem = false
                    guard let name = nodeName() else { return nil }
                    names.append(name)
                }
            } else {
                guard skipValue(depth: 1) else { return nil }
            }
        }
    }

    /// One v1.Node object → its `metadata.name`; the rest is skipped (validated).
    private mutating func nodeName() -> String? {
        guard consume(UInt8(ascii: "{")) else { return nil }
        var name: String?
        var first = true
        while true {
            skipWhitespace()
            if consume(UInt8(ascii: "}")) { return name }
            if !first { guard consume(UInt8(ascii: ",")) else { return nil } }
            first = false
            guard let key = plainString(), consume(UInt8(ascii: ":")) else { return nil }
            guard key == "metadata" else {
                guard skipValue(depth: 3) else { return nil }
                continue
            }
            guard consume(UInt8(ascii: "{")) else { return nil }
            name = nil
            var firstMember = true
            while true {
                skipWhitespace()
                if consume(UInt8(ascii: "}")) { break }
                if !firstMember { guard consume(UInt8(ascii: ",")) else { return nil } }
                firstMember = false
                guard let member = plainString(), consume(UInt8(ascii: ":")) else { return nil }
                if member == "name" {
                    guard let value = plainString() else { return nil }
                    name = value
                } else {
                    guard skipValue(depth: 4) else { return nil }
                }
            }
        }
    }

    private mutating func stringArray() -> [String]? {
        guard consume(UInt8(ascii: "[")) else { return nil }
        var list: [String] = []
        var first = true
        while true {
            skipWhitespace()
            if consume(UInt8(ascii: "]")) { return list }
            if !first { guard consume(UInt8(ascii: ",")) else { return nil } }
            first = false
            guard let string = plainString() else { return nil }
            list.append(string)
        }
    }

    // MARK: tokens

    /// A string without escapes (nil for one with escapes: the decoder handles those),
    /// validated as UTF-8 and free of raw control characters.
    private mutating func plainString() -> String? {
        skipWhitespace()
        guard consume(UInt8(ascii: "\"")) else { return nil }
        let start = position
        var ascii = true
        while position < bytes.count {
            let byte = bytes[position]
            if byte == UInt8(ascii: "\"") {
                let slice = UnsafeRawBufferPointer(rebasing: bytes[start..<position])
                position += 1
                if ascii { return String(decoding: slice, as: UTF8.self) }
                return String(validating: slice, as: UTF8.self)
            }
            if byte == UInt8(ascii: "\\") || byte < 0x20 { return nil }
            if byte >= 0x80 { ascii = false }
            position += 1
        }
        return nil
    }

    /// Skips one JSON value of any kind, checking its grammar.
    private mutating func skipValue(depth: Int) -> Bool {
        guard depth < Self.maxDepth else { return false }
        skipWhitespace()
        guard position < bytes.count else { return false }
        switch bytes[position] {
        case UInt8(ascii: "\""):
            return skipString()
        case UInt8(ascii: "{"):
            position += 1
            var first = true
            while true {
                skipWhitespace()
                if consume(UInt8(ascii: "}")) { return true }
                if !first { guard consume(UInt8(ascii: ",")) else { return false } }
                first = false
                skipWhitespace()
                guard position < bytes.count, bytes[position] == UInt8(ascii: "\""), skipString(),
                      consume(UInt8(ascii: ":")), skipValue(depth: depth + 1) else { return false }
            }
        case UInt8(ascii: "["):
            position += 1
            var first = true
            while true {
                skipWhitespace()
                if consume(UInt8(ascii: "]")) { return true }
                if !first { guard consume(UInt8(ascii: ",")) else { return false } }
                first = false
                guard skipValue(depth: depth + 1) else { return false }
            }
        case UInt8(ascii: "t"): return literal("true")
        case UInt8(ascii: "f"): return literal("false")
        case UInt8(ascii: "n"): return literal("null")
        default: return skipNumber()
        }
    }

    /// Skips a string, escapes included; UTF-8 of skipped strings is not checked
    /// (the scanner never keeps them).
    private mutating func skipString() -> Bool {
        position += 1  // the opening quote
        while position < bytes.count {
            let byte = bytes[position]
            position += 1
            switch byte {
            case UInt8(ascii: "\""):
                return true
            case UInt8(ascii: "\\"):
                guard position < bytes.count else { return false }
                let escaped = bytes[position]
                position += 1
                switch escaped {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"), UInt8(ascii: "b"), UInt8(ascii: "f"),
                     UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"):
                    continue
                case UInt8(ascii: "u"):
                    guard position + 4 <= bytes.count else { return false }
                    for offset in 0..<4 where !Self.isHexDigit(bytes[position + offset]) { return false }
                    position += 4
                default:
                    return false
                }
            case 0..<0x20:
                return false
            default:
                continue
            }
        }
        return false
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    private mutating func skipNumber() -> Bool {
        _ = consumeRaw(UInt8(ascii: "-"))
        guard position < bytes.count else { return false }
        if bytes[position] == UInt8(ascii: "0") {
            position += 1
        } else {
            guard digits() else { return false }
        }
        if consumeRaw(UInt8(ascii: ".")) { guard digits() else { return false } }
        if consumeRaw(UInt8(ascii: "e")) || consumeRaw(UInt8(ascii: "E")) {
            if !consumeRaw(UInt8(ascii: "+")) { _ = consumeRaw(UInt8(ascii: "-")) }
            guard digits() else { return false }
        }
        return true
    }

    private mutating func digits() -> Bool {
        let start = position
        while position < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[position]) { position += 1 }
        return position > start
    }

    private mutating func literal(_ word: StaticString) -> Bool {
        let count = word.utf8CodeUnitCount
        guard position + count <= bytes.count else { return false }
        for offset in 0..<count where bytes[position + offset] != word.utf8Start[offset] { return false }
        position += count
        return true
    }

    private mutating func consumeNull() -> Bool {
        skipWhitespace()
        return literal("null")
    }

    private func isNull(_ range: Range<Int>) -> Bool {
        range.count == 4 && bytes[range.lowerBound] == UInt8(ascii: "n")
    }

    private mutating func skipWhitespaceAndMark() -> Int {
        skipWhitespace()
        return position
    }

    /// Skips whitespace, then takes `byte` if it is next.
    private mutating func consume(_ byte: UInt8) -> Bool {
        skipWhitespace()
        return consumeRaw(byte)
    }

    private mutating func consumeRaw(_ byte: UInt8) -> Bool {
        guard position < bytes.count, bytes[position] == byte else { return false }
        position += 1
        return true
    }

    private mutating func skipWhitespace() {
        while position < bytes.count {
            switch bytes[position] {
            case UInt8(ascii: " "), UInt8(ascii: "\n"), UInt8(ascii: "\r"), UInt8(ascii: "\t"): position += 1
            default: return
            }
        }
    }

    private static func isHexDigit(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "a")...UInt8(ascii: "f"), UInt8(ascii: "A")...UInt8(ascii: "F"): true
        default: false
        }
    }

    /// ASCII lowercasing: the ExtenderArgs keys are ASCII (Go matches them
    /// case-insensitively; a key that only matches under Unicode folding goes to the
    /// decoder path, which compares with `lowercased()`).
    private static func lowercased(_ key: String) -> String {
        guard key.utf8.contains(where: { (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains($0) }) else { return key }
        return String(decoding: key.utf8.map { (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains($0) ? $0 | 0x20 : $0 }, as: UTF8.self)
    }
}
