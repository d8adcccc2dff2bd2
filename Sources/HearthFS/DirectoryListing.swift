import HearthFUSE
import Synchronization

/// What one directory handle lists: the directory's entries as they were at OPENDIR.
///
/// The handle keeps a copy-on-write snapshot of the directory's children map, which
/// copies nothing, and READDIR turns it into entries as it asks for them, straight
/// into its reply. A listing built as an array at OPENDIR was one large allocation
/// (10,000 entries: ~0.5 MB) on a FUSE worker; the first such allocation after a
/// burst of small frees made glibc's malloc sort every chunk freed meanwhile
/// (`malloc_consolidate`, then the unsorted bin): 4–6 ms of OPENDIR in the first
/// `find` after 10,000 creates, most of Hearth's share of that row (docs/fuse.md).
///
/// A change to the directory while a handle is open copies the live map once (the
/// snapshot keeps the old storage), which is what building the array cost before.
///
/// Offsets (the kernel's cookies): "." is 1, ".." 2, then one per child in the
/// snapshot's iteration order, which never changes since the snapshot is never
/// mutated. An entry whose type cannot be told any more (its node is gone) is
/// skipped and keeps its offset.
final class DirectoryListing: Sendable {
    typealias Children = [String: ChildEntry]

    let ino: UInt64
    let parent: UInt64
    /// The directory's own `d_type`, for "." and "..".
    let type: UInt32
    private let children: Children

    /// Where the last READDIR stopped (`offset`: the cookie before the child at
    /// `index`) and where it started: a READDIR continues at one of the two, or
    /// between them when the caller took fewer entries than the reply held.
    private struct Cursor: Sendable {
        var offset: UInt64
        var index: Children.Index
        var batchOffset: UInt64
        var batchIndex: Children.Index
    }

    private let cursor: Mutex<Cursor>

    /// Snapshots `dir` (namespace lock held).
    init(_ dir: Inode) {
        ino = dir.ino
        parent = dir.parents.first ?? 1
        type = dir.direntType
        children = dir.children ?? [:]
        cursor = Mutex(Cursor(offset: 2, index: children.startIndex, batchOffset: 2, batchIndex: children.startIndex))
    }

    /// Calls `add` with each entry after cookie `offset`, in order, until it returns
    /// false or the entries run out. `typeOf` tells the `d_type` of a child whose
    /// entry does not (not a regular file), or nil if the child is gone.
    func entries(after offset: UInt64, typeOf: (ChildEntry) -> UInt32?, _ add: (DirectoryEntry) -> Bool) {
        if offset < 1, !add(DirectoryEntry(name: ".", ino: ino, type: type, nextOffset: 1)) { return }
        if offset < 2, !add(DirectoryEntry(name: "..", ino: parent, type: type, nextOffset: 2)) { return }
        cursor.withLock { c in
            let start = max(offset, 2)
            // The nearest known position at or before `start`, then a walk.
            var (at, index) = c.offset <= start ? (c.offset, c.index)
                : c.batchOffset <= start ? (c.batchOffset, c.batchIndex) : (2, children.startIndex)
            while at < start, index != children.endIndex {
                children.formIndex(after: &index)
                at += 1
            }
            c.batchOffset = at
            c.batchIndex = index
            while index != children.endIndex {
                let (name, child) = children[index]
                if let type = child.knownType ?? typeOf(child),
                   !add(DirectoryEntry(name: name, ino: child.ino, type: type, nextOffset: at + 1)) { break }
                children.formIndex(after: &index)
                at += 1
            }
            c.offset = at
            c.index = index
        }
    }
}
