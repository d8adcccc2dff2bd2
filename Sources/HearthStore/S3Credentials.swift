import Foundation

/// Access keys for an S3-compatible engine.
///
/// Secrets must never reach a log line, an error message or a `--json` dump, so the
/// type's `description` (what `print`, string interpolation and swift-log use)
/// shows only the access key id and redacts the rest.
public struct S3Credentials: Sendable, Hashable, CustomStringConvertible, CustomDebugStringConvertible {
    public var accessKeyID: String
    public var secretAccessKey: String
    /// Temporary credentials (STS) carry a session token sent as `x-amz-security-token`.
    public var sessionToken: String?

    public init(accessKeyID: String, secretAccessKey: String, sessionToken: String? = nil) {
        self.accessKeyID = accessKeyID
        self.secretAccessKey = secretAccessKey
        self.sessionToken = sessionToken
    }

    public var description: String {
        "S3Credentials(accessKeyID: \(accessKeyID), secretAccessKey: <redacted>\(sessionToken == nil ? "" : ", sessionToken: <redacted>"))"
    }

    public var debugDescription: String { description }

    /// Credentials from `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and the optional
    /// `AWS_SESSION_TOKEN`, as every S3 tool reads them; nil when unset.
    public static func fromEnvironment(_ environment: [String: String] = ProcessInfo.processInfo.environment) -> S3Credentials? {
        guard let id = environment["AWS_ACCESS_KEY_ID"], !id.isEmpty,
              let secret = environment["AWS_SECRET_ACCESS_KEY"], !secret.isEmpty
        else { return nil }
        let token = environment["AWS_SESSION_TOKEN"].flatMap { $0.isEmpty ? nil : $0 }
        return S3Credentials(accessKeyID: id, secretAccessKey: secret, sessionToken: token)
    }

    /// Reads a credentials file: either the AWS shared-credentials INI format
    /// (`aws_access_key_id = …` under `[profile]`) or plain `KEY=value` lines with the
    /// environment variable names (a Kubernetes Secret mounted as a file).
    public static func fromFile(_ path: String, profile: String = "default") throws -> S3Credentials {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw StoreError.invalidArgument("cannot read credentials file \(path)")
        }
        var section: String? = nil
        var values: [String: String] = [:]
        for rawLine in text.split(whereSeparator: \.isNewline) {
            let line = rawLine.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") || line.hasPrefix(";") { continue }
            if line.hasPrefix("[") && line.hasSuffix("]") {
                section = String(line.dropFirst().dropLast()).trimmingCharacters(in: .whitespaces)
                continue
            }
            guard section == nil || section == profile || section == "profile \(profile)",
                  let eq = line.firstIndex(of: "=") else { continue }
            let name = line[..<eq].trimmingCharacters(in: .whitespaces).lowercased()
            let value = line[line.index(after: eq)...].trimmingCharacters(in: .whitespaces)
            values[name] = value
        }
        let id = values["aws_access_key_id"]
        let secret = values["aws_secret_access_key"]
        guard let id, let secret, !id.isEmpty, !secret.isEmpty else {
            throw StoreError.invalidArgument("credentials file \(path) has no aws_access_key_id / aws_secret_access_key")
        }
        return S3Credentials(accessKeyID: id, secretAccessKey: secret, sessionToken: values["aws_session_token"])
    }
}
