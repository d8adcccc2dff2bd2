import Foundation

/// A deliberately tiny reader for the few flat XML documents S3 returns
/// (`ListBucketResult`, `Error`, `InitiateMultipartUploadResult`).
///
/// Those documents are machine-generated, namespace-trivial and shallow, so a
/// scanner for `<Name>text</Name>` is enough and avoids pulling FoundationXML (and
/// libxml2) into every Hearth process. Unknown elements are ignored; entities and
/// numeric character references are decoded.
struct S3XML {
    let text: String

    init(_ data: Data) {
        text = String(decoding: data, as: UTF8.self)
    }

    /// Text of the first `<name>` element, if any.
    func first(_ name: String) -> String? {
        values(name, in: text[...]).first
    }

    /// Texts of every `<name>` element directly or indirectly inside `scope`.
    func values(_ name: String, in scope: Substring) -> [String] {
        var results: [String] = []
        var rest = scope
        let open = "<\(name)>"
        let close = "</\(name)>"
        while let start = rest.range(of: open) {
            guard let end = rest.range(of: close, range: start.upperBound..<rest.endIndex) else { break }
            results.append(Self.decodeEntities(rest[start.upperBound..<end.lowerBound]))
            rest = rest[end.upperBound...]
        }
        return results
    }

    /// The raw inner text of each `<name>…</name>` block, for nested records.
    func blocks(_ name: String) -> [Substring] {
        var results: [Substring] = []
        var rest = text[...]
        while let start = rest.range(of: "<\(name)>") {
            guard let end = rest.range(of: "</\(name)>", range: start.upperBound..<rest.endIndex) else { break }
            results.append(rest[start.upperBound..<end.lowerBound])
            rest = rest[end.upperBound...]
        }
        return results
    }

    static func decodeEntities(_ s: Substring) -> String {
        guard s.contains("&") else { return String(s) }
        var out = ""
        var i = s.startIndex
        while i < s.endIndex {
            let c = s[i]
            if c == "&", let semi = s[i...].firstIndex(of: ";") {
                let entity = s[s.index(after: i)..<semi]
                var replacement: String? = nil
                switch entity {
                case "amp": replacement = "&"
                case "lt": replacement = "<"
                case "gt": replacement = ">"
                case "quot": replacement = "\""
                case "apos": replacement = "'"
                default:
                    if entity.hasPrefix("#x"), let v = UInt32(entity.dropFirst(2), radix: 16), let u = UnicodeScalar(v) {
                        replacement = String(Character(u))
                    } else if entity.hasPrefix("#"), let v = UInt32(entity.dropFirst()), let u = UnicodeScalar(v) {
                        replacement = String(Character(u))
                    }
                }
                if let replacement {
                    out += replacement
                    i = s.index(after: semi)
                    continue
                }
            }
            out.append(c)
            i = s.index(after: i)
        }
        return out
    }

    /// S3 timestamps in listings: ISO 8601 with optional fractional seconds.
    static func parseISO8601(_ s: String) -> Date? {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        if let d = formatter.date(from: s) { return d }
        formatter.formatOptions = [.withInternetDateTime]
        return formatter.date(from: s)
    }

    /// `Last-Modified` headers: RFC 7231 IMF-fixdate.
    static func parseHTTPDate(_ s: String) -> Date? {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss zzz"
        return formatter.date(from: s)
    }

    static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;")
            .replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;")
            .replacingOccurrences(of: "\"", with: "&quot;")
    }
}
