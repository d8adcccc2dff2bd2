#!/usr/bin/env python3
"""An HTTP proxy that injects faults between Hearth's S3 client and a real S3 server.

Usage: fault_proxy.py LISTEN_PORT UPSTREAM_URL

Requests are forwarded to UPSTREAM_URL unchanged (Host header included, so SigV4
signatures stay valid for servers that check them). A plan of faults is consumed one
per request; when the plan is empty, requests pass through. Set the plan with

    GET /__fault__?plan=503,drop,stall,500,truncate   (one fault per forwarded request)
    GET /__fault__?always=503                          (every request fails)
    GET /__fault__?clear=1

Faults: 500/503/429 (an S3-style XML error, not forwarded), drop (close the
connection without answering), stall (answer nothing for STALL seconds, then close),
truncate (forward, but send only half the body before closing), corrupt (forward,
flipping one byte of a non-empty body; tests integrity checks above HTTP).
The proxy prints "ready" on stdout once listening.
"""
import http.client
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STALL_SECONDS = 5.0
_lock = threading.Lock()
_plan = []
_always = None
_count = {"forwarded": 0, "faults": 0}


def next_fault():
    with _lock:
        if _always:
            _count["faults"] += 1
            return _always
        if _plan:
            _count["faults"] += 1
            return _plan.pop(0)
        return None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _control(self):
        global _always
        query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
        with _lock:
            if "plan" in query:
                _plan[:] = [f for f in query["plan"][0].split(",") if f]
            if "always" in query:
                _always = query["always"][0] or None
            if "clear" in query:
                _plan.clear()
                _always = None
            body = ("forwarded=%d faults=%d pending=%d" % (_count["forwarded"], _count["faults"], len(_plan))).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _handle(self):
        if self.path.startswith("/__fault__"):
            return self._control()
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        fault = next_fault()
        if fault in ("500", "503", "429"):
            code = {"500": "InternalError", "503": "SlowDown", "429": "SlowDown"}[fault]
            payload = ("<?xml version=\"1.0\"?><Error><Code>%s</Code><Message>injected</Message></Error>" % code).encode()
            self.send_response(int(fault))
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        if fault == "drop":
            self.close_connection = True
            self.connection.shutdown(2)
            return
        if fault == "stall":
            time.sleep(STALL_SECONDS)
            self.close_connection = True
            return
        upstream = http.client.HTTPConnection(UPSTREAM.hostname, UPSTREAM.port, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "keep-alive")}
        upstream.request(self.command, self.path, body=body if body else None, headers=headers)
        response = upstream.getresponse()
        data = response.read()
        upstream.close()
        with _lock:
            _count["forwarded"] += 1
        if fault == "corrupt" and data:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        self.send_response(response.status)
        for name, value in response.getheaders():
            if name.lower() in ("transfer-encoding", "connection", "server", "date"):
                continue
            if name.lower() == "content-length" and self.command != "HEAD":
                continue
            self.send_header(name, value)
        if self.command == "HEAD":
            self.end_headers()
            return
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if fault == "truncate" and len(data) > 1:
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)
            return
        self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle


if __name__ == "__main__":
    port = int(sys.argv[1])
    UPSTREAM = urllib.parse.urlparse(sys.argv[2])
    if len(sys.argv) > 3:
        STALL_SECONDS = float(sys.argv[3])
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    print("ready", flush=True)
    server.serve_forever()
