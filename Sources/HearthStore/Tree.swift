import Foundation

/// The kind of a directory entry; raw values are part of the tree format.
public enum EntryKind: UInt8, Sendable, Hashable, CaseIterable {
    case file = 1, directory = 2, symlink = 3, fifo = 4, socket = 5, charDevice = 6, blockDevice = 7
}

/// One name in a directory, carrying everything `stat(2)` reports so the FUSE layer
/// can answer `getattr` and `readdir` from the tree alone.
public struct TreeEntry: Sendable, Hashable {
    public var name: String
    public var kind: EntryKind
    /// Permission bits (and setuid/setgid/sticky), without the file-type bits.
    public var mode: UInt32
    public var uid: UInt32
    public var gid: UInt32
    /// Device number for character and block devices.
    public var rdev: UInt64
    /// Bytes for files (equals the manifest's size), target length for symlinks.
    public var size: Int64
    /// Times in nanoseconds since the epoch.
    public var atimeNs: Int64
    public var mtimeNs: Int64
    public var ctimeNs: Int64
    /// Hard links share one inode number (and the same child hash).
    public var inode: UInt64
    public var nlink: UInt32
    public var symlinkTarget: String?
    /// Extended attributes, name → value, kept sorted by name in the encoding.
    public var xattrs: [String: Data]
    /// Manifest hash for files, tree hash for directories, nil otherwise.
    public var child: ContentHash?

    public init(name: String, kind: EntryKind, mode: UInt32 = 0o644, uid: UInt32 = 0, gid: UInt32 = 0, rdev: UInt64 = 0,
                size: Int64 = 0, atimeNs: Int64 = 0, mtimeNs: Int64 = 0, ctimeNs: Int64 = 0, inode: UInt64 = 0,
                nlink: UInt32 = 1, symlinkTarget: String? = nil, xattrs: [String: Data] = [:], child: ContentHash? = nil) {
        self.name = name
        self.kind = kind
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.rdev = rdev
        self.size = size
        self.atimeNs = atimeNs
        self.mtimeNs = mtimeNs
        self.ctimeNs = ctimeNs
        self.inode = inode
        self.nlink = nlink
        self.symlinkTarget = symlinkTarget
        self.xattrs = xattrs
        self.child = child
    }

    /// A name is one path component: 1...255 bytes, no `/` or NUL, not `.` or `..`.
    public static func validateName(_ name: String) throws {
        let count = name.utf8.count
        guard (1...255).contains(count), name != ".", name != "..",
              !name.utf8.contains(UInt8(ascii: "/")), !name.utf8.contains(0) else {
            throw StoreError.invalidArgument("invalid file name \(name.debugDescription)")
        }
    }
}

/// An immutable directory: entries sorted by name (bytewise), each name once.
///
/// Trees are content-addressed, so an unchanged subdirectory keeps its hash and a
/// commit re-uploads only the trees on the path from a change to the root.
public struct Tree: Sendable, Hashable {
    public private(set) var entries: [TreeEntry]

    /// Sorts `entries` and rejects duplicate or invalid names.
    public init(entries: [TreeEntry]) throws {
        for entry in entries {
            try TreeEntry.validateName(entry.name)
            if (entry.kind == .file || entry.kind == .directory) != (entry.child != nil) {
                throw StoreError.invalidArgument("entry \(entry.name.debugDescription): only files and directories have a child hash")
            }
        }
        let sorted = entries.sorted { $0.name.utf8.lexicographicallyPrecedes($1.name.utf8) }
        for (a, b) in zip(sorted, sorted.dropFirst()) where a.name == b.name {
            throw StoreError.invalidArgument("duplicate name \(a.name.debugDescription) in directory")
        }
        self.entries = sorted
    }

    public static let empty = try! Tree(entries: [])

    /// Binary search by name.
    public func entry(named name: String) -> TreeEntry? {
        var low = 0, high = entries.count
        while low < high {
            let mid = (low + high) / 2
            let candidate = entries[mid].name
            if candidate == name { return entries[mid] }
            if candidate.utf8.lexicographicallyPrecedes(name.utf8) { low = mid + 1 } else { high = mid }
        }
        return nil
    }

    private static let magic = "HTR"
    private static let version: UInt8 = 1
    private static let maxTarget = 4096
    private static let maxXattrName = 255
    private static let maxXattrValue = 64 << 10

    public func encoded() -> Data {
        var w = BinaryWriter(capacity: 16 + entries.count * 96)
        w.bytes(Self.magic.utf8)
        w.u8(Self.version)
        w.varint(entries.count)
        for e in entries {
            w.lengthPrefixed(e.name.utf8)
            w.u8(e.kind.rawValue)
            w.varint(UInt64(e.mode))
            w.varint(UInt64(e.uid))
            w.varint(UInt64(e.gid))
            w.varint(e.rdev)
            w.signed(e.size)
            w.signed(e.atimeNs)
            w.signed(e.mtimeNs)
            w.signed(e.ctimeNs)
            w.varint(e.inode)
            w.varint(UInt64(e.nlink))
            w.lengthPrefixed((e.symlinkTarget ?? "").utf8)
            let xattrs = e.xattrs.sorted { $0.key.utf8.lexicographicallyPrecedes($1.key.utf8) }
            w.varint(xattrs.count)
            for (name, value) in xattrs {
                w.lengthPrefixed(name.utf8)
                w.lengthPrefixed(value)
            }
            if let child = e.child {
                w.u8(1)
                w.hash(child)
            } else {
                w.u8(0)
            }
        }
        return w.data
    }

    /// Decodes and validates (order, names, kinds, bounds); never traps on bad input.
    public static func decode(_ data: Data, key: String = "tree") throws -> Tree {
        var r = BinaryReader(data, key: key)
        try r.expectMagic(magic, version: version)
        // Every entry takes at least 17 bytes, which bounds the count by the input.
        let count = try r.bounded(UInt64(r.remaining / 17), "entry count")
        var entries: [TreeEntry] = []
        entries.reserveCapacity(count)
        for _ in 0..<count {
            guard let name = String(validating: try r.lengthPrefixed(max: 255, "name"), as: UTF8.self) else {
                throw r.fail("name is not UTF-8")
            }
            guard let kind = EntryKind(rawValue: try r.u8()) else { throw r.fail("unknown entry kind") }
            let mode = try r.bounded(UInt64(UInt32.max), "mode")
            let uid = try r.bounded(UInt64(UInt32.max), "uid")
            let gid = try r.bounded(UInt64(UInt32.max), "gid")
            let rdev = try r.varint()
            let size = try r.signed()
            guard size >= 0 else { throw r.fail("negative size") }
            let atime = try r.signed(), mtime = try r.signed(), ctime = try r.signed()
            let inode = try r.varint()
            let nlink = try r.bounded(UInt64(UInt32.max), "nlink")
            let targetBytes = try r.lengthPrefixed(max: maxTarget, "symlink target")
            guard let target = String(validating: targetBytes, as: UTF8.self) else { throw r.fail("symlink target is not UTF-8") }
            let xattrCount = try r.bounded(UInt64(r.remaining / 2), "xattr count")
            var xattrs: [String: Data] = [:]
            for _ in 0..<xattrCount {
                guard let xname = String(validating: try r.lengthPrefixed(max: maxXattrName, "xattr name"), as: UTF8.self) else {
                    throw r.fail("xattr name is not UTF-8")
                }
                xattrs[xname] = Data(try r.lengthPrefixed(max: maxXattrValue, "xattr value"))
            }
            let hasChild = try r.u8()
            guard hasChild <= 1 else { throw r.fail("bad child flag") }
            let child = hasChild == 1 ? try r.hash() : nil
            entries.append(TreeEntry(
                name: name, kind: kind, mode: UInt32(mode), uid: UInt32(uid), gid: UInt32(gid), rdev: rdev, size: size,
                atimeNs: atime, mtimeNs: mtime, ctimeNs: ctime, inode: inode, nlink: UInt32(nlink),
                symlinkTarget: kind == .symlink ? target : (target.isEmpty ? nil : target), xattrs: xattrs, child: child))
        }
        guard r.isAtEnd else { throw r.fail("trailing bytes") }
        for (a, b) in zip(entries, entries.dropFirst()) where !a.name.utf8.lexicographicallyPrecedes(b.name.utf8) {
            throw StoreError.corrupt(key: key, reason: "entries not strictly sorted at \(b.name.debugDescription)")
        }
        do {
            return try Tree(entries: entries)
        } catch StoreError.invalidArgument(let reason) {
            throw StoreError.corrupt(key: key, reason: reason)
        }
    }
}
