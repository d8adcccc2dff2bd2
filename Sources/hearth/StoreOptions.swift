import ArgumentParser
import Foundation
import HearthStore

/// `--store` and its S3 options, shared by every command that opens the store, so
/// all of them read the same flags, environment and credential files the same way.
struct StoreOptions: ParsableArguments {
    @Option(help: ArgumentHelp(
        "Where volumes live: file:///path or s3://bucket/prefix.",
        discussion: "Default: $HEARTH_DATA_DIR/store, /var/lib/hearth/store as root, else ~/.local/share/hearth/store."))
    var store: String?

    @Option(name: .customLong("s3-endpoint"), help: "S3 endpoint URL (default: AWS for the region).")
    var s3Endpoint: String?

    @Option(name: .customLong("s3-region"), help: "S3 region used for signing.")
    var s3Region: String = "us-east-1"

    @Flag(name: .customLong("s3-path-style"), help: "Address buckets as endpoint/bucket instead of bucket.endpoint.")
    var s3PathStyle = false

    @Option(name: .customLong("s3-credentials-file"),
            help: "AWS-style credentials file (default: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN).")
    var s3CredentialsFile: String?

    @Option(name: .customLong("s3-access-key-id"), help: "Access key id (overrides the environment and file).")
    var s3AccessKeyID: String?

    @Option(name: .customLong("s3-secret-access-key"),
            help: "Secret key. Visible in `ps` and shell history: prefer the environment or --s3-credentials-file.")
    var s3SecretAccessKey: String?

    @Flag(help: "Print machine-readable JSON instead of a table.")
    var json = false

    var location: StoreLocation {
        get throws {
            guard let store else { return StoreLocation.defaultLocation() }
            return try StoreLocation(store)
        }
    }

    @Flag(name: .customLong("s3-credentials-from-environment"),
          help: ArgumentHelp("Take the keys from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY even when a credentials file is named (set by the node plugin for volumes whose StorageClass supplies secrets).",
                             visibility: .hidden))
    var s3CredentialsFromEnvironment = false

    /// Opens the store with the credentials of ``credentials()``.
    func open() throws -> any ObjectStore { try openScoped().base }

    /// Opens the store, and for S3 the means to open it again under the keys a
    /// CSI request's secrets carry.
    func openScoped() throws -> CredentialScopedStores {
        let location = try location
        guard case .s3 = location else { return CredentialScopedStores(base: try location.open()) }
        var endpoint: URL? = nil
        if let s3Endpoint {
            guard let url = URL(string: s3Endpoint), url.scheme != nil else {
                throw ValidationError("--s3-endpoint must be a URL such as http://127.0.0.1:9000")
            }
            endpoint = url
        }
        let template = S3Configuration(bucket: "placeholder", endpoint: endpoint, region: s3Region,
                                       pathStyle: s3PathStyle, credentials: try credentials())
        return CredentialScopedStores(base: try location.open(s3: template)) { credentials in
            var configuration = template
            configuration.credentials = credentials
            return try location.open(s3: configuration)
        }
    }

    /// S3 credentials: flags first, then the file, then the environment (the
    /// flags exist for one-off use; they are visible in `ps`).
    /// `--s3-credentials-from-environment` puts the environment first.
    func credentials() throws -> S3Credentials {
        if s3CredentialsFromEnvironment {
            guard let fromEnvironment = S3Credentials.fromEnvironment() else {
                throw ValidationError("--s3-credentials-from-environment: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not set")
            }
            return fromEnvironment
        }
        var credentials: S3Credentials
        if let id = s3AccessKeyID, let secret = s3SecretAccessKey {
            credentials = S3Credentials(accessKeyID: id, secretAccessKey: secret)
        } else if let file = s3CredentialsFile {
            credentials = try S3Credentials.fromFile(file)
        } else if let fromEnvironment = S3Credentials.fromEnvironment() {
            credentials = fromEnvironment
        } else {
            throw ValidationError("s3:// stores need credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or pass --s3-credentials-file")
        }
        if let id = s3AccessKeyID { credentials.accessKeyID = id }
        return credentials
    }
}

/// Console output helpers for the store commands: tables for people, JSON for scripts.
enum Console {
    static func printJSON<T: Encodable>(_ value: T) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        encoder.dateEncodingStrategy = .iso8601
        print(String(decoding: try encoder.encode(value), as: UTF8.self))
    }

    /// Left-aligned columns sized to their widest cell.
    static func printTable(_ header: [String], _ rows: [[String]]) {
        let all = [header] + rows
        let widths = header.indices.map { column in all.map { $0[column].count }.max() ?? 0 }
        for row in all {
            let cells = row.enumerated().map { index, cell in
                index == row.count - 1 ? cell : cell.padding(toLength: widths[index], withPad: " ", startingAt: 0)
            }
            print(cells.joined(separator: "  "))
        }
    }

    /// Progress for long runs goes to stderr, so stdout stays clean for `--json`;
    /// only to a terminal, so logs and pipes do not fill with carriage returns.
    static func progress(_ text: String) {
        guard showsProgress else { return }
        FileHandle.standardError.write(Data("\r\u{1B}[K\(text)".utf8))
    }

    static func endProgress() {
        guard showsProgress else { return }
        FileHandle.standardError.write(Data("\r\u{1B}[K".utf8))
    }

    private static var showsProgress: Bool { isatty(STDERR_FILENO) == 1 }

    static func bytes(_ count: Int64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]
        var value = Double(count)
        var unit = 0
        while value >= 1024 && unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        return unit == 0 ? "\(count) B" : String(format: "%.1f %@", value, units[unit])
    }

    static func date(_ date: Date) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime]
        return formatter.string(from: date)
    }

    /// "10GiB", "500M", "1.5T", "4096": binary units, as Kubernetes quantities use them.
    static func parseBytes(_ text: String) throws -> Int64 {
        let units: [(String, Double)] = [
            ("KiB", 0x1p10), ("MiB", 0x1p20), ("GiB", 0x1p30), ("TiB", 0x1p40), ("PiB", 0x1p50),
            ("Ki", 0x1p10), ("Mi", 0x1p20), ("Gi", 0x1p30), ("Ti", 0x1p40), ("Pi", 0x1p50),
            ("K", 1e3), ("M", 1e6), ("G", 1e9), ("T", 1e12), ("P", 1e15), ("B", 1),
        ]
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        for (suffix, factor) in units where trimmed.hasSuffix(suffix) {
            if let number = Double(trimmed.dropLast(suffix.count)), number >= 0 { return Int64(number * factor) }
        }
        guard let plain = Int64(trimmed), plain >= 0 else {
            throw ValidationError("cannot read \(text.debugDescription) as a size (examples: 10GiB, 500Mi, 1073741824)")
        }
        return plain
    }

    /// "1h", "30m", "45s", "500ms", "200us", "0".
    static func parseDuration(_ text: String) throws -> Duration {
        let units: [(String, Double)] = [("us", 0.000_001), ("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600), ("d", 86400)]
        if text == "0" { return .zero }
        for (suffix, factor) in units where text.hasSuffix(suffix) {
            if let number = Double(text.dropLast(suffix.count)), number >= 0 {
                return .microseconds(Int64((number * factor * 1_000_000).rounded()))
            }
        }
        throw ValidationError("cannot read \(text.debugDescription) as a duration (examples: 1h, 30m, 10s)")
    }
}
