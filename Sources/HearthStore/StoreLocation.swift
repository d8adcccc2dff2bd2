import Foundation

/// A parsed `--store` URL: `file:///path` or `s3://bucket/prefix`. One parser, used
/// by the CLI, the controller and the node plugin, so they agree on what a store URL
/// means.
public enum StoreLocation: Sendable, Hashable, CustomStringConvertible {
    case directory(String)
    case s3(bucket: String, prefix: String)

    public init(_ string: String) throws {
        if string.hasPrefix("file://") {
            let path = String(string.dropFirst("file://".count))
            guard path.hasPrefix("/") else { throw StoreError.invalidArgument("file store URL needs an absolute path: file:///path") }
            self = .directory(path.removingPercentEncoding ?? path)
        } else if string.hasPrefix("s3://") {
            let rest = string.dropFirst("s3://".count)
            let parts = rest.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
            let bucket = String(parts[0])
            var prefix = parts.count > 1 ? String(parts[1]) : ""
            if !prefix.isEmpty && !prefix.hasSuffix("/") { prefix += "/" }
            guard S3Store.isValidBucketName(bucket) else { throw StoreError.invalidArgument("invalid bucket in \(string)") }
            if !prefix.isEmpty { try ObjectKey.validatePrefix(prefix) }
            self = .s3(bucket: bucket, prefix: prefix)
        } else if string.hasPrefix("/") {
            self = .directory(string)
        } else {
            throw StoreError.invalidArgument("store URL must be file:///path or s3://bucket/prefix, got \(string.debugDescription)")
        }
    }

    public var description: String {
        switch self {
        case .directory(let path): "file://\(path)"
        case .s3(let bucket, let prefix): "s3://\(bucket)/\(prefix)"
        }
    }

    /// The embedded default: `$HEARTH_DATA_DIR/store`, else `/var/lib/hearth/store` for
    /// root, else `~/.local/share/hearth/store` (a person trying the CLI unprivileged).
    public static func defaultLocation(environment: [String: String] = ProcessInfo.processInfo.environment) -> StoreLocation {
        if let dir = environment["HEARTH_DATA_DIR"], !dir.isEmpty {
            return .directory(dir + "/store")
        }
        if getuid() == 0 { return .directory("/var/lib/hearth/store") }
        let home = environment["HOME"] ?? NSHomeDirectory()
        return .directory(home + "/.local/share/hearth/store")
    }

    /// Opens the store. S3 needs a configuration template for endpoint, region,
    /// addressing, credentials and retries; bucket and prefix come from the URL.
    public func open(s3 template: S3Configuration? = nil) throws -> any ObjectStore {
        switch self {
        case .directory(let path):
            return try DirectoryStore(root: URL(fileURLWithPath: path))
        case .s3(let bucket, let prefix):
            guard var configuration = template else {
                throw StoreError.invalidArgument("an s3:// store needs credentials (flags, environment or file)")
            }
            configuration.bucket = bucket
            configuration.prefix = prefix
            return try S3Store(configuration)
        }
    }
}
