/// The FUSE kernel protocol, as this project speaks it: opcodes, INIT flags and the
/// byte layouts of the messages we decode and encode.
///
/// Why not import the structs from `<linux/fuse.h>`: Debian ships protocol 7.38, the
/// kernel here speaks 7.45, and the 7.39+ pieces (passthrough, resend, the 64-byte
/// `fuse_init_out` with `max_stack_depth`) are exactly what Hearth needs. Encoding
/// by explicit little-endian offsets keeps C types out of the rest of the code and
/// makes every layout visible next to the code that uses it.
public enum FuseOpcode: UInt32, Sendable, CaseIterable {
    case lookup = 1, forget = 2, getattr = 3, setattr = 4, readlink = 5, symlink = 6
    case mknod = 8, mkdir = 9, unlink = 10, rmdir = 11, rename = 12, link = 13
    case open = 14, read = 15, write = 16, statfs = 17, release = 18, fsync = 20
    case setxattr = 21, getxattr = 22, listxattr = 23, removexattr = 24, flush = 25
    case `init` = 26, opendir = 27, readdir = 28, releasedir = 29, fsyncdir = 30
    case getlk = 31, setlk = 32, setlkw = 33, access = 34, create = 35, interrupt = 36
    case bmap = 37, destroy = 38, ioctl = 39, poll = 40, notifyReply = 41, batchForget = 42
    case fallocate = 43, readdirplus = 44, rename2 = 45, lseek = 46, copyFileRange = 47
    case setupMapping = 48, removeMapping = 49, syncfs = 50, tmpfile = 51
    /// 7.39
    case statx = 52
    /// 7.45
    case copyFileRange64 = 53

    /// A stable label for metrics.
    public var name: String { String(describing: self) }
}

/// INIT flags (`flags | flags2 << 32`). The 7.39+ bits are not in Debian's header.
public enum FuseInitFlag {
    public static let asyncRead: UInt64 = 1 << 0
    public static let posixLocks: UInt64 = 1 << 1
    public static let atomicOTrunc: UInt64 = 1 << 3
    public static let exportSupport: UInt64 = 1 << 4
    public static let bigWrites: UInt64 = 1 << 5
    public static let dontMask: UInt64 = 1 << 6
    public static let spliceWrite: UInt64 = 1 << 7
    public static let spliceMove: UInt64 = 1 << 8
    public static let spliceRead: UInt64 = 1 << 9
    public static let flockLocks: UInt64 = 1 << 10
    public static let autoInvalData: UInt64 = 1 << 12
    public static let doReaddirplus: UInt64 = 1 << 13
    public static let readdirplusAuto: UInt64 = 1 << 14
    public static let asyncDIO: UInt64 = 1 << 15
    public static let writebackCache: UInt64 = 1 << 16
    public static let parallelDirops: UInt64 = 1 << 18
    public static let handleKillpriv: UInt64 = 1 << 19
    public static let posixACL: UInt64 = 1 << 20
    public static let maxPages: UInt64 = 1 << 22
    public static let cacheSymlinks: UInt64 = 1 << 23
    public static let noOpendirSupport: UInt64 = 1 << 24
    public static let handleKillprivV2: UInt64 = 1 << 28
    public static let setxattrExt: UInt64 = 1 << 29
    public static let initExt: UInt64 = 1 << 30
    public static let securityCtx: UInt64 = 1 << 32
    public static let createSuppGroup: UInt64 = 1 << 34
    public static let hasExpireOnly: UInt64 = 1 << 35
    /// 7.39
    public static let directIOAllowMmap: UInt64 = 1 << 36
    /// 7.40: FOPEN_PASSTHROUGH and FUSE_DEV_IOC_BACKING_OPEN.
    public static let passthrough: UInt64 = 1 << 37
    public static let noExportSupport: UInt64 = 1 << 38
    /// 7.40: FUSE_NOTIFY_RESEND.
    public static let hasResend: UInt64 = 1 << 39
    public static let allowIdmap: UInt64 = 1 << 40
    public static let overIOUring: UInt64 = 1 << 41
    public static let requestTimeout: UInt64 = 1 << 42
}

/// `fuse_open_out.open_flags`.
public enum FuseOpenFlag {
    public static let directIO: UInt32 = 1 << 0
    public static let keepCache: UInt32 = 1 << 1
    public static let nonseekable: UInt32 = 1 << 2
    public static let cacheDir: UInt32 = 1 << 3
    public static let noFlush: UInt32 = 1 << 5
    public static let parallelDirectWrites: UInt32 = 1 << 6
    /// 7.40
    public static let passthrough: UInt32 = 1 << 7
}

/// `fuse_setattr_in.valid` bits.
public enum FuseSetattrValid {
    public static let mode: UInt32 = 1 << 0
    public static let uid: UInt32 = 1 << 1
    public static let gid: UInt32 = 1 << 2
    public static let size: UInt32 = 1 << 3
    public static let atime: UInt32 = 1 << 4
    public static let mtime: UInt32 = 1 << 5
    public static let fh: UInt32 = 1 << 6
    public static let atimeNow: UInt32 = 1 << 7
    public static let mtimeNow: UInt32 = 1 << 8
    public static let ctime: UInt32 = 1 << 10
    public static let killSuidgid: UInt32 = 1 << 11
}

/// `fuse_write_in.write_flags`.
public enum FuseWriteFlag {
    public static let cache: UInt32 = 1 << 0
    public static let lockOwner: UInt32 = 1 << 1
    /// HANDLE_KILLPRIV_V2: the writer lacks CAP_FSETID, drop setuid/setgid.
    public static let killSuidgid: UInt32 = 1 << 2
}

/// Unsolicited messages to the kernel (`fuse_out_header.error` carries the code).
public enum FuseNotifyCode: Int32, Sendable {
    case poll = 1, invalInode = 2, invalEntry = 3, store = 4, retrieve = 5, delete = 6
    /// 7.40: ask the kernel to resend every request still pending (session takeover).
    case resend = 7
    case incEpoch = 8, prune = 9
}

/// Sizes of fixed headers.
enum FuseLayout {
    static let inHeader = 40
    static let outHeader = 16
    static let attr = 88
    static let entryOut = 128
    static let attrOut = 104
    static let openOut = 16
    static let initOut = 64
    static let statfsOut = 80
    static let direntHeader = 24
}

/// Reads little-endian fields out of one request. Bounds-checked: a short request
/// throws EPROTO-style ``FuseError/protocolError`` instead of reading past the buffer.
public struct RequestReader {
    let base: UnsafeRawBufferPointer
    var offset: Int

    init(_ base: UnsafeRawBufferPointer, offset: Int = 0) {
        self.base = base
        self.offset = offset
    }

    var remaining: Int { base.count - offset }

    mutating func u32() throws -> UInt32 {
        guard remaining >= 4 else { throw FuseError.protocolError }
        defer { offset += 4 }
        return UInt32(littleEndian: base.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
    }

    mutating func u16() throws -> UInt16 {
        guard remaining >= 2 else { throw FuseError.protocolError }
        defer { offset += 2 }
        return UInt16(littleEndian: base.loadUnaligned(fromByteOffset: offset, as: UInt16.self))
    }

    mutating func u64() throws -> UInt64 {
        guard remaining >= 8 else { throw FuseError.protocolError }
        defer { offset += 8 }
        return UInt64(littleEndian: base.loadUnaligned(fromByteOffset: offset, as: UInt64.self))
    }

    mutating func skip(_ count: Int) throws {
        guard remaining >= count else { throw FuseError.protocolError }
        offset += count
    }

    /// A NUL-terminated name (file names, xattr names, symlink targets).
    mutating func cString() throws -> String {
        guard let end = base[offset...].firstIndex(of: 0) else { throw FuseError.protocolError }
        let string = String(decoding: UnsafeRawBufferPointer(rebasing: base[offset..<end]), as: UTF8.self)
        offset = end + 1
        return string
    }

    /// The next `count` bytes without copying (write payloads, xattr values).
    mutating func bytes(_ count: Int) throws -> UnsafeRawBufferPointer {
        guard count >= 0, remaining >= count else { throw FuseError.protocolError }
        defer { offset += count }
        return UnsafeRawBufferPointer(rebasing: base[offset..<offset + count])
    }
}

/// Builds one reply body; the session prepends the 16-byte header.
public struct ReplyWriter: Sendable {
    public private(set) var bytes: [UInt8] = []

    public init(capacity: Int = 128) {
        bytes.reserveCapacity(capacity)
    }

    public mutating func u16(_ v: UInt16) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    public mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    public mutating func i32(_ v: Int32) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    public mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    public mutating func append(_ raw: UnsafeRawBufferPointer) { bytes.append(contentsOf: raw) }
    public mutating func append(_ raw: [UInt8]) { bytes.append(contentsOf: raw) }
    public mutating func append(utf8 string: String) {
        var string = string
        string.withUTF8 { bytes.append(contentsOf: $0) }
    }
    public mutating func zeros(_ count: Int) { bytes.append(contentsOf: repeatElement(0, count: count)) }
    public var count: Int { bytes.count }
}
