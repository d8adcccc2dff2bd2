import Foundation
import HearthCache
import HearthFUSE
import HearthStore

#if canImport(Glibc)
import Glibc
#endif

/// How one volume is served.
public struct VolumeConfiguration: Sendable {
    public var volumeID: String
    /// Quota: writes that would grow the volume past it fail with ENOSPC.
    public var capacityBytes: Int64
    public var readOnly = false
    /// Dirty files are committed at least this often (and on close and fsync).
    public var commitInterval: Duration = .seconds(5)
    /// How long the kernel trusts names and attributes without asking. The daemon is
    /// its volume's only writer (read-only mounts serve a fixed root), and every
    /// change made through the mount reaches the kernel in the reply that made it, so
    /// nothing goes stale behind the kernel's back; peers over shared buckets keep
    /// 1 s because other writers change their namespace. 10 s saves the LOOKUP and
    /// GETATTR of each re-stat of a file touched a second ago (a build, the
    /// create+stat+unlink benchmark).
    public var entryTimeoutNs: UInt64 = 10_000_000_000
    public var attrTimeoutNs: UInt64 = 10_000_000_000
    /// Above this many nodes in memory, directories nobody uses are unloaded.
    public var maxCachedInodes = 200_000
    /// Chunks fetched ahead of a sequential reader.
    public var readaheadChunks = 4
    /// Serve extended attributes (see ``SessionOptions/xattrs`` for why it is off).
    public var xattrs = false
    public var chunkSize = Manifest.defaultChunkSize
    /// Parallel chunk uploads per commit.
    public var uploadParallelism = 8
    /// Hand files whose bytes are all local to the kernel (FUSE passthrough) when the
    /// session negotiated it.
    public var passthrough = false
    /// Write opens get passthrough only while the volume has at least this much quota
    /// left: the daemon never sees passthrough writes, so it cannot answer ENOSPC.
    public var passthroughWriteHeadroom: Int64 = 1 << 30

    public init(volumeID: String, capacityBytes: Int64) {
        self.volumeID = volumeID
        self.capacityBytes = capacityBytes
    }
}

/// One volume served over FUSE: a lazily loaded namespace over the volume's root
/// tree, file bytes in the node cache, and write-back commits to the store.
///
/// Concurrency: every namespace field is guarded by `lock` and only held for
/// in-memory work; store I/O (tree and chunk fetches, uploads) happens with the lock
/// released, on the calling FUSE worker thread through ``blocking(_:)``. File bytes are
/// read and written with pread/pwrite on cache files outside the lock. So many
/// processes creating, writing and deleting in one directory contend only for short
/// critical sections, and no lock is ever held across a wait for the store.
public final class VolumeFileSystem: FileSystemHandler, @unchecked Sendable {
    // @unchecked: all mutable state below is guarded by `lock` (see the type comment);
    // the `let` references are to Sendable or internally synchronised objects.
    public let content: ContentStore
    public let heads: VolumeHeads
    public let cache: NodeCache
    public let config: VolumeConfiguration
    let lock = NSLock()

    var nodes: [UInt64: Inode] = [:]
    var dirtyFiles = Set<UInt64>()
    var dirtyDirs = Set<UInt64>()
    var fileHandles: [UInt64: FileHandle] = [:]
    var dirHandles: [UInt64: DirectoryListing] = [:]
    var nextHandle: UInt64 = 1
    var head: (head: VolumeHead, etag: String)
    /// Sum of the sizes of linked files (what the quota limits).
    var usedBytes: Int64
    /// The quota now: starts as `config.capacityBytes`, changed by ``reconfigure(capacityBytes:commitInterval:)``
    /// (NodeExpandVolume → SIGHUP) while mounted.
    var capacityBytes: Int64
    var writeback: Writeback!
    /// Set by ``attach(backingFiles:)``; passthrough needs the session's registry.
    var backingFiles: BackingFiles?
    /// INIT granted passthrough, it is configured, and registering has not failed
    /// for good (EPERM).
    var passthroughActive = false
    /// Files with a passthrough open on their working copy: the kernel writes them.
    var passthroughWriters = Set<UInt64>()
    var passthroughStats = PassthroughStats()
    /// Working copies waiting to go back to the node cache (see ``CacheRelease``).
    var cacheReleases: [CacheRelease] = []
    /// The takeover journal (see ``Journal``); nil unless the daemon has an fd keeper.
    var journalLog: Journal?
    /// This daemon took a live session over: handles it never issued may arrive.
    var restoredSession = false
    /// The kernel has dropped the connection and ``shutdown()`` has taken every
    /// passthrough writer's bytes: nothing can write through a backing file any more.
    var sessionOver = false

    struct FileHandle {
        var ino: UInt64
        var lastEnd: UInt64 = 0
        var mode = OpenMode.cached
        var writing = false
    }

    /// Opens the volume at its current head. Leftover working copies of a crashed
    /// daemon are discarded (what was fsynced is in the store), unless this daemon
    /// takes the crashed one's session over (`keepWorkingCopies`): then they hold
    /// what the applications wrote and ``restore(journalAt:)`` adopts them.
    public static func open(_ objects: any ObjectStore, cache: NodeCache, config: VolumeConfiguration,
                            keepWorkingCopies: Bool = false) async throws -> VolumeFileSystem {
        let heads = VolumeHeads(objects)
        let head = try await heads.read(config.volumeID)
        if !keepWorkingCopies { cache.clearWorkingCopies(volume: config.volumeID) }
        return VolumeFileSystem(content: ContentStore(objects), heads: heads, cache: cache, config: config, head: head)
    }

    init(content: ContentStore, heads: VolumeHeads, cache: NodeCache, config: VolumeConfiguration,
         head: (head: VolumeHead, etag: String)) {
        self.content = content
        self.heads = heads
        self.cache = cache
        self.config = config
        self.head = head
        self.usedBytes = head.head.logicalBytes
        self.capacityBytes = config.capacityBytes
        let now = nowNs()
        let root = Inode(ino: 1, entry: TreeEntry(name: "root", kind: .directory, mode: 0o755, atimeNs: now, mtimeNs: now,
                                                  ctimeNs: now, child: head.head.rootHash), parent: 0)
        root.parents = []
        root.lookups = 1
        nodes[1] = root
        writeback = Writeback(fs: self)
    }

    /// Starts the periodic committer.
    public func start() { writeback.start() }

    /// Commits everything dirty and stops the committer, once the session has ended
    /// (the kernel dropped the connection).
    ///
    /// Ending the connection aborts the requests the daemon had not read yet
    /// (fuse_conn_destroy), RELEASEs included: a passthrough writer closed just
    /// before the unmount may never be seen closing. So its working copy is taken
    /// whole here, whatever its mtime says, and afterwards every committed working
    /// copy becomes the clean cache copy its last close would have made it, so a
    /// restarted daemon reads those bytes locally (and in passthrough) instead of
    /// fetching them again.
    ///
    /// Later looks at the writers are no-ops (`sessionOver`): SIGTERM's early commit
    /// (MountCommand) runs on a thread of its own, and when a loaded machine started
    /// that thread late, its look re-marked such a file dirty after the final commit
    /// had taken it, so the file was not retired and the restarted daemon found no
    /// cached copy of bytes it had just written.
    public func shutdown() throws {
        lock.withLock {
            refreshPassthroughWriters(take: .now)
            sessionOver = true
        }
        defer { retireWorkingCopiesAfterSession() }
        try writeback.stop()
    }

    /// Commits everything now, passthrough writes included, and waits until it is
    /// durable (a snapshot's commit request).
    public func commit() throws {
        lock.withLock { refreshPassthroughWriters(take: .now) }
        try writeback.commitAndWait()
    }

    /// Applies a changed volume record while mounted (the daemon re-reads it on
    /// SIGHUP): the new capacity bounds writes and shows in statfs at once; a new
    /// commit interval takes effect from the next wait of the committer.
    public func reconfigure(capacityBytes: Int64, commitInterval: Duration?) {
        lock.withLock { self.capacityBytes = capacityBytes }
        if let commitInterval { writeback.setInterval(commitInterval) }
    }

    /// The quota in force (bytes).
    public var currentCapacity: Int64 { lock.withLock { capacityBytes } }

    /// Counters for metrics.
    public var generation: UInt64 { lock.withLock { head.head.generation } }
    public var inodeCount: Int { lock.withLock { nodes.count } }

    // MARK: helpers (lock held)

    func node(_ ino: UInt64) throws -> Inode {
        guard let node = nodes[ino] else { throw FuseError.notFound }
        return node
    }

    func entry(_ node: Inode) -> EntryReply {
        node.lookups += 1
        if node.passthrough?.writable == true { refreshFromBacking(node, force: false) }
        return EntryReply(attributes: node.attributes, entryTimeoutNs: config.entryTimeoutNs, attrTimeoutNs: config.attrTimeoutNs)
    }

    /// Marks the directories holding `node` (and their ancestors) for re-serialisation.
    func markParentsDirty(_ node: Inode) {
        for parent in node.parents { markTreeDirty(parent) }
    }

    func markTreeDirty(_ ino: UInt64) {
        var current: UInt64? = ino
        while let id = current, let dir = nodes[id], !dir.treeDirty {
            dir.treeDirty = true
            dirtyDirs.insert(id)
            current = dir.parents.first
        }
    }

    func markFileDirty(_ node: Inode) {
        dirtyFiles.insert(node.ino)
        markParentsDirty(node)
    }

    /// A new node id: random 62-bit, so ids never collide with those of other
    /// versions of the volume that a kernel or a snapshot may still hold.
    func newIno() -> UInt64 {
        while true {
            let ino = UInt64.random(in: 2..<(1 << 62))
            if nodes[ino] == nil { return ino }
        }
    }

    /// Stable id for tree entries written without an inode number (imports).
    static func derivedIno(parent: UInt64, name: String) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in withUnsafeBytes(of: parent.littleEndian, Array.init) + Array(name.utf8) {
            hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3
        }
        return (hash & ((1 << 62) - 1)) | (1 << 62)
    }

    /// Removes a node nobody can reach any more (unlinked, forgotten, closed).
    func dropIfUnreachable(_ node: Inode) {
        guard node.nlink == 0 || node.parents.isEmpty, node.lookups == 0, node.opens == 0, node.ino != 1 else { return }
        nodes[node.ino] = nil
        dirtyFiles.remove(node.ino)
        dirtyDirs.remove(node.ino)
        if let clean = node.clean { cache.close(clean) }
        node.clean = nil
        if let work = node.work {
            node.work = nil
            // Its copy may be emptied under the name the journal gave it (see
            // `retireWorkingCopy`): a successor must not adopt it for this node.
            journalNode(node)
            releaseLater(.close(work))
        }
    }

    func newNode(_ ctx: RequestContext, kind: EntryKind, mode: UInt32, umask: UInt32, parent: Inode, rdev: UInt64 = 0,
                 target: String? = nil) -> Inode {
        let now = nowNs()
        let gid = parent.mode & UInt32(S_ISGID) != 0 ? parent.gid : ctx.gid
        var perms = mode & ~umask & 0o7777
        if kind == .directory && parent.mode & UInt32(S_ISGID) != 0 { perms |= UInt32(S_ISGID) }
        let entry = TreeEntry(name: "new", kind: kind, mode: perms, uid: ctx.uid, gid: gid, rdev: rdev,
                              size: Int64(target?.utf8.count ?? 0), atimeNs: now, mtimeNs: now, ctimeNs: now,
                              symlinkTarget: target)
        let node = Inode(ino: newIno(), entry: entry, parent: parent.ino)
        node.child = nil
        node.committedSize = 0
        if kind == .directory {
            node.children = [:]
        }
        return node
    }

    /// Runs `body` on a directory with its children loaded, loading them from the
    /// store first (outside the lock) if needed.
    func withDirectory<T>(_ ino: UInt64, _ body: (Inode) throws -> T) throws -> T {
        while true {
            lock.lock()
            guard let dir = nodes[ino] else {
                lock.unlock()
                throw FuseError.notFound
            }
            guard dir.kind == .directory else {
                lock.unlock()
                throw FuseError.notDirectory
            }
            if dir.children != nil {
                defer { lock.unlock() }
                return try body(dir)
            }
            let hash = dir.child
            lock.unlock()
            let content = self.content
            let tree = try hash.map { hash in
                do { return try blocking { try await content.tree(hash) } } catch { throw fuseError(error) }
            } ?? Tree.empty
            lock.withLock {
                if dir.children == nil, nodes[ino] === dir { install(tree, into: dir) }
            }
        }
    }

    private func install(_ tree: Tree, into dir: Inode) {
        var children: [String: ChildEntry] = [:]
        children.reserveCapacity(tree.entries.count)
        for entry in tree.entries {
            // Node ids stay below 2^63 (ChildEntry); a tree from elsewhere may not.
            let ino = entry.inode > 1 && entry.inode < 1 << 63 ? entry.inode : Self.derivedIno(parent: dir.ino, name: entry.name)
            let node: Inode
            if let existing = nodes[ino] {
                if !existing.parents.contains(dir.ino) { existing.parents.append(dir.ino) }
                node = existing
            } else {
                node = Inode(ino: ino, entry: entry, parent: dir.ino)
                nodes[ino] = node
            }
            children[entry.name] = node.asChild
        }
        dir.children = children
    }

    func checkWritable() throws {
        if config.readOnly { throw FuseError.readOnly }
    }

    // MARK: namespace operations

    public func lookup(_ ctx: RequestContext, parent: UInt64, name: String) throws -> EntryReply {
        guard name.utf8.count <= 255 else { throw FuseError.nameTooLong }
        return try withDirectory(parent) { dir in
            guard let ino = dir.children?[name]?.ino, let node = nodes[ino] else {
                // A negative entry: the kernel caches "absent" for the entry timeout.
                // Safe because this daemon is the volume's only writer.
                return EntryReply(attributes: FileAttributes(ino: 0, size: 0, blocks: 0, atimeNs: 0, mtimeNs: 0, ctimeNs: 0,
                                                             mode: 0, nlink: 0, uid: 0, gid: 0, rdev: 0),
                                  entryTimeoutNs: config.entryTimeoutNs, attrTimeoutNs: 0)
            }
            journal(.entry(parent, name, ino))
            return entry(node)
        }
    }

    public func forget(node ino: UInt64, count: UInt64) {
        lock.withLock {
            guard let node = nodes[ino] else { return }
            node.lookups -= min(count, node.lookups)
            dropIfUnreachable(node)
        }
    }

    public func getattr(_ ctx: RequestContext, node ino: UInt64, handle: UInt64?) throws -> (FileAttributes, UInt64) {
        try lock.withLock {
            let node = try node(ino)
            // The kernel wrote a passthrough file without telling us: its size and
            // times are the backing file's.
            if node.passthrough?.writable == true { refreshFromBacking(node, force: false) }
            return (node.attributes, config.attrTimeoutNs)
        }
    }

    public func setattr(_ ctx: RequestContext, node ino: UInt64, _ changes: SetAttributes) throws -> (FileAttributes, UInt64) {
        try checkWritable()
        if let size = changes.size { try truncate(ino, to: Int64(size)) }
        return try lock.withLock {
            let node = try node(ino)
            if let mode = changes.mode { node.mode = mode & 0o7777 }
            if let uid = changes.uid { node.uid = uid }
            if let gid = changes.gid { node.gid = gid }
            if changes.killSuidgid { node.mode &= ~UInt32(S_ISUID | S_ISGID) }
            if let atime = changes.atimeNs { node.atimeNs = atime }
            if let mtime = changes.mtimeNs { node.mtimeNs = mtime }
            node.ctimeNs = changes.ctimeNs ?? nowNs()
            markParentsDirty(node)
            journalNode(node)
            return (node.attributes, config.attrTimeoutNs)
        }
    }

    public func readlink(_ ctx: RequestContext, node ino: UInt64) throws -> String {
        try lock.withLock {
            guard let target = try node(ino).symlinkTarget else { throw FuseError.invalid }
            return target
        }
    }

    private func add(_ ctx: RequestContext, parent: UInt64, name: String, make: (Inode) throws -> Inode) throws -> EntryReply {
        try checkWritable()
        guard name.utf8.count <= 255 else { throw FuseError.nameTooLong }
        return try withDirectory(parent) { dir in
            guard dir.nlink > 0 else { throw FuseError.notFound }
            guard dir.children?[name] == nil else { throw FuseError.exists }
            let node = try make(dir)
            nodes[node.ino] = node
            dir.children?[name] = node.asChild
            dir.mtimeNs = node.ctimeNs
            dir.ctimeNs = node.ctimeNs
            markTreeDirty(dir.ino)
            if node.kind == .directory { markTreeDirty(node.ino) } else { markFileDirty(node) }
            journalNode(node)
            journal(.entry(dir.ino, name, node.ino))
            return entry(node)
        }
    }

    public func mknod(_ ctx: RequestContext, parent: UInt64, name: String, mode: UInt32, rdev: UInt32, umask: UInt32) throws -> EntryReply {
        guard let kind = Inode.kind(fromMode: mode), kind != .directory, kind != .symlink else { throw FuseError.invalid }
        return try add(ctx, parent: parent, name: name) { newNode(ctx, kind: kind, mode: mode, umask: umask, parent: $0, rdev: UInt64(rdev)) }
    }

    public func mkdir(_ ctx: RequestContext, parent: UInt64, name: String, mode: UInt32, umask: UInt32) throws -> EntryReply {
        try add(ctx, parent: parent, name: name) { newNode(ctx, kind: .directory, mode: mode, umask: umask, parent: $0) }
    }

    public func symlink(_ ctx: RequestContext, parent: UInt64, name: String, target: String) throws -> EntryReply {
        guard target.utf8.count <= 4096 else { throw FuseError.nameTooLong }
        return try add(ctx, parent: parent, name: name) { newNode(ctx, kind: .symlink, mode: 0o777, umask: 0, parent: $0, target: target) }
    }

    /// Removes `name` from `dir` (lock held): one link fewer; the node lives on while
    /// the kernel or an open handle still refers to it.
    func removeLink(_ dir: Inode, name: String, node: Inode) {
        defer {
            journal(.unlink(dir.ino, name))
            journalNode(node)
        }
        dir.children?[name] = nil
        if let i = node.parents.firstIndex(of: dir.ino) { node.parents.remove(at: i) }
        node.nlink = node.kind == .directory ? 0 : node.nlink - min(1, node.nlink)
        if node.nlink == 0 {
            if node.kind == .file { usedBytes -= node.size }
            dirtyFiles.remove(node.ino)
            dirtyDirs.remove(node.ino)
        } else {
            markParentsDirty(node)
        }
        let now = nowNs()
        node.ctimeNs = now
        dir.mtimeNs = now
        dir.ctimeNs = now
        markTreeDirty(dir.ino)
        dropIfUnreachable(node)
    }

    public func unlink(_ ctx: RequestContext, parent: UInt64, name: String) throws {
        try checkWritable()
        try withDirectory(parent) { dir in
            guard let ino = dir.children?[name]?.ino, let node = nodes[ino] else { throw FuseError.notFound }
            guard node.kind != .directory else { throw FuseError.isDirectory }
            removeLink(dir, name: name, node: node)
        }
    }

    /// Loads `name` in `parent` if it is a directory, so emptiness can be checked.
    private func loadChildDirectory(parent: UInt64, name: String) throws {
        let child: UInt64? = try withDirectory(parent) { dir in
            guard let ino = dir.children?[name]?.ino, let node = nodes[ino], node.kind == .directory else { return nil }
            return ino
        }
        if let child { try withDirectory(child) { _ in } }
    }

    public func rmdir(_ ctx: RequestContext, parent: UInt64, name: String) throws {
        try checkWritable()
        try loadChildDirectory(parent: parent, name: name)
        try withDirectory(parent) { dir in
            guard let ino = dir.children?[name]?.ino, let node = nodes[ino] else { throw FuseError.notFound }
            guard node.kind == .directory else { throw FuseError.notDirectory }
            guard let children = node.children else { throw FuseError(errno: EAGAIN) }
            guard children.isEmpty else { throw FuseError.notEmpty }
            removeLink(dir, name: name, node: node)
        }
    }

    public func rename(_ ctx: RequestContext, parent: UInt64, name: String, newParent: UInt64, newName: String, flags: UInt32) throws {
        try checkWritable()
        let noReplace: UInt32 = 1, exchange: UInt32 = 2
        guard flags & ~(noReplace | exchange) == 0, flags != noReplace | exchange else { throw FuseError.invalid }
        guard newName.utf8.count <= 255 else { throw FuseError.nameTooLong }
        try withDirectory(parent) { _ in }
        try loadChildDirectory(parent: newParent, name: newName)
        // Both directories loaded; take the lock once for the whole change.
        while true {
            let done: Bool = try lock.withLock {
                let src = try node(parent), dst = try node(newParent)
                guard var srcChildren = src.children, dst.children != nil else { return false }
                guard let ino = srcChildren[name]?.ino, let moving = nodes[ino] else { throw FuseError.notFound }
                let existing = dst.children?[newName].flatMap { nodes[$0.ino] }
                let now = nowNs()
                if flags & exchange != 0 {
                    guard let other = existing else { throw FuseError.notFound }
                    srcChildren[name] = other.asChild
                    src.children = srcChildren
                    dst.children?[newName] = moving.asChild
                    if let i = moving.parents.firstIndex(of: src.ino) { moving.parents[i] = dst.ino }
                    if let i = other.parents.firstIndex(of: dst.ino) { other.parents[i] = src.ino }
                    for n in [moving, other] { n.ctimeNs = now }
                    journal(.entry(src.ino, name, other.ino))
                    journal(.entry(dst.ino, newName, moving.ino))
                } else {
                    if let existing {
                        if flags & noReplace != 0 { throw FuseError.exists }
                        if existing === moving { return true }
                        if moving.kind == .directory && existing.kind != .directory { throw FuseError.notDirectory }
                        if moving.kind != .directory && existing.kind == .directory { throw FuseError.isDirectory }
                        if existing.kind == .directory {
                            guard let c = existing.children else { return false }
                            guard c.isEmpty else { throw FuseError.notEmpty }
                        }
                        removeLink(dst, name: newName, node: existing)
                    }
                    src.children?[name] = nil
                    dst.children?[newName] = moving.asChild
                    if let i = moving.parents.firstIndex(of: src.ino) { moving.parents[i] = dst.ino }
                    moving.ctimeNs = now
                    journal(.unlink(src.ino, name))
                    journal(.entry(dst.ino, newName, moving.ino))
                }
                for dir in [src, dst] {
                    dir.mtimeNs = now
                    dir.ctimeNs = now
                    markTreeDirty(dir.ino)
                }
                return true
            }
            if done { return }
            try withDirectory(parent) { _ in }
            try loadChildDirectory(parent: newParent, name: newName)
            try withDirectory(newParent) { _ in }
        }
    }

    public func link(_ ctx: RequestContext, node ino: UInt64, newParent: UInt64, newName: String) throws -> EntryReply {
        try checkWritable()
        return try withDirectory(newParent) { dir in
            let node = try node(ino)
            guard node.kind != .directory else { throw FuseError.permission }
            guard dir.children?[newName] == nil else { throw FuseError.exists }
            node.nlink += 1
            node.parents.append(dir.ino)
            node.ctimeNs = nowNs()
            dir.children?[newName] = node.asChild
            dir.mtimeNs = node.ctimeNs
            markTreeDirty(dir.ino)
            markParentsDirty(node)
            journal(.entry(dir.ino, newName, ino))
            journalNode(node)
            return entry(node)
        }
    }

    // MARK: directories

    public func opendir(_ ctx: RequestContext, node ino: UInt64, flags: UInt32) throws -> OpenReply {
        try withDirectory(ino) { dir in
            let handle = nextHandle
            nextHandle += 1
            dirHandles[handle] = DirectoryListing(dir)
            dir.opens += 1
            return OpenReply(handle: handle, flags: FuseOpenFlag.cacheDir)
        }
    }

    /// After a takeover the kernel may read directory handles the dead daemon opened
    /// (they are not journaled): give such a handle the directory's current listing.
    /// The offsets are the new listing's, so a concurrent change can repeat or skip an
    /// entry for that one reader, as on any filesystem changed under readdir.
    func rebuildDirectoryHandle(_ handle: UInt64, node: UInt64) throws {
        guard lock.withLock({ restoredSession && dirHandles[handle] == nil }) else { return }
        try withDirectory(node) { dir in
            if dirHandles[handle] == nil {
                dirHandles[handle] = DirectoryListing(dir)
                dir.opens += 1
            }
        }
    }

    public func readdir(_ ctx: RequestContext, node: UInt64, handle: UInt64, offset: UInt64,
                        add: (DirectoryEntry) -> Bool) throws {
        try rebuildDirectoryHandle(handle, node: node)
        let listing = try lock.withLock {
            guard let listing = dirHandles[handle] else { throw FuseError.badHandle }
            return listing
        }
        // Files say their type in the entry; only other children need their node,
        // and so the lock, each for a moment.
        listing.entries(after: offset, typeOf: { child in lock.withLock { nodes[child.ino]?.direntType } }, add)
    }

    public func readdirplus(_ ctx: RequestContext, node: UInt64, handle: UInt64, offset: UInt64,
                            add: (DirectoryEntry, EntryReply) -> Bool) throws {
        try rebuildDirectoryHandle(handle, node: node)
        try lock.withLock {
            guard let listing = dirHandles[handle] else { throw FuseError.badHandle }
            listing.entries(after: offset, typeOf: { nodes[$0.ino]?.direntType }) { e in
                // A child gone since OPENDIR is passed over (its type is still known
                // when it was a file), keeping its offset.
                guard let child = nodes[e.ino] else { return true }
                // "." and ".." are not lookups for the kernel; everything else is.
                let dots = e.name == "." || e.name == ".."
                let reply = dots ? EntryReply(attributes: child.attributes, entryTimeoutNs: 0, attrTimeoutNs: 0) : entry(child)
                if !dots { journal(.entry(node, e.name, e.ino)) }
                if !add(e, reply) {
                    if !dots { child.lookups -= 1 }
                    return false
                }
                return true
            }
        }
    }

    public func releasedir(_ ctx: RequestContext, node ino: UInt64, handle: UInt64) {
        lock.withLock {
            dirHandles[handle] = nil
            if let dir = nodes[ino] {
                dir.opens -= 1
                dropIfUnreachable(dir)
            }
        }
    }

    public func fsyncdir(_ ctx: RequestContext, node: UInt64, handle: UInt64) throws {
        if !config.readOnly { try commit() }
    }

    public func statfs(_ ctx: RequestContext, node: UInt64) throws -> StatfsReply {
        lock.withLock {
            let blocks = UInt64(max(0, capacityBytes)) / 4096
            let used = UInt64(max(0, usedBytes) + 4095) / 4096
            let free = blocks > used ? blocks - used : 0
            return StatfsReply(blocks: blocks, blocksFree: free, blocksAvailable: free,
                               files: 1 << 32, filesFree: (1 << 32) - UInt64(nodes.count))
        }
    }

    public func access(_ ctx: RequestContext, node ino: UInt64, mask: UInt32) throws {
        // Permission checks are the kernel's (default_permissions); existence is ours.
        _ = try lock.withLock { try node(ino) }
        if mask & UInt32(W_OK) != 0 && config.readOnly { throw FuseError.readOnly }
    }
}
