#!/usr/bin/env python3
"""Checks Hearth's gRPC server with an independent client: Python grpcio.

Run by HearthRPCTests against the EchoServer fixture (see EchoServer.swift
for the methods). Every check asserts; the script exits non-zero on the first
failure, and prints one line per check that passed.

usage: rpc_checks.py TARGET   (TARGET as grpcio spells it: unix:/path or host:port)
"""
import sys
import threading
import time

import grpc

IDENTITY = lambda b: b  # raw bytes in, raw bytes out


def unary(channel, method):
    return channel.unary_unary(method, request_serializer=IDENTITY, response_deserializer=IDENTITY)


def expect_code(fn, code):
    try:
        fn()
    except grpc.RpcError as e:
        assert e.code() == code, f"expected {code}, got {e.code()}: {e.details()}"
        return e
    raise AssertionError(f"expected {code}, the call succeeded")


def check_echo_and_metadata(ch):
    payload = bytes(range(256)) * 3
    md = (("x-text", "hello"), ("x-data-bin", b"\x00\xff\x0a\x00"))
    resp, call = unary(ch, "/test.Echo/Echo").with_call(payload, metadata=md, timeout=10)
    assert resp == payload, "payload changed"
    initial = dict(call.initial_metadata())
    assert initial.get("x-text") == "hello", initial
    assert initial.get("x-data-bin") == b"\x00\xff\x0a\x00", initial
    trailing = dict(call.trailing_metadata())
    assert trailing.get("trailer-echo") == "done", trailing
    assert trailing.get("trailer-bin") == b"\x00\x01\x02\xff\xfe", trailing
    for size in (0, 1, 22, 23, 24):
        data = bytes((i * 7) % 256 for i in range(size))
        assert unary(ch, "/test.Echo/Echo")(data, timeout=10) == data, f"size {size}"


def check_status(ch):
    e = expect_code(lambda: unary(ch, "/test.Echo/Fail")(b"", metadata=(("x-code", "5"), ("x-message", "no such volume")), timeout=10),
                    grpc.StatusCode.NOT_FOUND)
    assert e.details() == "no such volume", e.details()
    assert dict(e.trailing_metadata()).get("failure-detail-bin") == b"\x09\x08\x07"


def check_unknown_method(ch):
    expect_code(lambda: unary(ch, "/test.Echo/Missing")(b"x", timeout=10), grpc.StatusCode.UNIMPLEMENTED)


def check_deadline(ch):
    start = time.monotonic()
    expect_code(lambda: unary(ch, "/test.Echo/Sleep")(b"5000", timeout=0.2), grpc.StatusCode.DEADLINE_EXCEEDED)
    assert time.monotonic() - start < 3, "deadline not enforced"
    left = int(unary(ch, "/test.Echo/Deadline")(b"", timeout=10))
    # grpc-timeout is sent rounded up to a few significant digits, so allow a little over.
    assert 8000 < left <= 10500, f"handler saw {left} ms left of 10000"


def check_cancellation(ch):
    future = unary(ch, "/test.Echo/Sleep").future(b"10000", timeout=30)
    time.sleep(0.3)
    assert future.cancel(), "cancel refused"
    try:
        future.result()
        raise AssertionError("cancelled call returned a result")
    except grpc.FutureCancelledError:
        pass
    # The server keeps answering afterwards.
    assert unary(ch, "/test.Echo/Echo")(b"after", timeout=10) == b"after"


def check_oversized(ch):
    # The server's default receive limit is 4 MiB.
    expect_code(lambda: unary(ch, "/test.Echo/Echo")(b"\x01" * (5 * 1024 * 1024), timeout=20),
                grpc.StatusCode.RESOURCE_EXHAUSTED)


def check_concurrency(ch):
    errors = []

    def worker(i):
        try:
            data = f"call-{i}".encode()
            assert unary(ch, "/test.Echo/Echo")(data, timeout=10) == data
        except Exception as e:  # noqa: BLE001 - collected and reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]


CHECKS = [check_echo_and_metadata, check_status, check_unknown_method, check_deadline,
          check_cancellation, check_oversized, check_concurrency]


def main():
    target = sys.argv[1]
    with grpc.insecure_channel(target) as ch:
        for check in CHECKS:
            check(ch)
            print(f"ok {check.__name__}", flush=True)


if __name__ == "__main__":
    main()
