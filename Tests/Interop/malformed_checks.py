#!/usr/bin/env python3
"""Sends bytes that are not a valid protobuf to a typed Hearth method and
expects INVALID_ARGUMENT, then a valid call to show the server still answers.

usage: malformed_checks.py TARGET METHOD
"""
import sys

import grpc

target, method = sys.argv[1], sys.argv[2]
with grpc.insecure_channel(target) as ch:
    call = ch.unary_unary(method, request_serializer=lambda b: b, response_deserializer=lambda b: b)
    for garbage in (b"\xff\xff\xff\xff\xff", b"\x0a\x05ab", b"\x08" + b"\x80" * 11):
        try:
            call(garbage, timeout=10)
            raise AssertionError(f"garbage {garbage!r} was accepted")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, (garbage, e.code(), e.details())
    call(b"", timeout=10)
    print("ok malformed requests rejected with INVALID_ARGUMENT")
