import AsyncHTTPClient
import Foundation
import NIOCore
import NIOSSL

/// Just enough of the Kubernetes REST API for the extender's fallback: read a PVC
/// and its PV to find a statically provisioned volume's CSI handle. Two GETs do not
/// justify a Kubernetes client library; they need the in-cluster service account
/// (token and CA at the standard paths) and `KUBERNETES_SERVICE_HOST/PORT`.
///
/// The token is re-read on every request: projected service account tokens rotate
/// (hourly by default) and the kubelet rewrites the file in place.
public final class KubernetesClient: Sendable {
    public static let serviceAccountDirectory = "/var/run/secrets/kubernetes.io/serviceaccount"

    private let baseURL: String
    private let token: @Sendable () throws -> String?
    private let client: HTTPClient
    private let ownsClient: Bool

    /// A client for `baseURL` (e.g. a test server); `token` may return nil for none.
    public init(baseURL: String, client: HTTPClient = .shared, token: @escaping @Sendable () throws -> String? = { nil }) {
        self.baseURL = baseURL.hasSuffix("/") ? String(baseURL.dropLast()) : baseURL
        self.token = token
        self.client = client
        self.ownsClient = false
    }

    private init(baseURL: String, client: HTTPClient, token: @escaping @Sendable () throws -> String?, ownsClient: Bool) {
        self.baseURL = baseURL
        self.token = token
        self.client = client
        self.ownsClient = ownsClient
    }

    /// The in-cluster client, or nil outside a cluster (no `KUBERNETES_SERVICE_HOST`).
    public static func inCluster(environment: [String: String] = ProcessInfo.processInfo.environment,
                                 directory: String = serviceAccountDirectory) throws -> KubernetesClient? {
        guard let host = environment["KUBERNETES_SERVICE_HOST"], !host.isEmpty else { return nil }
        let port = environment["KUBERNETES_SERVICE_PORT"] ?? "443"
        let hostPart = host.contains(":") ? "[\(host)]" : host  // IPv6 service addresses
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.trustRoots = .file(directory + "/ca.crt")
        var configuration = HTTPClient.Configuration(tlsConfiguration: tls)
        configuration.timeout = .init(connect: .seconds(5), read: .seconds(10))
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        let tokenPath = directory + "/token"
        return KubernetesClient(baseURL: "https://\(hostPart):\(port)", client: client, token: {
            try String(contentsOfFile: tokenPath, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        }, ownsClient: true)
    }

    /// Closes the connection pool of an in-cluster client.
    public func shutdown() async throws {
        if ownsClient { try await client.shutdown() }
    }

    /// The CSI volume handle of the PV bound to `namespace/claim`, when that PV
    /// belongs to `driver`; nil when the claim is absent, unbound or another driver's.
    public func csiVolumeHandle(namespace: String, claim: String, driver: String) async throws -> String? {
        struct Claim: Decodable { struct Spec: Decodable { var volumeName: String? }; var spec: Spec? }
        struct Volume: Decodable {
            struct Spec: Decodable { struct CSI: Decodable { var driver: String; var volumeHandle: String }; var csi: CSI? }
            var spec: Spec?
        }
        guard let claimData = try await get("/api/v1/namespaces/\(Self.escape(namespace))/persistentvolumeclaims/\(Self.escape(claim))"),
              let pvName = try JSONDecoder().decode(Claim.self, from: claimData).spec?.volumeName, !pvName.isEmpty,
              let pvData = try await get("/api/v1/persistentvolumes/\(Self.escape(pvName))"),
              let csi = try JSONDecoder().decode(Volume.self, from: pvData).spec?.csi, csi.driver == driver
        else { return nil }
        return csi.volumeHandle
    }

    /// GETs `path`; nil on 404, the body on 200, an error otherwise.
    public func get(_ path: String) async throws -> Data? {
        var request = HTTPClientRequest(url: baseURL + path)
        request.headers.add(name: "Accept", value: "application/json")
        if let token = try token() { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        let response = try await client.execute(request, timeout: .seconds(10))
        let body = try await response.body.collect(upTo: 4 << 20)
        switch response.status.code {
        case 200: return Data(body.readableBytesView)
        case 404: return nil
        default:
            throw KubernetesError(status: Int(response.status.code), path: path, message: String(buffer: body))
        }
    }

    /// POSTs a JSON object to `path` (creating it); an error unless 2xx.
    public func post(_ path: String, json body: Data) async throws {
        var request = HTTPClientRequest(url: baseURL + path)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.headers.add(name: "Accept", value: "application/json")
        if let token = try token() { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        request.body = .bytes(ByteBuffer(bytes: body))
        let response = try await client.execute(request, timeout: .seconds(10))
        let answer = try await response.body.collect(upTo: 1 << 20)
        guard (200..<300).contains(response.status.code) else {
            throw KubernetesError(status: Int(response.status.code), path: path, message: String(buffer: answer))
        }
    }

    /// Path segments are Kubernetes names (no `/`), but never trust that.
    public static func escape(_ segment: String) -> String {
        segment.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(CharacterSet(charactersIn: "-._"))) ?? segment
    }
}

/// A Kubernetes API answer other than 200 or 404.
public struct KubernetesError: Error, Sendable, CustomStringConvertible {
    public var status: Int
    public var path: String
    public var message: String

    public var description: String { "Kubernetes API GET \(path): \(status) \(message.prefix(200))" }
}
