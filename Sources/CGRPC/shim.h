// The only C in HearthRPC's path: inline helpers so Swift never reaches into
// grpc's unions and macros. Each helper says who owns what it touches.
#ifndef HEARTH_CGRPC_SHIM_H
#define HEARTH_CGRPC_SHIM_H

#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <string.h>

// Slices are always read through a pointer: an inline slice (<= 23 bytes)
// keeps its bytes inside the struct, so a by-value copy would point at a
// temporary (release builds then read garbage).
static inline size_t hearth_slice_length(const grpc_slice *s) {
    return GRPC_SLICE_LENGTH(*s);
}
static inline const uint8_t *hearth_slice_bytes(const grpc_slice *s) {
    return GRPC_SLICE_START_PTR(*s);
}

// Pointers to a received metadata element's slices, for the readers above.
static inline const grpc_slice *hearth_metadata_key(const grpc_metadata *m) { return &m->key; }
static inline const grpc_slice *hearth_metadata_value(const grpc_metadata *m) { return &m->value; }

static inline const grpc_slice *hearth_call_details_method(const grpc_call_details *d) { return &d->method; }
static inline gpr_timespec hearth_call_details_deadline(const grpc_call_details *d) { return d->deadline; }

// A byte buffer holding a copy of `len` bytes. The caller owns the buffer and
// frees it with grpc_byte_buffer_destroy once the send op that took it completed.
static inline grpc_byte_buffer *hearth_byte_buffer_copying(const void *bytes, size_t len) {
    grpc_slice s = grpc_slice_from_copied_buffer((const char *)bytes, len);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    return bb;
}

// Copies a received buffer's bytes into `dest` (capacity from grpc_byte_buffer_length).
// Returns the bytes copied, or (size_t)-1 if the buffer cannot be read
// (e.g. an undecompressable payload). The buffer stays the caller's.
static inline size_t hearth_byte_buffer_copy_out(grpc_byte_buffer *bb, uint8_t *dest, size_t cap) {
    grpc_byte_buffer_reader reader;
    if (!grpc_byte_buffer_reader_init(&reader, bb)) return (size_t)-1;
    size_t off = 0;
    grpc_slice s;
    while (grpc_byte_buffer_reader_next(&reader, &s)) {
        size_t n = GRPC_SLICE_LENGTH(s);
        if (off + n > cap) { grpc_slice_unref(s); grpc_byte_buffer_reader_destroy(&reader); return (size_t)-1; }
        if (n) memcpy(dest + off, GRPC_SLICE_START_PTR(s), n);
        off += n;
        grpc_slice_unref(s);
    }
    grpc_byte_buffer_reader_destroy(&reader);
    return off;
}

// Channel/server arguments: message size limits. `hearth_channel_args` is
// caller-allocated and must outlive the create call that reads it.
typedef struct {
    grpc_arg args[3];
    grpc_channel_args channel_args;
} hearth_channel_args;

static inline grpc_channel_args *hearth_channel_args_init(hearth_channel_args *a,
                                                          int max_receive, int max_send) {
    memset(a, 0, sizeof(*a));
    a->args[0].type = GRPC_ARG_INTEGER;
    a->args[0].key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    a->args[0].value.integer = max_receive;
    a->args[1].type = GRPC_ARG_INTEGER;
    a->args[1].key = (char *)GRPC_ARG_MAX_SEND_MESSAGE_LENGTH;
    a->args[1].value.integer = max_send;
    // Unix sockets are per-process paths; port reuse would let two servers
    // share a TCP port silently, so turn it off.
    a->args[2].type = GRPC_ARG_INTEGER;
    a->args[2].key = (char *)GRPC_ARG_ALLOW_REUSEPORT;
    a->args[2].value.integer = 0;
    a->channel_args.num_args = 3;
    a->channel_args.args = a->args;
    return &a->channel_args;
}

// Client unary call in one batch. Every pointer must stay valid until `tag`
// completes: the core writes the received metadata, message, status and details then.
static inline grpc_call_error hearth_start_client_unary(
    grpc_call *call, grpc_metadata *metadata, size_t metadata_count,
    grpc_byte_buffer *request, grpc_metadata_array *recv_initial,
    grpc_byte_buffer **response, grpc_metadata_array *recv_trailing,
    grpc_status_code *status, grpc_slice *details, void *tag) {
    grpc_op ops[6];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.count = metadata_count;
    ops[0].data.send_initial_metadata.metadata = metadata;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = request;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = recv_initial;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = response;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = recv_trailing;
    ops[5].data.recv_status_on_client.status = status;
    ops[5].data.recv_status_on_client.status_details = details;
    return grpc_call_start_batch(call, ops, 6, tag, NULL);
}

// Server: receive the request message (a receive-only batch).
static inline grpc_call_error hearth_start_server_receive(grpc_call *call,
                                                          grpc_byte_buffer **message, void *tag) {
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = message;
    return grpc_call_start_batch(call, &op, 1, tag, NULL);
}

// Server: learn when the call ends. Started right after the request arrives,
// it completes early with *cancelled = 1 when the client cancels or the
// deadline passes, which is how a running handler hears of it.
static inline grpc_call_error hearth_start_server_watch_close(grpc_call *call,
                                                              int *cancelled, void *tag) {
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    op.data.recv_close_on_server.cancelled = cancelled;
    return grpc_call_start_batch(call, &op, 1, tag, NULL);
}

// Server: answer in one send-only batch (safe beside the receive batches).
// `response` may be NULL (error status without a message).
static inline grpc_call_error hearth_start_server_respond(
    grpc_call *call, grpc_metadata *initial, size_t initial_count,
    grpc_byte_buffer *response, grpc_metadata *trailing, size_t trailing_count,
    grpc_status_code status, grpc_slice *details, void *tag) {
    grpc_op ops[3];
    memset(ops, 0, sizeof(ops));
    size_t n = 0;
    ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[n].data.send_initial_metadata.count = initial_count;
    ops[n].data.send_initial_metadata.metadata = initial;
    n++;
    if (response) {
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n].data.send_message.send_message = response;
        n++;
    }
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.trailing_metadata_count = trailing_count;
    ops[n].data.send_status_from_server.trailing_metadata = trailing;
    ops[n].data.send_status_from_server.status = status;
    ops[n].data.send_status_from_server.status_details = details;
    n++;
    return grpc_call_start_batch(call, ops, n, tag, NULL);
}

// Nanoseconds left until `deadline` on the monotonic clock (negative once
// passed); INT64_MAX when the deadline is infinite.
static inline int64_t hearth_nanos_until(gpr_timespec deadline) {
    if (deadline.tv_sec == INT64_MAX) return INT64_MAX;
    gpr_timespec mono = gpr_convert_clock_type(deadline, GPR_CLOCK_MONOTONIC);
    gpr_timespec now = gpr_now(GPR_CLOCK_MONOTONIC);
    gpr_timespec left = gpr_time_sub(mono, now);
    return left.tv_sec * 1000000000LL + left.tv_nsec;
}

// A monotonic deadline `nanos` from now (infinite when nanos is INT64_MAX).
static inline gpr_timespec hearth_deadline_after(int64_t nanos) {
    if (nanos == INT64_MAX) return gpr_inf_future(GPR_CLOCK_MONOTONIC);
    return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_nanos(nanos, GPR_TIMESPAN));
}

static inline uint32_t hearth_propagate_defaults(void) { return GRPC_PROPAGATE_DEFAULTS; }

static inline gpr_timespec hearth_infinite_future(void) {
    return gpr_inf_future(GPR_CLOCK_REALTIME);
}

#endif
