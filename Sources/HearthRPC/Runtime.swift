import CGRPC

/// Initialises the gRPC C core exactly once per process. Never shut down:
/// servers and channels come and go, and grpc_shutdown racing a late
/// completion is a known source of crashes at exit.
public enum GRPCRuntime {
    private static let initialised: Bool = {
        grpc_init()
        return true
    }()

    static func ensureInitialised() {
        _ = initialised
    }

    /// The C core's version, for logs and GetPluginInfo manifests.
    public static var coreVersion: String {
        ensureInitialised()
        return String(cString: grpc_version_string())
    }
}

/// Bytes copied out of a grpc slice. Reads go through a pointer to the slice
/// (see shim.h: inline slices keep their bytes inside the struct).
func sliceBytes(_ slice: UnsafePointer<grpc_slice>) -> [UInt8] {
    let count = hearth_slice_length(slice)
    guard count > 0, let start = hearth_slice_bytes(slice) else { return [] }
    return Array(UnsafeBufferPointer(start: start, count: count))
}

func sliceString(_ slice: UnsafePointer<grpc_slice>) -> String {
    String(decoding: sliceBytes(slice), as: UTF8.self)
}

/// A new slice holding a copy of `bytes`; the caller unrefs it.
func makeSlice(_ bytes: [UInt8]) -> grpc_slice {
    bytes.withUnsafeBufferPointer { buffer in
        buffer.withMemoryRebound(to: CChar.self) {
            grpc_slice_from_copied_buffer($0.baseAddress, $0.count)
        }
    }
}

func makeSlice(_ text: String) -> grpc_slice {
    makeSlice(Array(text.utf8))
}

/// A byte buffer copying `bytes`; the caller destroys it after the send completes.
func makeByteBuffer(_ bytes: [UInt8]) -> UnsafeMutablePointer<grpc_byte_buffer> {
    bytes.withUnsafeBytes { raw in
        hearth_byte_buffer_copying(raw.baseAddress, raw.count)
    }
}

/// The bytes of a received buffer, or nil when the core cannot read it.
/// The buffer stays the caller's to destroy.
func readByteBuffer(_ buffer: UnsafeMutablePointer<grpc_byte_buffer>) -> [UInt8]? {
    let length = grpc_byte_buffer_length(buffer)
    if length == 0 { return [] }
    var result = [UInt8](repeating: 0, count: length)
    let copied = result.withUnsafeMutableBufferPointer {
        hearth_byte_buffer_copy_out(buffer, $0.baseAddress, length)
    }
    guard copied == length else { return nil }
    return result
}

/// A C core handle (channel, server, call) carried across threads.
/// Why unchecked: the grpc_* functions these handles are passed to are
/// thread-safe; who may free the handle, and when, is documented where each
/// one is stored.
struct CoreHandle: @unchecked Sendable {
    let raw: OpaquePointer
}
