import Foundation
import HearthCache
import HearthFUSE
import HearthStore

#if canImport(Glibc)
import Glibc
#endif

/// One file, directory or other node of the volume, as the daemon knows it.
///
/// The kernel's node id *is* the store's inode number (``TreeEntry/inode``), so hard
/// links are one node, ids are stable across remounts and a successor daemon can
/// rebuild the table from ``InodeRecord``s without renumbering anything the kernel
/// holds. Guarded by ``VolumeFileSystem``'s namespace lock; never touched without it.
/// A directory's entry for one name: the child's node id, and whether it is a regular
/// file in the one bit node ids leave free (they are below 2^63). Listing a directory
/// then loads no `Inode` for its files, only for its other entries (a cache miss each:
/// most of OPENDIR's time for 10,000 files), and the map still takes 8 bytes per
/// entry, which counts with a million files.
struct ChildEntry: Hashable, Sendable {
    private let raw: UInt64
    private static let regularBit: UInt64 = 1 << 63

    init(ino: UInt64, regularFile: Bool) {
        precondition(ino & Self.regularBit == 0, "node ids stay below 2^63")
        raw = ino | (regularFile ? Self.regularBit : 0)
    }

    var ino: UInt64 { raw & ~Self.regularBit }
    /// `d_type` when the entry alone tells it (DT_REG), else nil: ask the child.
    var knownType: UInt32? { raw & Self.regularBit != 0 ? UInt32(S_IFREG >> 12) : nil }
}

final class Inode {
    // Stored fields are laid out in declaration order: small ones are grouped so
    // that padding does not grow every node.
    //
    // 120 bytes with the object header, so malloc gives each node a 128-byte chunk
    // (136 bytes took 144): what is the same for almost every node (one parent,
    // one link, size equal to the committed size) is implied here and stored in
    // `extra` only when it differs.
    let ino: UInt64
    /// The first of ``parents`` (0: none); the directories of further hard links
    /// are in `extra`.
    private var firstParent: UInt64
    /// Permission bits (bits 0-11), ``kind`` (bits 12-14), ``treeDirty`` (bit 15).
    private var packed: UInt32
    var uid: UInt32
    var gid: UInt32
    /// ``lookups`` in 32 bits (a full word cost 8 bytes per node). Saturates: a
    /// count of 4 billion kernel references never drops the node, the safe side.
    private var lookupCount: UInt32 = 0
    /// ``size``; see ``committedSize`` for why the setter is not trivial.
    private var storedSize: Int64
    var atimeNs: Int64
    var mtimeNs: Int64
    var ctimeNs: Int64
    /// ``child``, with the all-zero hash (never a tree or manifest) for nil: an
    /// optional would cost a padded word per node.
    private var childHash: ContentHash

    /// Directories containing a link to this node (one per link; a directory has one).
    var parents: ParentList {
        get { ParentList(head: firstParent, tail: extra?.moreParents ?? []) }
        set {
            firstParent = newValue.head
            if extra != nil || !newValue.tail.isEmpty { ensureExtra.moreParents = newValue.tail }
        }
    }
    /// Permission bits (and setuid/setgid/sticky).
    var mode: UInt32 {
        get { packed & 0o7777 }
        set { packed = packed & ~0o7777 | newValue & 0o7777 }
    }
    var kind: EntryKind {
        get { EntryKind(rawValue: UInt8(truncatingIfNeeded: packed >> 12 & 7)) ?? .file }
        set { packed = packed & ~(7 << 12) | UInt32(newValue.rawValue & 7) << 12 }
    }
    /// Directories: must be re-serialised at the next commit.
    var treeDirty: Bool {
        get { packed & 1 << 15 != 0 }
        set { packed = newValue ? packed | 1 << 15 : packed & ~(1 << 15) }
    }
    /// Links; 1 for almost every node, so stored (out of line) only otherwise.
    var nlink: UInt32 {
        get { extra?.nlink ?? 1 }
        set { if extra != nil || newValue != 1 { ensureExtra.nlink = newValue } }
    }

    var size: Int64 {
        get { storedSize }
        set {
            // Pin the committed size before it stops being implied by `size`.
            if newValue != storedSize, extra?.committedSize == nil { ensureExtra.committedSize = storedSize }
            storedSize = newValue
        }
    }
    /// The size recorded in the committed manifest (tree entries must match it).
    /// Equal to ``size`` for every clean file, so it is stored (out of line) only
    /// while the two differ.
    var committedSize: Int64 {
        get { extra?.committedSize ?? storedSize }
        set {
            if newValue == storedSize {
                if extra != nil { extra?.committedSize = nil }
            } else {
                ensureExtra.committedSize = newValue
            }
        }
    }
    /// Kernel references (lookup, create…, minus forget).
    var lookups: UInt64 {
        get { UInt64(lookupCount) }
        set { lookupCount = UInt32(clamping: newValue) }
    }
    /// Directories: name → ino once loaded from the tree; nil means "not in memory".
    /// Out of line (files, the vast majority, never have children); `_modify`
    /// mutates the dictionary in place, where get-then-set would copy it on every
    /// insert.
    var children: [String: ChildEntry]? {
        get { extra?.children }
        set { if extra != nil || newValue != nil { ensureExtra.children = newValue } }
        _modify { yield &ensureExtra.children }
    }

    /// Last committed content: manifest (files) or tree (directories) hash. Nil for
    /// a node created since the last commit.
    var child: ContentHash? {
        get { childHash == .zero ? nil : childHash }
        set { childHash = newValue ?? .zero }
    }
    /// What most nodes never need (open state, data files, symlink target, xattrs),
    /// out of line: a volume of a million clean files keeps a million `Inode`s while
    /// the kernel references them, so every word here counts (see docs/fuse.md).
    private var extra: Extra?

    private final class Extra {
        var moreParents: [UInt64] = []
        var nlink: UInt32 = 1
        var children: [String: ChildEntry]?
        var committedSize: Int64?
        var rdev: UInt64 = 0
        var symlinkTarget: String?
        var xattrs: [String: [UInt8]] = [:]
        var opens = 0
        var cachedOpens = 0
        var committing = 0
        var manifest: Manifest?
        var clean: CacheFile?
        var work: CacheFile?
        var passthrough: PassthroughState?
    }

    private var ensureExtra: Extra {
        if let extra { return extra }
        let made = Extra()
        extra = made
        return made
    }

    var rdev: UInt64 {
        get { extra?.rdev ?? 0 }
        set { if extra != nil || newValue != 0 { ensureExtra.rdev = newValue } }
    }
    var symlinkTarget: String? {
        get { extra?.symlinkTarget }
        set { if extra != nil || newValue != nil { ensureExtra.symlinkTarget = newValue } }
    }
    var xattrs: [String: [UInt8]] {
        get { extra?.xattrs ?? [:] }
        set { if extra != nil || !newValue.isEmpty { ensureExtra.xattrs = newValue } }
    }
    /// Open handles.
    var opens: Int {
        get { extra?.opens ?? 0 }
        set { if extra != nil || newValue != 0 { ensureExtra.opens = newValue } }
    }
    /// Commits in flight that took this file's dirty state: its working copy holds
    /// bytes the store does not have yet and must not be retired meanwhile.
    var committing: Int {
        get { extra?.committing ?? 0 }
        set { if extra != nil || newValue != 0 { ensureExtra.committing = newValue } }
    }
    /// Files: the committed manifest, loaded on open.
    var manifest: Manifest? {
        get { extra?.manifest }
        set { if extra != nil || newValue != nil { ensureExtra.manifest = newValue } }
    }
    /// Files: the clean cache file of `child` while open.
    var clean: CacheFile? {
        get { extra?.clean }
        set { if extra != nil || newValue != nil { ensureExtra.clean = newValue } }
    }
    /// Files: the working copy once written; holds dirty data until committed.
    var work: CacheFile? {
        get { extra?.work }
        set { if extra != nil || newValue != nil { ensureExtra.work = newValue } }
    }

    /// Files: the backing file the kernel does this node's I/O on, while any open of
    /// it is a passthrough open (see ``PassthroughState``).
    var passthrough: PassthroughState? {
        get { extra?.passthrough }
        set { if extra != nil || newValue != nil { ensureExtra.passthrough = newValue } }
    }
    /// Opens answered without passthrough (page-cache I/O through the daemon): while
    /// any is open, the kernel refuses passthrough opens of this inode.
    var cachedOpens: Int {
        get { extra?.cachedOpens ?? 0 }
        set { if extra != nil || newValue != 0 { ensureExtra.cachedOpens = newValue } }
    }

    init(ino: UInt64, entry: TreeEntry, parent: UInt64) {
        self.ino = ino
        firstParent = parent
        packed = entry.mode & 0o7777 | UInt32(entry.kind.rawValue & 7) << 12
        uid = entry.uid
        gid = entry.gid
        storedSize = entry.size
        atimeNs = entry.atimeNs
        mtimeNs = entry.mtimeNs
        ctimeNs = entry.ctimeNs
        childHash = entry.child ?? .zero
        nlink = max(1, entry.nlink)
        rdev = entry.rdev
        symlinkTarget = entry.symlinkTarget
        if !entry.xattrs.isEmpty { xattrs = entry.xattrs.mapValues { Array($0) } }
    }

    var fileType: UInt32 {
        switch kind {
        case .file: UInt32(S_IFREG)
        case .directory: UInt32(S_IFDIR)
        case .symlink: UInt32(S_IFLNK)
        case .fifo: UInt32(S_IFIFO)
        case .socket: UInt32(S_IFSOCK)
        case .charDevice: UInt32(S_IFCHR)
        case .blockDevice: UInt32(S_IFBLK)
        }
    }

    var attributes: FileAttributes {
        let bytes = UInt64(max(0, size))
        return FileAttributes(ino: ino, size: bytes, blocks: (bytes + 511) / 512, atimeNs: atimeNs, mtimeNs: mtimeNs,
                              ctimeNs: ctimeNs, mode: fileType | mode,
                              // Directories report 1: "unknown", which stops find(1)'s leaf optimisation.
                              nlink: kind == .directory ? 1 : nlink, uid: uid, gid: gid, rdev: UInt32(truncatingIfNeeded: rdev))
    }

    /// The tree entry this node commits as under `name`.
    func treeEntry(name: String) -> TreeEntry {
        TreeEntry(name: name, kind: kind, mode: mode, uid: uid, gid: gid, rdev: rdev,
                  size: kind == .file ? committedSize : (kind == .symlink ? Int64(symlinkTarget?.utf8.count ?? 0) : 0),
                  atimeNs: atimeNs, mtimeNs: mtimeNs, ctimeNs: ctimeNs, inode: ino, nlink: kind == .directory ? 1 : nlink,
                  symlinkTarget: symlinkTarget, xattrs: xattrs.mapValues { Data($0) }, child: child)
    }

    static func kind(fromMode mode: UInt32) -> EntryKind? {
        switch mode & UInt32(S_IFMT) {
        case UInt32(S_IFREG), 0: .file
        case UInt32(S_IFDIR): .directory
        case UInt32(S_IFLNK): .symlink
        case UInt32(S_IFIFO): .fifo
        case UInt32(S_IFSOCK): .socket
        case UInt32(S_IFCHR): .charDevice
        case UInt32(S_IFBLK): .blockDevice
        default: nil
        }
    }

    /// `d_type` for readdir.
    var direntType: UInt32 { fileType >> 12 }

    /// This node as its directory's entry names it.
    var asChild: ChildEntry { ChildEntry(ino: ino, regularFile: fileType == UInt32(S_IFREG)) }

    /// A serialisable image of this node for a successor daemon (issue 8 takeover).
    var record: InodeRecord {
        InodeRecord(ino: ino, parents: Array(parents), entry: treeEntry(name: "x"), size: size, lookups: lookups,
                    loadedChildren: children?.mapValues(\.ino), treeDirty: treeDirty, workingCopy: work?.path)
    }
}

/// What a successor daemon needs to rebuild one node: the kernel still holds
/// `lookups` references to `ino`, and dirty data lives in `workingCopy`.
public struct InodeRecord: Sendable, Codable {
    public var ino: UInt64
    public var parents: [UInt64]
    public var kind: UInt8
    public var mode: UInt32
    public var uid: UInt32
    public var gid: UInt32
    public var size: Int64
    public var committedSize: Int64
    public var times: [Int64]
    public var nlink: UInt32
    public var symlinkTarget: String?
    public var child: String?
    public var lookups: UInt64
    public var loadedChildren: [String: UInt64]?
    public var treeDirty: Bool
    public var workingCopy: String?

    init(ino: UInt64, parents: [UInt64], entry: TreeEntry, size: Int64, lookups: UInt64,
         loadedChildren: [String: UInt64]?, treeDirty: Bool, workingCopy: String?) {
        self.ino = ino
        self.parents = parents
        kind = entry.kind.rawValue
        mode = entry.mode
        uid = entry.uid
        gid = entry.gid
        self.size = size
        committedSize = entry.size
        times = [entry.atimeNs, entry.mtimeNs, entry.ctimeNs]
        nlink = entry.nlink
        symlinkTarget = entry.symlinkTarget
        child = entry.child?.hex
        self.lookups = lookups
        self.loadedChildren = loadedChildren
        self.treeDirty = treeDirty
        self.workingCopy = workingCopy
    }
}

/// The directories linking to a node: one inline (every node but hard links), more
/// in an array that stays unallocated while empty. A plain `[UInt64]` cost a heap
/// allocation per node.
struct ParentList: RandomAccessCollection, MutableCollection, RangeReplaceableCollection, ExpressibleByArrayLiteral {
    /// 0 (never a node id) when empty.
    private(set) var head: UInt64 = 0
    /// Never non-empty while `head` is 0.
    private(set) var tail: [UInt64] = []
    private var hasHead: Bool { head != 0 }

    init() {}

    /// A list as ``Inode`` stores it (a root's parent 0 means none).
    init(head: UInt64, tail: [UInt64]) {
        self.init()
        if head == 0 {
            append(contentsOf: tail)
        } else {
            self.head = head
            self.tail = tail
        }
    }

    init(arrayLiteral elements: UInt64...) {
        self.init()
        append(contentsOf: elements)
    }

    var startIndex: Int { 0 }
    var endIndex: Int { (hasHead ? 1 : 0) + tail.count }

    subscript(position: Int) -> UInt64 {
        get { position == 0 && hasHead ? head : tail[position - 1] }
        set {
            if position == 0 && hasHead { head = newValue } else { tail[position - 1] = newValue }
        }
    }

    mutating func replaceSubrange<C: Collection>(_ subrange: Range<Int>, with newElements: C) where C.Element == UInt64 {
        var all = Array(self)
        all.replaceSubrange(subrange, with: newElements)
        all.removeAll { $0 == 0 }  // the root's "parent"
        head = all.first ?? 0
        tail = all.count > 1 ? Array(all.dropFirst()) : []
    }
}
