import Synchronization

extension S3Credentials {
    /// The key names a Kubernetes Secret named by a StorageClass may use, in the
    /// order they are looked up: the CSI-style names, the names of Hearth's own
    /// `hearth-s3-credentials` Secret, then those of the AWS environment
    /// variables and shared-credentials file, so an existing Secret can be
    /// reused as it is.
    static let secretKeyNames = (
        id: ["accessKeyID", "access-key-id", "AWS_ACCESS_KEY_ID", "aws_access_key_id"],
        secret: ["secretAccessKey", "secret-access-key", "AWS_SECRET_ACCESS_KEY", "aws_secret_access_key"],
        token: ["sessionToken", "session-token", "AWS_SESSION_TOKEN", "aws_session_token"])

    /// Credentials carried by a CSI request's `secrets`; nil when it carries
    /// none. Other keys are ignored (a Secret may hold more than Hearth needs).
    /// Half a key pair is refused, naming the key that is missing and never a value.
    public static func fromSecrets(_ secrets: [String: String]) throws -> S3Credentials? {
        func value(_ names: [String]) -> String? {
            names.lazy.compactMap { secrets[$0] }.first { !$0.isEmpty }
        }
        let names = secretKeyNames
        let id = value(names.id), secret = value(names.secret), token = value(names.token)
        switch (id, secret) {
        case let (id?, secret?):
            return S3Credentials(accessKeyID: id, secretAccessKey: secret, sessionToken: token)
        case (nil, nil):
            guard token == nil else {
                throw StoreError.invalidArgument("the request's secrets carry a session token but no accessKeyID / secretAccessKey")
            }
            return nil
        case (nil, _):
            throw StoreError.invalidArgument("the request's secrets carry secretAccessKey but no accessKeyID")
        case (_, nil):
            throw StoreError.invalidArgument("the request's secrets carry accessKeyID but no secretAccessKey")
        }
    }

    /// The variables a `hearth mount` daemon reads its credentials from: the
    /// environment, because a command line is visible to every user in `ps`.
    public var environment: [String: String] {
        var variables = ["AWS_ACCESS_KEY_ID": accessKeyID, "AWS_SECRET_ACCESS_KEY": secretAccessKey]
        if let sessionToken { variables["AWS_SESSION_TOKEN"] = sessionToken }
        return variables
    }
}

/// The store as seen by one CSI request. A StorageClass may name Secrets
/// (provisioner, controller-publish, node-stage, expand, snapshotter) whose
/// S3 keys then sign every request made for its volumes, instead of the keys
/// the plugin was started with; requests without secrets use the plugin's own.
///
/// Stores opened for a key pair are kept (bounded) so a busy StorageClass does
/// not pay for a new signer on every call. A directory store has no keys:
/// secrets are ignored there.
public final class CredentialScopedStores: Sendable {
    /// The store opened with the plugin's own credentials.
    public let base: any ObjectStore
    private let reopen: (@Sendable (S3Credentials) throws -> any ObjectStore)?
    private let opened = Mutex<[S3Credentials: any ObjectStore]>([:])
    private static let keep = 64

    /// - Parameter reopen: opens the same bucket and prefix with other keys;
    ///   nil for stores that take no credentials.
    public init(base: any ObjectStore, reopen: (@Sendable (S3Credentials) throws -> any ObjectStore)? = nil) {
        self.base = base
        self.reopen = reopen
    }

    /// The store a request with `secrets` works on.
    public func store(secrets: [String: String]) throws -> any ObjectStore {
        guard let reopen, let credentials = try S3Credentials.fromSecrets(secrets) else { return base }
        if let store = opened.withLock({ $0[credentials] }) { return store }
        let store = try reopen(credentials)
        opened.withLock {
            if $0.count >= Self.keep { $0.removeAll() }  // rotated keys do not pile up
            $0[credentials] = store
        }
        return store
    }

    /// Whether requests' secrets change anything (false for a directory store).
    public var usesCredentials: Bool { reopen != nil }
}
