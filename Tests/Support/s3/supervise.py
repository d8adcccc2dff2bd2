#!/usr/bin/env python3
"""Runs a test server as a child and guarantees it dies with the test process.

Usage: supervise.py COMMAND [ARGS...]

The Swift test process starts servers through this wrapper. When the test process
goes away (even by a crash, with no chance to clean up) the wrapper's parent changes,
and the wrapper stops the server: SIGTERM, then SIGKILL after two seconds (moto's
threaded server can take its time on SIGTERM). SIGTERM to the wrapper does the same.
"""
import os
import signal
import subprocess
import sys
import time

# Processes spawned from Swift inherit the spawning thread's signal mask, in which
# nearly every signal is blocked: SIGTERM would never arrive. Clear it first, so this
# wrapper and the server (which inherits the clean mask) can be stopped.
signal.pthread_sigmask(signal.SIG_SETMASK, [])
parent = os.getppid()
child = subprocess.Popen(sys.argv[1:])


def stop(*_):
    if child.poll() is None:
        child.terminate()
        try:
            child.wait(2)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    sys.exit(0)


signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)
while child.poll() is None:
    if os.getppid() != parent:
        stop()
    time.sleep(0.3)
sys.exit(child.returncode)
