import AsyncHTTPClient
import Crypto
import Foundation
import Logging

/// Where and how to reach an S3-compatible bucket.
public struct S3Configuration: Sendable, Hashable {
    public var bucket: String
    /// Key prefix inside the bucket (empty or ending in `/`), so one bucket can hold
    /// several Hearth stores.
    public var prefix: String
    /// `https://s3.<region>.amazonaws.com` when nil.
    public var endpoint: URL?
    public var region: String
    /// `endpoint/bucket/key` instead of `bucket.endpoint/key`. Forced on for endpoints
    /// that are IP addresses or `localhost`, where virtual hosts cannot resolve.
    public var pathStyle: Bool
    public var credentials: S3Credentials
    public var retry: RetryPolicy
    /// Objects at least this large are uploaded in parts.
    public var multipartThreshold: Int
    public var partSize: Int

    public init(bucket: String, prefix: String = "", endpoint: URL? = nil, region: String = "us-east-1",
                pathStyle: Bool = false, credentials: S3Credentials, retry: RetryPolicy = .default,
                multipartThreshold: Int = 64 << 20, partSize: Int = 16 << 20) {
        self.bucket = bucket
        self.prefix = prefix.isEmpty || prefix.hasSuffix("/") ? prefix : prefix + "/"
        self.endpoint = endpoint
        self.region = region
        self.pathStyle = pathStyle
        self.credentials = credentials
        self.retry = retry
        self.multipartThreshold = multipartThreshold
        self.partSize = max(partSize, 5 << 20)
    }
}

/// An ``ObjectStore`` on any S3-compatible engine (AWS S3, MinIO, Ceph RGW), speaking
/// the REST API with SigV4 over AsyncHTTPClient.
///
/// Conditional writes map to `If-None-Match: *` (create) and `If-Match` (swap); a 412
/// becomes ``StoreError/alreadyExists(_:)`` or ``StoreError/conflict(_:)``. Transient
/// failures (5xx, 429/`SlowDown`, dropped or stalled connections) are retried by the
/// store layer's one retry helper within ``RetryPolicy``'s budget.
public struct S3Store: ObjectStore {
    public let configuration: S3Configuration
    private let signer: SigV4Signer
    private let scheme: String
    private let host: String
    private let hostHeader: String
    private let pathStyle: Bool
    private let logger: Logger

    /// One process-wide HTTP client: AsyncHTTPClient requires an explicit shutdown
    /// before deinit, and a static lives as long as the process, like `HTTPClient.shared`
    /// but with our connect timeout. Per-request deadlines come from ``RetryPolicy``.
    private static let client: HTTPClient = {
        var configuration = HTTPClient.Configuration()
        configuration.timeout = .init(connect: .seconds(5))
        configuration.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = 32
        configuration.decompression = .disabled
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }()

    public init(_ configuration: S3Configuration, logger: Logger = Logger(label: "hearth.store.s3")) throws {
        guard Self.isValidBucketName(configuration.bucket) else {
            throw StoreError.invalidArgument("invalid bucket name \(configuration.bucket.debugDescription)")
        }
        if !configuration.prefix.isEmpty { try ObjectKey.validatePrefix(configuration.prefix) }
        let endpoint = configuration.endpoint ?? URL(string: "https://s3.\(configuration.region).amazonaws.com")!
        guard let scheme = endpoint.scheme?.lowercased(), scheme == "http" || scheme == "https",
              let endpointHost = endpoint.host, !endpointHost.isEmpty else {
            throw StoreError.invalidArgument("S3 endpoint must be an http(s) URL, got \(endpoint.absoluteString)")
        }
        let isIPOrLocal = endpointHost == "localhost" || endpointHost.contains(":")
            || endpointHost.allSatisfy { $0.isNumber || $0 == "." }
        self.configuration = configuration
        signer = SigV4Signer(credentials: configuration.credentials, region: configuration.region)
        self.scheme = scheme
        pathStyle = configuration.pathStyle || isIPOrLocal
        host = pathStyle ? endpointHost : "\(configuration.bucket).\(endpointHost)"
        let defaultPort = scheme == "https" ? 443 : 80
        if let port = endpoint.port, port != defaultPort {
            hostHeader = "\(host):\(port)"
        } else {
            hostHeader = host
        }
        self.logger = logger
    }

    // MARK: ObjectStore

    public func get(_ key: String) async throws -> Data {
        try ObjectKey.validate(key)
        return try await request("GET", key: key).body
    }

    public func get(_ key: String, range: Range<Int64>) async throws -> Data {
        try ObjectKey.validate(key)
        guard range.lowerBound >= 0 else { throw StoreError.invalidArgument("negative range start") }
        if range.isEmpty { return Data() }
        do {
            let response = try await request("GET", key: key, headers: [("range", "bytes=\(range.lowerBound)-\(range.upperBound - 1)")])
            if response.status == 206 { return response.body }
            // A server that ignores ranges answers 200 with the whole object.
            let body = response.body
            let lower = Int(min(range.lowerBound, Int64(body.count)))
            let upper = Int(min(range.upperBound, Int64(body.count)))
            return body.subdata(in: lower..<upper)
        } catch StoreError.protocolError(let message) where message.hasPrefix("HTTP 416") {
            return Data()  // range starts at or past the end
        }
    }

    public func head(_ key: String) async throws -> ObjectInfo {
        try ObjectKey.validate(key)
        let response = try await request("HEAD", key: key)
        let size = Int64(response.header("content-length") ?? "") ?? 0
        let modified = response.header("last-modified").flatMap(S3XML.parseHTTPDate) ?? Date(timeIntervalSince1970: 0)
        return ObjectInfo(key: key, size: size, etag: response.header("etag") ?? "", lastModified: modified)
    }

    @discardableResult
    public func put(_ key: String, data: Data, condition: WriteCondition) async throws -> String {
        try ObjectKey.validate(key)
        if data.count >= configuration.multipartThreshold {
            return try await putMultipart(key, data: data, condition: condition)
        }
        var headers: [(String, String)] = [("content-type", "application/octet-stream")]
        headers += conditionHeaders(condition)
        do {
            let response = try await request("PUT", key: key, headers: headers, body: data)
            return response.header("etag") ?? ""
        } catch StoreError.conflict where condition == .ifAbsent {
            throw StoreError.alreadyExists(key)
        }
    }

    /// CopyObject onto itself with new metadata: the server rewrites the
    /// modification time without the bytes crossing the network. A copy can
    /// fail inside a 200 answer (the body then holds an `<Error>`).
    public func freshen(_ key: String) async throws {
        try ObjectKey.validate(key)
        let source = "/\(configuration.bucket)/" + SigV4Signer.encode(configuration.prefix + key, keepSlash: true)
        let response = try await request("PUT", key: key, headers: [
            ("content-type", "application/octet-stream"),
            ("x-amz-copy-source", source),
            ("x-amz-metadata-directive", "REPLACE"),
        ])
        let xml = S3XML(response.body)
        if let code = xml.first("Code") {
            throw StoreError.unavailable("freshen \(key): \(code): \(xml.first("Message") ?? "")")
        }
    }

    public func delete(_ key: String) async throws {
        try ObjectKey.validate(key)
        do {
            _ = try await request("DELETE", key: key)
        } catch StoreError.notFound {
            return
        }
    }

    public func list(prefix: String, startAfter: String?, continuationToken: String?, limit: Int) async throws -> ObjectListing {
        try ObjectKey.validatePrefix(prefix)
        guard limit > 0 else { throw StoreError.invalidArgument("listing limit must be positive") }
        var query: [(String, String)] = [
            ("list-type", "2"), ("max-keys", String(min(limit, 1000))),
            ("prefix", configuration.prefix + prefix),
        ]
        if let continuationToken {
            query.append(("continuation-token", continuationToken))
        } else if let startAfter {
            query.append(("start-after", configuration.prefix + startAfter))
        }
        let xml = S3XML(try await request("GET", key: nil, query: query).body)
        var objects: [ObjectInfo] = []
        for block in xml.blocks("Contents") {
            let fields = S3XML(Data(block.utf8))
            guard let fullKey = fields.first("Key"), fullKey.hasPrefix(configuration.prefix) else { continue }
            objects.append(ObjectInfo(
                key: String(fullKey.dropFirst(configuration.prefix.count)),
                size: Int64(fields.first("Size") ?? "") ?? 0,
                etag: fields.first("ETag") ?? "",
                lastModified: fields.first("LastModified").flatMap(S3XML.parseISO8601) ?? Date(timeIntervalSince1970: 0)))
        }
        let truncated = xml.first("IsTruncated") == "true"
        let next = truncated ? (xml.first("NextContinuationToken") ?? objects.last.map { $0.key }) : nil
        return ObjectListing(objects: objects, nextContinuationToken: next)
    }

    /// Creates the bucket (tests, `hearth store init`); an existing bucket we own is fine.
    public func createBucket() async throws {
        var body: Data? = nil
        if configuration.region != "us-east-1" {
            body = Data("<CreateBucketConfiguration><LocationConstraint>\(configuration.region)</LocationConstraint></CreateBucketConfiguration>".utf8)
        }
        do {
            _ = try await request("PUT", key: nil, bucketLevel: true, body: body)
        } catch StoreError.conflict {
            return  // BucketAlreadyOwnedByYou
        }
    }

    // MARK: multipart

    private func putMultipart(_ key: String, data: Data, condition: WriteCondition) async throws -> String {
        if condition == .ifAbsent, try await exists(key) { throw StoreError.alreadyExists(key) }
        let initiated = try await request("POST", key: key, query: [("uploads", "")],
                                          headers: [("content-type", "application/octet-stream")])
        guard let uploadID = S3XML(initiated.body).first("UploadId") else {
            throw StoreError.protocolError("CreateMultipartUpload answered without an UploadId")
        }
        do {
            var parts: [(Int, String)] = []
            var offset = 0
            var number = 1
            while offset < data.count {
                let end = min(offset + configuration.partSize, data.count)
                let response = try await request(
                    "PUT", key: key, query: [("partNumber", String(number)), ("uploadId", uploadID)],
                    body: data.subdata(in: offset..<end))
                guard let etag = response.header("etag") else {
                    throw StoreError.protocolError("UploadPart answered without an ETag")
                }
                parts.append((number, etag))
                offset = end
                number += 1
            }
            let manifest = "<CompleteMultipartUpload>"
                + parts.map { "<Part><PartNumber>\($0.0)</PartNumber><ETag>\(S3XML.escape($0.1))</ETag></Part>" }.joined()
                + "</CompleteMultipartUpload>"
            let completed = try await request("POST", key: key, query: [("uploadId", uploadID)],
                                              headers: conditionHeaders(condition), body: Data(manifest.utf8))
            // S3 may report a failed completion inside a 200 response.
            let xml = S3XML(completed.body)
            if let code = xml.first("Code") {
                throw StoreError.protocolError("CompleteMultipartUpload failed: \(code) \(xml.first("Message") ?? "")")
            }
            return xml.first("ETag") ?? completed.header("etag") ?? ""
        } catch {
            // Abort so the parts do not linger (and bill) forever; best effort.
            _ = try? await request("DELETE", key: key, query: [("uploadId", uploadID)])
            if case StoreError.conflict = error, condition == .ifAbsent { throw StoreError.alreadyExists(key) }
            throw error
        }
    }

    // MARK: requests

    private func conditionHeaders(_ condition: WriteCondition) -> [(String, String)] {
        switch condition {
        case .none: []
        case .ifAbsent: [("if-none-match", "*")]
        case .ifMatch(let etag): [("if-match", etag)]
        }
    }

    struct Response: Sendable {
        var status: Int
        var headers: [(String, String)]
        var body: Data

        func header(_ name: String) -> String? {
            headers.first { $0.0.lowercased() == name }?.1
        }
    }

    /// A failure worth another attempt; its text becomes the last cause.
    private struct TransientError: Error {
        var description: String
    }

    private func request(_ method: String, key: String?, bucketLevel: Bool = false, query: [(String, String)] = [],
                         headers: [(String, String)] = [], body: Data? = nil) async throws -> Response {
        let operation = "\(method) \(key ?? configuration.bucket)"
        return try await withRetries(configuration.retry, operation: operation, classify: { error in
            switch error {
            case let error as StoreError: .fail(error)
            case let error as TransientError: .retry(error.description)
            default: .retry(String(describing: error))
            }
        }) {
            try await attempt(method, key: key, query: query, headers: headers, body: body)
        }
    }

    /// One HTTP exchange, signed afresh (the signature covers the time).
    private func attempt(_ method: String, key: String?, query: [(String, String)], headers: [(String, String)],
                         body: Data?) async throws -> Response {
        var path = pathStyle ? "/\(configuration.bucket)" : ""
        if let key {
            path += "/" + SigV4Signer.encode(configuration.prefix + key, keepSlash: true)
        } else if path.isEmpty {
            path = "/"
        }
        let queryString = query.map { pair in
            pair.1.isEmpty && pair.0 == "uploads"
                ? "uploads" : "\(SigV4Signer.encode(pair.0, keepSlash: false))=\(SigV4Signer.encode(pair.1, keepSlash: false))"
        }.joined(separator: "&")
        let payload = body ?? Data()
        let payloadHash = SigV4Signer.hex(SHA256.hash(data: payload))
        var signed: [(String, String)] = [("host", hostHeader)]
        signed += headers.filter { $0.0.lowercased().hasPrefix("x-amz-") }
        let authHeaders = signer.sign(method: method, path: path, query: query, headers: signed, payloadHash: payloadHash)

        var request = HTTPClientRequest(url: "\(scheme)://\(hostHeader)\(path)\(queryString.isEmpty ? "" : "?" + queryString)")
        request.method = .init(rawValue: method)
        request.headers.add(name: "host", value: hostHeader)
        for (name, value) in headers where !name.lowercased().hasPrefix("x-amz-") { request.headers.add(name: name, value: value) }
        for (name, value) in signed where name != "host" { request.headers.add(name: name, value: value) }
        for (name, value) in authHeaders { request.headers.add(name: name, value: value) }
        if let body {
            request.headers.add(name: "content-length", value: String(body.count))
            request.body = .bytes(body)
        } else if method == "PUT" || method == "POST" {
            request.headers.add(name: "content-length", value: "0")
        }

        let timeout = configuration.retry.requestTimeout.components
        let response = try await Self.client.execute(
            request, timeout: .nanoseconds(timeout.seconds * 1_000_000_000 + timeout.attoseconds / 1_000_000_000))
        let expected = Int(response.headers.first(name: "content-length") ?? "")
        let buffer = try await response.body.collect(upTo: Int.max)
        let data = Data(buffer.readableBytesView)
        let status = Int(response.status.code)
        let responseHeaders = response.headers.map { ($0.name, $0.value) }
        if method != "HEAD", let expected, expected != data.count {
            throw TransientError(description: "response body truncated: \(data.count) of \(expected) bytes")
        }
        logger.trace("s3 request", metadata: ["method": "\(method)", "path": "\(path)", "status": "\(status)"])
        if (200..<300).contains(status) {
            return Response(status: status, headers: responseHeaders, body: data)
        }
        throw Self.error(status: status, body: data, what: key ?? configuration.bucket)
    }

    /// Maps a non-2xx answer to the store's errors; transient ones are retried.
    private static func error(status: Int, body: Data, what: String) -> any Error {
        let xml = S3XML(body)
        let code = xml.first("Code") ?? ""
        let message = xml.first("Message") ?? ""
        let detail = code.isEmpty ? "HTTP \(status)" : "HTTP \(status) \(code): \(message)"
        switch status {
        case 404 where code == "NoSuchBucket":
            return StoreError.notFound("bucket: \(message.isEmpty ? detail : message)")
        case 404: return StoreError.notFound(what)
        case 412: return StoreError.conflict(what)
        case 409 where code == "BucketAlreadyOwnedByYou" || code == "ConditionalRequestConflict":
            return StoreError.conflict(what)
        case 401, 403:
            if code == "RequestTimeTooSkewed" {
                return StoreError.authentication("the clock differs too much from the server's (\(message))")
            }
            return StoreError.authentication(code.isEmpty ? "HTTP \(status) for \(what)" : "\(code): \(message)")
        case 408, 429, 500...599: return TransientError(description: detail)
        case 503 where code == "SlowDown": return TransientError(description: detail)
        case 400 where code == "RequestTimeout": return TransientError(description: detail)
        case 416: return StoreError.protocolError(detail)
        default: return StoreError.protocolError("\(detail) for \(what)")
        }
    }

    static func isValidBucketName(_ name: String) -> Bool {
        guard (3...63).contains(name.count) else { return false }
        return name.allSatisfy { ($0.isASCII && ($0.isLowercase || $0.isNumber)) || $0 == "-" || $0 == "." }
    }
}
