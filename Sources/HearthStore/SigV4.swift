import Crypto
import Foundation

/// AWS Signature Version 4 for S3 requests.
///
/// No S3 SDK for Swift exists on the registry, and SigV4 is small: a canonical form
/// of the request, hashed and HMAC'd with a key derived from the secret, date, region
/// and service. It is kept separate from the HTTP code so it can be tested against
/// the published AWS examples and so the secret stays in one place.
struct SigV4Signer: Sendable {
    let credentials: S3Credentials
    let region: String
    let service = "s3"

    /// Returns the headers to add (`x-amz-date`, `x-amz-content-sha256`,
    /// `x-amz-security-token` when present, and `authorization`).
    ///
    /// - Parameters:
    ///   - path: the already-encoded absolute path (`/bucket/key`).
    ///   - query: raw (unencoded) query parameters.
    ///   - headers: headers to sign besides the ones added here; must include `host`.
    func sign(method: String, path: String, query: [(String, String)], headers: [(String, String)],
              payloadHash: String, date: Date = Date()) -> [(String, String)] {
        let amzDate = Self.amzDate(date)
        let day = String(amzDate.prefix(8))
        var all = headers.map { ($0.0.lowercased(), $0.1.trimmingCharacters(in: .whitespaces)) }
        all.append(("x-amz-date", amzDate))
        all.append(("x-amz-content-sha256", payloadHash))
        if let token = credentials.sessionToken { all.append(("x-amz-security-token", token)) }
        all.sort { $0.0 < $1.0 }

        var encodedQuery: [(name: String, value: String)] = []
        for (name, value) in query {
            encodedQuery.append((Self.encode(name, keepSlash: false), Self.encode(value, keepSlash: false)))
        }
        encodedQuery.sort { a, b in a.name == b.name ? a.value < b.value : a.name < b.name }
        let canonicalQuery = encodedQuery.map { pair in pair.name + "=" + pair.value }.joined(separator: "&")
        let canonicalHeaders = all.map { "\($0.0):\($0.1)\n" }.joined()
        let signedHeaders = all.map(\.0).joined(separator: ";")
        let canonicalRequest = [method, path, canonicalQuery, canonicalHeaders, signedHeaders, payloadHash]
            .joined(separator: "\n")

        let scope = "\(day)/\(region)/\(service)/aws4_request"
        let stringToSign = [
            "AWS4-HMAC-SHA256", amzDate, scope,
            Self.hex(SHA256.hash(data: Data(canonicalRequest.utf8))),
        ].joined(separator: "\n")

        var key = SymmetricKey(data: Data(("AWS4" + credentials.secretAccessKey).utf8))
        for part in [day, region, service, "aws4_request"] {
            key = SymmetricKey(data: Data(HMAC<SHA256>.authenticationCode(for: Data(part.utf8), using: key)))
        }
        let signature = Self.hex(HMAC<SHA256>.authenticationCode(for: Data(stringToSign.utf8), using: key))
        var added: [(String, String)] = [("x-amz-date", amzDate), ("x-amz-content-sha256", payloadHash)]
        if let token = credentials.sessionToken { added.append(("x-amz-security-token", token)) }
        added.append((
            "authorization",
            "AWS4-HMAC-SHA256 Credential=\(credentials.accessKeyID)/\(scope), SignedHeaders=\(signedHeaders), Signature=\(signature)"
        ))
        return added
    }

    static func amzDate(_ date: Date) -> String {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        let c = calendar.dateComponents([.year, .month, .day, .hour, .minute, .second], from: date)
        func pad(_ value: Int?, _ width: Int) -> String {
            let digits = String(value ?? 0)
            return String(repeating: "0", count: max(0, width - digits.count)) + digits
        }
        return pad(c.year, 4) + pad(c.month, 2) + pad(c.day, 2) + "T" + pad(c.hour, 2) + pad(c.minute, 2) + pad(c.second, 2) + "Z"
    }

    /// RFC 3986 percent-encoding as SigV4 requires: unreserved characters stay, `/`
    /// stays in paths only, everything else becomes `%XX` (uppercase hex).
    static func encode(_ string: String, keepSlash: Bool) -> String {
        var out = ""
        out.reserveCapacity(string.utf8.count)
        for byte in string.utf8 {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "_"),
                UInt8(ascii: "."), UInt8(ascii: "~"):
                out.unicodeScalars.append(UnicodeScalar(byte))
            case UInt8(ascii: "/") where keepSlash:
                out.append("/")
            default:
                out += String(format: "%%%02X", byte)
            }
        }
        return out
    }

    static func hex<D: Sequence>(_ digest: D) -> String where D.Element == UInt8 {
        let digits = Array("0123456789abcdef".utf8)
        var bytes: [UInt8] = []
        for byte in digest {
            bytes.append(digits[Int(byte >> 4)])
            bytes.append(digits[Int(byte & 0x0f)])
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
