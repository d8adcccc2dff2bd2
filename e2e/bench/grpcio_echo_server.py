#!/usr/bin/env python3
"""The peer server for the RPC benchmark: Python grpcio (asyncio flavour, the
faster of its two) answering /bench.Echo/Echo with the request bytes, the
same work the Hearth server does. usage: grpcio_echo_server.py HOST:PORT"""
import asyncio
import sys

import grpc


async def echo(request, context):
    return request


async def main(address):
    server = grpc.aio.server()
    handler = grpc.unary_unary_rpc_method_handler(echo, request_deserializer=None, response_serializer=None)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bench.Echo", {"Echo": handler}),))
    server.add_insecure_port(address)
    await server.start()
    print("ready", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
