/// The operations a filesystem implements to be served by a ``FuseSession``.
///
/// Methods are synchronous and called concurrently from the session's worker
/// threads (plain threads, never the Swift cooperative pool), so an implementation
/// may block on local disk or on the object store without starving async code.
/// Failures are thrown as ``FuseError``. Default implementations answer ENOSYS, which
/// for most operations makes the kernel stop asking (e.g. the xattr calls).
public protocol FileSystemHandler: Sendable {
    /// Called once INIT is negotiated, before any other request.
    func initialized(_ parameters: SessionParameters)
    func lookup(_ ctx: RequestContext, parent: UInt64, name: String) throws -> EntryReply
    /// The kernel dropped `count` references to `node`; never answered.
    func forget(node: UInt64, count: UInt64)
    func getattr(_ ctx: RequestContext, node: UInt64, handle: UInt64?) throws -> (FileAttributes, UInt64)
    func setattr(_ ctx: RequestContext, node: UInt64, _ changes: SetAttributes) throws -> (FileAttributes, UInt64)
    func readlink(_ ctx: RequestContext, node: UInt64) throws -> String
    func mknod(_ ctx: RequestContext, parent: UInt64, name: String, mode: UInt32, rdev: UInt32, umask: UInt32) throws -> EntryReply
    func mkdir(_ ctx: RequestContext, parent: UInt64, name: String, mode: UInt32, umask: UInt32) throws -> EntryReply
    func unlink(_ ctx: RequestContext, parent: UInt64, name: String) throws
    func rmdir(_ ctx: RequestContext, parent: UInt64, name: String) throws
    func symlink(_ ctx: RequestContext, parent: UInt64, name: String, target: String) throws -> EntryReply
    /// `flags`: RENAME_NOREPLACE (1), RENAME_EXCHANGE (2); anything else is EINVAL.
    func rename(_ ctx: RequestContext, parent: UInt64, name: String, newParent: UInt64, newName: String, flags: UInt32) throws
    func link(_ ctx: RequestContext, node: UInt64, newParent: UInt64, newName: String) throws -> EntryReply
    func open(_ ctx: RequestContext, node: UInt64, flags: UInt32) throws -> OpenReply
    func create(_ ctx: RequestContext, parent: UInt64, name: String, mode: UInt32, umask: UInt32, flags: UInt32) throws -> (EntryReply, OpenReply)
    /// Reads into `buffer` (at most its size) and returns the byte count; short only at EOF.
    func read(_ ctx: RequestContext, node: UInt64, handle: UInt64, offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws -> Int
    /// `flags` are the WRITE's `write_flags` (FUSE_WRITE_CACHE 1, FUSE_WRITE_LOCKOWNER 2,
    /// FUSE_WRITE_KILL_SUIDGID 4).
    func write(_ ctx: RequestContext, node: UInt64, handle: UInt64, offset: UInt64, data: UnsafeRawBufferPointer, flags: UInt32) throws -> Int
    func flush(_ ctx: RequestContext, node: UInt64, handle: UInt64) throws
    func release(_ ctx: RequestContext, node: UInt64, handle: UInt64, flags: UInt32)
    func fsync(_ ctx: RequestContext, node: UInt64, handle: UInt64, dataOnly: Bool) throws
    func opendir(_ ctx: RequestContext, node: UInt64, flags: UInt32) throws -> OpenReply
    /// Entries after cookie `offset`, handed to `add` until it returns false (the
    /// reply is full) or they run out: the session stores each straight into the
    /// reply, so a listing needs no array of its own.
    func readdir(_ ctx: RequestContext, node: UInt64, handle: UInt64, offset: UInt64,
                 add: (DirectoryEntry) -> Bool) throws
    /// Like readdir, with attributes; every entry added counts as a lookup.
    func readdirplus(_ ctx: RequestContext, node: UInt64, handle: UInt64, offset: UInt64,
                     add: (DirectoryEntry, EntryReply) -> Bool) throws
    func releasedir(_ ctx: RequestContext, node: UInt64, handle: UInt64)
    func fsyncdir(_ ctx: RequestContext, node: UInt64, handle: UInt64) throws
    func statfs(_ ctx: RequestContext, node: UInt64) throws -> StatfsReply
    func access(_ ctx: RequestContext, node: UInt64, mask: UInt32) throws
    func fallocate(_ ctx: RequestContext, node: UInt64, handle: UInt64, offset: UInt64, length: UInt64, mode: UInt32) throws
    /// SEEK_DATA (3) / SEEK_HOLE (4); other whences are the kernel's business.
    func lseek(_ ctx: RequestContext, node: UInt64, handle: UInt64, offset: UInt64, whence: UInt32) throws -> UInt64
    func getxattr(_ ctx: RequestContext, node: UInt64, name: String) throws -> [UInt8]
    func setxattr(_ ctx: RequestContext, node: UInt64, name: String, value: UnsafeRawBufferPointer, flags: UInt32) throws
    func listxattr(_ ctx: RequestContext, node: UInt64) throws -> [String]
    func removexattr(_ ctx: RequestContext, node: UInt64, name: String) throws
    /// The kernel is unmounting (or the connection is going away).
    func destroy()
}

extension FileSystemHandler {
    public func initialized(_ parameters: SessionParameters) {}
    public func getxattr(_ ctx: RequestContext, node: UInt64, name: String) throws -> [UInt8] { throw FuseError.notSupported }
    public func setxattr(_ ctx: RequestContext, node: UInt64, name: String, value: UnsafeRawBufferPointer, flags: UInt32) throws {
        throw FuseError.notSupported
    }
    public func listxattr(_ ctx: RequestContext, node: UInt64) throws -> [String] { throw FuseError.notSupported }
    public func removexattr(_ ctx: RequestContext, node: UInt64, name: String) throws { throw FuseError.notSupported }
    public func destroy() {}
}
