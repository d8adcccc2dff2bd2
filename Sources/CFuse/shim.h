// libfuse3 is used only to mount and unmount (fusermount3 semantics, option
// parsing); the kernel protocol itself is spoken in Swift (HearthFUSE).
#ifndef HEARTH_CFUSE_SHIM_H
#define HEARTH_CFUSE_SHIM_H
// No _GNU_SOURCE here: a module header that changes feature macros gives
// glibc's structs a second definition that clashes with Swift's Glibc module
// on clean builds. The GNU-only calls below go through syscall(2) instead.
#define FUSE_USE_VERSION 314
#include <fuse3/fuse_lowlevel.h>
#include <linux/fuse.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <linux/falloc.h>
#include <stdio.h>
#include "uring.h"

// ioctl(2) is variadic, which Swift cannot call: these wrappers give the /dev/fuse
// ioctls fixed signatures.

/// Makes `fd` (a fresh open of /dev/fuse) a clone of `session_fd`'s connection, so
/// another thread can read requests from it (FUSE_DEV_IOC_CLONE).
static inline int hearth_fuse_dev_clone(int fd, uint32_t session_fd) {
    return ioctl(fd, FUSE_DEV_IOC_CLONE, &session_fd);
}

// 7.40 passthrough, absent from Debian's 7.38 header.
struct hearth_fuse_backing_map {
    int32_t fd;
    uint32_t flags;
    uint64_t padding;
};
#define HEARTH_FUSE_DEV_IOC_BACKING_OPEN _IOW(FUSE_DEV_IOC_MAGIC, 1, struct hearth_fuse_backing_map)
#define HEARTH_FUSE_DEV_IOC_BACKING_CLOSE _IOW(FUSE_DEV_IOC_MAGIC, 2, uint32_t)

/// Registers `backing_fd` for passthrough; returns the backing id or -1 (errno set).
static inline int hearth_fuse_backing_open(int dev_fd, int backing_fd) {
    struct hearth_fuse_backing_map map;
    memset(&map, 0, sizeof map);
    map.fd = backing_fd;
    return ioctl(dev_fd, HEARTH_FUSE_DEV_IOC_BACKING_OPEN, &map);
}

static inline int hearth_fuse_backing_close(int dev_fd, uint32_t backing_id) {
    return ioctl(dev_fd, HEARTH_FUSE_DEV_IOC_BACKING_CLOSE, &backing_id);
}

// Linux file calls Swift's Glibc module does not expose (they need
// _GNU_SOURCE); used by the cache (sparse files) and the filesystem.

/// The calling thread's id (gettid(2) is GNU-only): setpriority(2) takes it to
/// change one thread of the process from another.
static inline int hearth_gettid(void) {
    return (int)syscall(SYS_gettid);
}

static inline int hearth_fallocate(int fd, int mode, int64_t offset, int64_t length) {
    return (int)syscall(SYS_fallocate, fd, mode, (long)offset, (long)length);
}

static inline int hearth_punch_hole(int fd, int64_t offset, int64_t length) {
    return hearth_fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length);
}

/// lseek with SEEK_DATA (data = 1) or SEEK_HOLE (data = 0).
static inline int64_t hearth_seek(int fd, int64_t offset, int data) {
    return lseek(fd, offset, data ? 3 /* SEEK_DATA */ : 4 /* SEEK_HOLE */);
}

/// Kernel-side copy (a reflink on filesystems that can); returns bytes copied.
static inline int64_t hearth_copy_range(int in_fd, int64_t in_off, int out_fd, int64_t out_off, size_t length) {
    int64_t a = in_off, b = out_off;
    return (int64_t)syscall(SYS_copy_file_range, in_fd, &a, out_fd, &b, length, 0u);
}

/// renameat2(2) (RENAME_NOREPLACE = 1, RENAME_EXCHANGE = 2).
static inline int hearth_renameat2(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, unsigned int flags) {
    return (int)syscall(SYS_renameat2, olddirfd, oldpath, newdirfd, newpath, flags);
}

static const int HEARTH_SEEK_DATA = 3;  // SEEK_DATA
static const int HEARTH_SEEK_HOLE = 4;  // SEEK_HOLE

/// A libfuse session with no operations: we only want its mount, its fd and its
/// unmount; the requests are read by HearthFUSE.
static inline struct fuse_session *hearth_fuse_session_new(int argc, char **argv) {
    struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
    struct fuse_lowlevel_ops ops;
    memset(&ops, 0, sizeof ops);
    struct fuse_session *se = fuse_session_new(&args, &ops, sizeof ops, NULL);
    fuse_opt_free_args(&args);
    return se;
}
#endif
