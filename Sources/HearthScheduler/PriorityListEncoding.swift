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
            buffer.writeString(String(priority.score))
            buffer.writeInteger(UInt8(ascii: "}"))
        }
        buffer.writeInteger(UInt8(ascii: "]"))
        return buffer
    }

    /// A JSON string literal: `"` and `\` escaped, control characters as `\u00XX`,
    /// everything else (UTF-8 included) as is.
    static func writeJSONString(_ string: String, into buffer: inout ByteBuffer) {
        buffer.writeInteger(UInt8(ascii: "\""))
        let hex: [UInt8] = Array("0123456789abcdef".utf8)
        for byte in string.utf8 {
            switch byte {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"):
                buffer.writeInteger(UInt8(ascii: "\\"))
                buffer.writeInteger(byte)
            case 0..<0x20:
                buffer.writeStaticString("\\u00")
                buffer.writeInteger(hex[Int(byte >> 4)])
                buffer.writeInteger(hex[Int(byte & 0xf)])
            default:
                buffer.writeInteger(byte)
            }
        }
        buffer.writeInteger(UInt8(ascii: "\""))
    }
}
