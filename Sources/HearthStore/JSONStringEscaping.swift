/// JSON string escaping for the encoders Hearth writes by hand where `JSONEncoder`
/// costs too much: the takeover journal (a line per namespace change, under the
/// namespace lock) and the scheduler extender's priority lists. Here because both
/// depend on this module, not because the store writes JSON this way.
public enum JSONStringEscaping {
    /// Whether any byte must be escaped inside a JSON string (most names: none,
    /// and then the caller copies them as they are).
    @inlinable
    public static func needsEscaping(_ utf8: some Sequence<UInt8>) -> Bool {
        utf8.contains { $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") || $0 < 0x20 }
    }

    /// The inside of a JSON string literal: `"` and `\` escaped, control
    /// characters as `\u00XX`, everything else (UTF-8 included) as is.
    public static func escaped(_ string: String) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(string.utf8.count + 8)
        for byte in string.utf8 {
            switch byte {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"):
                out.append(UInt8(ascii: "\\"))
                out.append(byte)
            case 0..<0x20:
                out.append(contentsOf: "\\u00".utf8)
                out.append(hexDigits[Int(byte >> 4)])
                out.append(hexDigits[Int(byte & 0xf)])
            default:
                out.append(byte)
            }
        }
        return out
    }

    private static let hexDigits = Array("0123456789abcdef".utf8)
}
