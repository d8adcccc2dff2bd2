#if canImport(Glibc)
import Glibc
#endif

/// A failed operation, carried to the kernel as a negative errno. One type so that
/// every layer below the session maps its failures to errno in one place
/// (``FuseError/init(errno:)``), and the session never guesses.
public struct FuseError: Error, Sendable, Equatable, CustomStringConvertible {
    public let errno: Int32

    public init(errno: Int32) { self.errno = errno }

    public static let notFound = FuseError(errno: ENOENT)
    public static let exists = FuseError(errno: EEXIST)
    public static let notDirectory = FuseError(errno: ENOTDIR)
    public static let isDirectory = FuseError(errno: EISDIR)
    public static let notEmpty = FuseError(errno: ENOTEMPTY)
    public static let invalid = FuseError(errno: EINVAL)
    public static let io = FuseError(errno: EIO)
    public static let noSpace = FuseError(errno: ENOSPC)
    public static let notSupported = FuseError(errno: ENOSYS)
    public static let noData = FuseError(errno: ENODATA)
    public static let range = FuseError(errno: ERANGE)
    public static let badHandle = FuseError(errno: EBADF)
    public static let permission = FuseError(errno: EPERM)
    public static let readOnly = FuseError(errno: EROFS)
    public static let nameTooLong = FuseError(errno: ENAMETOOLONG)
    public static let noDevice = FuseError(errno: ENXIO)
    public static let protocolError = FuseError(errno: EPROTO)

    public var description: String { String(cString: strerror(errno)) }
}

/// What `stat(2)` reports for one node. `mode` includes the file-type bits.
public struct FileAttributes: Sendable, Hashable, Codable {
    public var ino: UInt64
    public var size: UInt64
    public var blocks: UInt64
    public var atimeNs: Int64
    public var mtimeNs: Int64
    public var ctimeNs: Int64
    public var mode: UInt32
    public var nlink: UInt32
    public var uid: UInt32
    public var gid: UInt32
    public var rdev: UInt32

    public init(ino: UInt64, size: UInt64, blocks: UInt64, atimeNs: Int64, mtimeNs: Int64, ctimeNs: Int64,
                mode: UInt32, nlink: UInt32, uid: UInt32, gid: UInt32, rdev: UInt32) {
        self.ino = ino
        self.size = size
        self.blocks = blocks
        self.atimeNs = atimeNs
        self.mtimeNs = mtimeNs
        self.ctimeNs = ctimeNs
        self.mode = mode
        self.nlink = nlink
        self.uid = uid
        self.gid = gid
        self.rdev = rdev
    }

    /// `fuse_attr`, 88 bytes.
    func encode(into w: inout ReplyWriter) {
        func split(_ ns: Int64) -> (UInt64, UInt32) {
            let s = ns >= 0 ? ns / 1_000_000_000 : (ns - 999_999_999) / 1_000_000_000
            return (UInt64(bitPattern: s), UInt32(ns - s * 1_000_000_000))
        }
        let a = split(atimeNs), m = split(mtimeNs), c = split(ctimeNs)
        w.u64(ino); w.u64(size); w.u64(blocks)
        w.u64(a.0); w.u64(m.0); w.u64(c.0)
        w.u32(a.1); w.u32(m.1); w.u32(c.1)
        w.u32(mode); w.u32(nlink); w.u32(uid); w.u32(gid); w.u32(rdev)
        w.u32(4096)  // blksize
        w.u32(0)  // flags
    }
}

/// A node handed to the kernel (lookup, create, mkdir…): its id, its attributes and
/// how long the kernel may cache the name and the attributes.
public struct EntryReply: Sendable {
    public var attributes: FileAttributes
    public var generation: UInt64
    public var entryTimeoutNs: UInt64
    public var attrTimeoutNs: UInt64

    public init(attributes: FileAttributes, generation: UInt64 = 0, entryTimeoutNs: UInt64, attrTimeoutNs: UInt64) {
        self.attributes = attributes
        self.generation = generation
        self.entryTimeoutNs = entryTimeoutNs
        self.attrTimeoutNs = attrTimeoutNs
    }

    /// `fuse_entry_out`, 128 bytes. A nodeid of 0 is a negative entry.
    func encode(into w: inout ReplyWriter) {
        w.u64(attributes.ino)
        w.u64(generation)
        w.u64(entryTimeoutNs / 1_000_000_000); w.u64(attrTimeoutNs / 1_000_000_000)
        w.u32(UInt32(entryTimeoutNs % 1_000_000_000)); w.u32(UInt32(attrTimeoutNs % 1_000_000_000))
        attributes.encode(into: &w)
    }
}

/// The answer to open/opendir/create: the handle and the FOPEN_* flags.
public struct OpenReply: Sendable {
    public var handle: UInt64
    public var flags: UInt32
    /// FUSE_DEV_IOC_BACKING_OPEN id when `flags` has ``FuseOpenFlag/passthrough``.
    public var backingID: Int32

    public init(handle: UInt64, flags: UInt32 = 0, backingID: Int32 = 0) {
        self.handle = handle
        self.flags = flags
        self.backingID = backingID
    }

    func encode(into w: inout ReplyWriter) {
        w.u64(handle); w.u32(flags); w.i32(backingID)
    }
}

/// What changes in a setattr; nil fields stay as they are.
public struct SetAttributes: Sendable {
    public var mode: UInt32?
    public var uid: UInt32?
    public var gid: UInt32?
    public var size: UInt64?
    public var atimeNs: Int64?
    public var mtimeNs: Int64?
    public var ctimeNs: Int64?
    public var handle: UInt64?
    /// The kernel asks to drop setuid/setgid (FATTR_KILL_SUIDGID).
    public var killSuidgid = false

    public init() {}
}

/// `statfs(2)` numbers, in `blockSize` units.
public struct StatfsReply: Sendable {
    public var blocks: UInt64
    public var blocksFree: UInt64
    public var blocksAvailable: UInt64
    public var files: UInt64
    public var filesFree: UInt64
    public var blockSize: UInt32
    public var nameMax: UInt32

    public init(blocks: UInt64, blocksFree: UInt64, blocksAvailable: UInt64, files: UInt64, filesFree: UInt64,
                blockSize: UInt32 = 4096, nameMax: UInt32 = 255) {
        self.blocks = blocks
        self.blocksFree = blocksFree
        self.blocksAvailable = blocksAvailable
        self.files = files
        self.filesFree = filesFree
        self.blockSize = blockSize
        self.nameMax = nameMax
    }
}

/// One directory entry for readdir / readdirplus.
public struct DirectoryEntry: Sendable {
    public var name: String
    public var ino: UInt64
    /// `d_type` (DT_REG, DT_DIR…), i.e. `mode >> 12`.
    public var type: UInt32
    /// The cookie the kernel passes back to continue after this entry.
    public var nextOffset: UInt64

    public init(name: String, ino: UInt64, type: UInt32, nextOffset: UInt64) {
        self.name = name
        self.ino = ino
        self.type = type
        self.nextOffset = nextOffset
    }

    /// Stores this entry as a `fuse_dirent` (ino, off, namelen, type, name, zero
    /// padding to 8 bytes) at `offset` of `buffer`. Returns the offset after it, or
    /// nil when it would end past `limit`.
    func storeDirent(into buffer: UnsafeMutableRawBufferPointer, at offset: Int, limit: Int) -> Int? {
        var name = name
        return name.withUTF8 { utf8 -> Int? in
            let length = (FuseLayout.direntHeader + utf8.count + 7) & ~7
            guard offset + length <= min(limit, buffer.count), let base = buffer.baseAddress else { return nil }
            let p = base + offset
            p.storeBytes(of: ino.littleEndian, toByteOffset: 0, as: UInt64.self)
            p.storeBytes(of: nextOffset.littleEndian, toByteOffset: 8, as: UInt64.self)
            p.storeBytes(of: UInt32(utf8.count).littleEndian, toByteOffset: 16, as: UInt32.self)
            p.storeBytes(of: type.littleEndian, toByteOffset: 20, as: UInt32.self)
            let tail = p + FuseLayout.direntHeader
            if let name = utf8.baseAddress { tail.copyMemory(from: name, byteCount: utf8.count) }
            (tail + utf8.count).initializeMemory(as: UInt8.self, repeating: 0,
                                                 count: length - FuseLayout.direntHeader - utf8.count)
            return offset + length
        }
    }
}

/// Who is asking: the calling process's credentials, for ownership of new nodes.
public struct RequestContext: Sendable {
    public var unique: UInt64
    public var uid: UInt32
    public var gid: UInt32
    public var pid: UInt32

    public init(unique: UInt64, uid: UInt32, gid: UInt32, pid: UInt32) {
        self.unique = unique
        self.uid = uid
        self.gid = gid
        self.pid = pid
    }
}
