/// FUSE over io_uring (protocol 7.42, kernel 6.14+): how a request sits in a ring
/// entry's two buffers, and how it is turned back into the bytes `read(/dev/fuse)`
/// would have returned, so one decoder serves both transports.
///
/// The kernel (fs/fuse/dev_uring.c, `fuse_uring_args_to_ring`) writes the
/// `fuse_in_header` to the header buffer's first 128 bytes, the operation's fixed
/// argument (its first in-arg, e.g. `fuse_write_in`) to the next 128, and every
/// further argument (names, write data) to the payload buffer. It does not say how
/// long the fixed argument was: that follows from the opcode, as below. Operations
/// whose first argument is a name get an empty first argument (`fuse_set_zero_arg0`).
enum UringLayout {
    /// `struct fuse_uring_req_header`: in_out[128], op_in[128], ring_ent_in_out.
    static let headerSize = 288
    static let opInOffset = 128
    static let commitIDOffset = 256 + 8
    static let payloadSizeOffset = 256 + 16
    /// FUSE_MIN_READ_BUFFER: the kernel's floor for the payload buffer.
    static let minimumPayload = 8192

    /// Size of the fixed first argument the kernel puts in `op_in` for `opcode`.
    static func opHeaderSize(_ opcode: FuseOpcode, setxattrExt: Bool) -> Int {
        switch opcode {
        case .lookup, .unlink, .rmdir, .symlink, .readlink, .removexattr, .statfs, .destroy: return 0
        case .mkdir, .rename, .link, .open, .opendir, .getxattr, .listxattr, .access, .syncfs: return 8
        case .getattr, .mknod, .create, .tmpfile, .rename2, .fsync, .fsyncdir, .bmap: return 16
        case .setxattr: return setxattrExt ? 16 : 8
        case .release, .releasedir, .flush, .poll, .lseek, .statx: return 24
        case .ioctl, .fallocate: return 32
        case .read, .write, .readdir, .readdirplus: return 40
        case .getlk, .setlk, .setlkw: return 48
        case .copyFileRange, .copyFileRange64: return 56
        case .setattr: return 88
        // Never sent over a ring (INIT precedes it; forgets and interrupts keep using
        // /dev/fuse), or not supported here: answered from the header alone.
        case .`init`, .forget, .batchForget, .interrupt, .notifyReply, .setupMapping, .removeMapping: return 0
        }
    }

    /// Rebuilds the `/dev/fuse` form of the request in `header`/`payload` into
    /// `request`: in-header, fixed argument, payload. Returns its length, or nil when
    /// it does not fit (the caller answers EIO).
    static func assemble(header: UnsafeRawPointer, payload: UnsafeRawPointer,
                         into request: UnsafeMutableRawBufferPointer, setxattrExt: Bool) -> Int? {
        let opcode = header.loadUnaligned(fromByteOffset: 4, as: UInt32.self)
        let fixed = FuseOpcode(rawValue: opcode).map { opHeaderSize($0, setxattrExt: setxattrExt) } ?? 0
        let payloadSize = Int(header.loadUnaligned(fromByteOffset: payloadSizeOffset, as: UInt32.self))
        let total = FuseLayout.inHeader + fixed + payloadSize
        guard let base = request.baseAddress, total <= request.count else { return nil }
        base.copyMemory(from: header, byteCount: FuseLayout.inHeader)
        base.storeBytes(of: UInt32(total), as: UInt32.self)
        base.advanced(by: FuseLayout.inHeader).copyMemory(from: header.advanced(by: opInOffset), byteCount: fixed)
        base.advanced(by: FuseLayout.inHeader + fixed).copyMemory(from: payload, byteCount: payloadSize)
        return total
    }
}
