// A minimal io_uring for FUSE over io_uring (kernel 6.14+): one ring per serving
// thread, one FUSE ring entry per ring, and one command in flight at a time, so
// "submit the command, wait for its completion" is a single io_uring_enter.
// Raw syscalls (no liburing): the node image then needs no extra library.
#pragma once
#include <errno.h>
#include <linux/io_uring.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

/// FUSE_IO_URING_CMD_* (include/uapi/linux/fuse.h 7.42; Debian's header is 7.38).
enum { HEARTH_FUSE_URING_REGISTER = 1, HEARTH_FUSE_URING_COMMIT_AND_FETCH = 2 };

/// struct fuse_uring_cmd_req, carried in the SQE's command area.
struct hearth_fuse_uring_cmd_req {
    uint64_t flags;
    uint64_t commit_id;
    uint16_t qid;
    uint8_t padding[6];
};

typedef struct hearth_ring {
    int fd;
    unsigned *sq_tail, *sq_mask, *sq_array;
    unsigned *cq_head, *cq_tail, *cq_mask;
    struct io_uring_cqe *cqes;
    char *sqes;  // 128-byte entries (IORING_SETUP_SQE128)
    void *sq_map, *cq_map, *sqe_map;
    size_t sq_map_len, cq_map_len, sqe_map_len;
} hearth_ring;

static inline void hearth_ring_exit(hearth_ring *r) {
    if (r->sqe_map && r->sqe_map != MAP_FAILED) munmap(r->sqe_map, r->sqe_map_len);
    if (r->cq_map && r->cq_map != MAP_FAILED && r->cq_map != r->sq_map) munmap(r->cq_map, r->cq_map_len);
    if (r->sq_map && r->sq_map != MAP_FAILED) munmap(r->sq_map, r->sq_map_len);
    if (r->fd >= 0) close(r->fd);
    memset(r, 0, sizeof(*r));
    r->fd = -1;
}

/// Returns 0 or a negative errno.
static inline int hearth_ring_init(hearth_ring *r) {
    memset(r, 0, sizeof(*r));
    r->fd = -1;
    struct io_uring_params p;
    memset(&p, 0, sizeof(p));
    // COOP_TASKRUN: the kernel's "send this request" task work runs when the
    // submitting thread enters the ring to wait, not by interrupting it. No
    // SINGLE_ISSUER: a ring is made on the thread answering INIT and used by another.
    p.flags = IORING_SETUP_SQE128 | IORING_SETUP_COOP_TASKRUN;
    int fd = (int)syscall(__NR_io_uring_setup, 4, &p);
    if (fd < 0) return -errno;
    r->fd = fd;
    r->sq_map_len = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    r->cq_map_len = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    int single = (p.features & IORING_FEAT_SINGLE_MMAP) != 0;
    if (single && r->cq_map_len > r->sq_map_len) r->sq_map_len = r->cq_map_len;
    r->sq_map = mmap(0, r->sq_map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQ_RING);
    if (r->sq_map == MAP_FAILED) { int e = errno; hearth_ring_exit(r); return -e; }
    if (single) {
        r->cq_map = r->sq_map;
        r->cq_map_len = r->sq_map_len;
    } else {
        r->cq_map = mmap(0, r->cq_map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_CQ_RING);
        if (r->cq_map == MAP_FAILED) { int e = errno; hearth_ring_exit(r); return -e; }
    }
    r->sqe_map_len = p.sq_entries * 128;
    r->sqe_map = mmap(0, r->sqe_map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQES);
    if (r->sqe_map == MAP_FAILED) { int e = errno; hearth_ring_exit(r); return -e; }
    char *sq = r->sq_map, *cq = r->cq_map;
    r->sq_tail = (unsigned *)(sq + p.sq_off.tail);
    r->sq_mask = (unsigned *)(sq + p.sq_off.ring_mask);
    r->sq_array = (unsigned *)(sq + p.sq_off.array);
    r->cq_head = (unsigned *)(cq + p.cq_off.head);
    r->cq_tail = (unsigned *)(cq + p.cq_off.tail);
    r->cq_mask = (unsigned *)(cq + p.cq_off.ring_mask);
    r->cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);
    r->sqes = r->sqe_map;
    return 0;
}

/// Submits one FUSE ring command on `fuse_fd` (iov: header and payload buffers) and
/// waits for its completion: for REGISTER and COMMIT_AND_FETCH that is the next
/// request assigned to this entry (res 0), or the entry's end (negative errno).
static inline int hearth_ring_fuse_cmd(hearth_ring *r, int fuse_fd, uint32_t cmd_op, uint16_t qid,
                                       uint64_t commit_id, struct iovec *iov) {
    unsigned tail = *r->sq_tail;
    unsigned index = tail & *r->sq_mask;
    struct io_uring_sqe *sqe = (struct io_uring_sqe *)(r->sqes + (size_t)index * 128);
    memset(sqe, 0, 128);
    sqe->opcode = IORING_OP_URING_CMD;
    sqe->fd = fuse_fd;
    sqe->cmd_op = cmd_op;
    sqe->addr = (uint64_t)(uintptr_t)iov;
    sqe->len = 2;
    struct hearth_fuse_uring_cmd_req *req = (struct hearth_fuse_uring_cmd_req *)sqe->cmd;
    req->commit_id = commit_id;
    req->qid = qid;
    r->sq_array[index] = index;
    __atomic_store_n(r->sq_tail, tail + 1, __ATOMIC_RELEASE);
    unsigned to_submit = 1;
    for (;;) {
        unsigned head = *r->cq_head;
        if (head != __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE)) {
            int res = r->cqes[head & *r->cq_mask].res;
            __atomic_store_n(r->cq_head, head + 1, __ATOMIC_RELEASE);
            return res;
        }
        long n = syscall(__NR_io_uring_enter, r->fd, to_submit, 1, IORING_ENTER_GETEVENTS, NULL, 0);
        if (n > 0) to_submit = 0;  // submitted; a later -EINTR only cut the wait short
        if (n < 0 && errno != EINTR && errno != EAGAIN && errno != EBUSY) return -errno;
    }
}

/// Pins the calling thread to one CPU: a FUSE ring queue serves the requests of the
/// applications running on its CPU, so its thread is woken where they sleep.
static inline int hearth_pin_to_cpu(int cpu) {
    unsigned long mask[16];
    memset(mask, 0, sizeof(mask));
    if (cpu < 0 || cpu >= (int)(sizeof(mask) * 8)) return -EINVAL;
    mask[cpu / (8 * sizeof(unsigned long))] |= 1UL << (cpu % (8 * sizeof(unsigned long)));
    return syscall(__NR_sched_setaffinity, 0, sizeof(mask), mask) == 0 ? 0 : -errno;
}
