import HearthStore
import NIOCore

extension HostPriority {
    /// The HostPriorityList JSON, `[{"Host":"…","Score":n},…]`, written straight into
    /// a buffer. Prioritize answers one entry per candidate node (5,000 in a large
    /// cluster) and the extender's budget is a few milliseconds; a generic encoder
    /// spends most of that on per-element container bookkeeping. The output decodes
    /// to the same list as `JSONEncoder` would produce (tested), escaping included.
    public static func listJSON(_ list: [HostPriority]) -> ByteBuffer {
        var buffer = ByteBufferAllocator().buffer(capacity: 2 + list.count * 40)
        buffer.writeInteger(UInt8(ascii: "["))
        for (index, priority) in list.enumerated() {
            if index > 0 { buffer.writeInteger(UInt8(ascii: ",")) }
            buffer.writeStaticString("{\"Host\":")
            writeJSONString(priority.host, into: &buffer)
            buffer.writeStaticString(",\"Score\":")
            if (0...9).contains(priority.score) {
                buffer.writeInteger(UInt8(ascii: "0") + UInt8(priority.score))  // no String per node
            } else {
                buffer.writeString(String(priority.score))
            }
            buffer.writeInteger(UInt8(ascii: "}"))
        }
        buffer.writeInteger(UInt8(ascii: "]"))
        return buffer
    }

    /// A JSON string literal (``JSONStringEscaping``).
    static func writeJSONString(_ string: String, into buffer: inout ByteBuffer) {
        buffer.writeInteger(UInt8(ascii: "\""))
        // Node names never need escaping: one copy instead of a write per byte.
        var string = string
        let plain = string.withUTF8 { bytes in
            guard !JSONStringEscaping.needsEscaping(bytes) else { return false }
            buffer.writeBytes(bytes)
            return true
        }
        if !plain { buffer.writeBytes(JSONStringEscaping.escaped(string)) }
        buffer.writeInteger(UInt8(ascii: "\""))
    }
}
