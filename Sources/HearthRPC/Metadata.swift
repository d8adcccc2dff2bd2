import CGRPC

/// Call metadata: ordered key/value pairs as gRPC carries them. Keys ending in
/// `-bin` carry arbitrary bytes (the core base64-encodes them on the wire);
/// other values must be printable ASCII.
public struct RPCMetadata: Sendable, Equatable, ExpressibleByDictionaryLiteral {
    public private(set) var entries: [(key: String, value: [UInt8])] = []

    public init() {}

    public init(dictionaryLiteral elements: (String, String)...) {
        for (k, v) in elements { add(k, v) }
    }

    public mutating func add(_ key: String, _ value: String) {
        entries.append((key.lowercased(), Array(value.utf8)))
    }

    public mutating func add(_ key: String, bytes: [UInt8]) {
        entries.append((key.lowercased(), bytes))
    }

    /// The first value under `key`, as text.
    public subscript(_ key: String) -> String? {
        let k = key.lowercased()
        return entries.first { $0.key == k }.map { String(decoding: $0.value, as: UTF8.self) }
    }

    /// The first value under `key`, as bytes (for `-bin` keys).
    public func bytes(_ key: String) -> [UInt8]? {
        let k = key.lowercased()
        return entries.first { $0.key == k }?.value
    }

    public var isEmpty: Bool { entries.isEmpty }

    public static func == (a: RPCMetadata, b: RPCMetadata) -> Bool {
        a.entries.count == b.entries.count
            && zip(a.entries, b.entries).allSatisfy { $0.key == $1.key && $0.value == $1.value }
    }

    /// Rejects what the core would refuse mid-call (an illegal key, or a
    /// non-binary value with bytes outside printable ASCII), with a message.
    func validate() throws(RPCError) {
        for (key, value) in entries {
            let k = makeSlice(key)
            defer { grpc_slice_unref(k) }
            guard !key.isEmpty, grpc_header_key_is_legal(k) != 0 else {
                throw RPCError(.invalidArgument, "metadata key \"\(key)\" is not a legal header name")
            }
            if !key.hasSuffix("-bin") {
                let v = makeSlice(value)
                defer { grpc_slice_unref(v) }
                guard grpc_header_nonbin_value_is_legal(v) != 0 else {
                    throw RPCError(.invalidArgument, "metadata value for \"\(key)\" must be printable ASCII (use a -bin key for bytes)")
                }
            }
        }
    }

    /// Reads a metadata array the core filled in.
    init(_ array: UnsafePointer<grpc_metadata_array>) {
        let count = array.pointee.count
        guard count > 0, let md = array.pointee.metadata else { return }
        for i in 0..<count {
            let element = UnsafePointer(md + i)
            let key = sliceString(hearth_metadata_key(element))
            let value = sliceBytes(hearth_metadata_value(element))
            entries.append((key, value))
        }
    }
}

/// Metadata laid out as a C array for one send op. Owns its slices; release
/// it only after the batch that sent it has completed.
final class CMetadata {
    let pointer: UnsafeMutablePointer<grpc_metadata>?
    let count: Int

    init(_ metadata: RPCMetadata) {
        count = metadata.entries.count
        guard count > 0 else { pointer = nil; return }
        let p = UnsafeMutablePointer<grpc_metadata>.allocate(capacity: count)
        for (i, entry) in metadata.entries.enumerated() {
            var element = grpc_metadata()
            element.key = makeSlice(entry.key)
            element.value = makeSlice(entry.value)
            (p + i).initialize(to: element)
        }
        pointer = p
    }

    deinit {
        guard let p = pointer else { return }
        for i in 0..<count {
            grpc_slice_unref(p[i].key)
            grpc_slice_unref(p[i].value)
        }
        p.deinitialize(count: count)
        p.deallocate()
    }
}
