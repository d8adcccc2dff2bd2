import Foundation

/// One content-addressed object on its way to ``ObjectStore/putContents(_:)``.
public struct ContentObject: Sendable {
    public var key: String
    public var data: Data

    public init(key: String, data: Data) {
        self.key = key
        self.data = data
    }
}

/// Content objects gathered for one store call, each name once.
///
/// A burst of small files commits two tiny objects per file; stored one call each,
/// the directory backend paid a thread hop per object, and identical files (lock
/// files, generated stubs) sent the same object again and again.
/// The batch keeps each name once and says when it has grown enough to send, so
/// the bytes it holds stay bounded.
public struct ContentBatch: Sendable {
    public private(set) var objects: [ContentObject] = []
    public private(set) var bytes = 0
    private var keys: Set<String> = []

    public static let maxObjects = 256
    public static let maxBytes = 8 << 20

    public init() {}

    /// Adds the object unless the batch has it already; returns whether it did.
    @discardableResult
    public mutating func add(_ kind: ObjectKind, _ data: Data, hash: ContentHash) -> Bool {
        let key = kind.key(hash)
        guard keys.insert(key).inserted else { return false }
        objects.append(ContentObject(key: key, data: data))
        bytes += data.count
        return true
    }

    public var isEmpty: Bool { objects.isEmpty }

    /// Time to send it: past either bound.
    public var isFull: Bool { objects.count >= Self.maxObjects || bytes >= Self.maxBytes }
}

extension ContentStore {
    /// Stores every object of the batch (durable after the next flush, as ``put(_:_:hash:)``).
    public func put(_ batch: ContentBatch) async throws {
        guard !batch.isEmpty else { return }
        try await objects.putContents(batch.objects)
    }
}
