#!/usr/bin/env bash
# Recovery pause benchmark (issue 8): the FUSE daemon is killed with SIGKILL 20 times
# while fio runs 4 jobs of random reads and writes with verification on the mount;
# the node plugin's supervisor restarts it and the successor takes the live session
# over from the fd keeper. The pause is how long a statfs issued right after each
# kill waits. Prints a table of p50 / max over the kills (target: max < 1 s).
#
# Usage: e2e/bench/recovery.sh [kills]   (default 20; release build; runs as root)
# It is TakeoverTests.repeatedKillsUnderFio with HEARTH_RECOVERY_KILLS set, so the
# numbers come from the same code path CI checks, and fio must still verify clean.
set -euo pipefail
cd "$(dirname "$0")/../.."
KILLS=${1:-20}
SCRATCH=${HEARTH_BENCH_SCRATCH:-.build-recover-rel}
HEARTH_RECOVERY_KILLS=$KILLS HEARTH_ONLY_TESTS=HearthFSTests \
  swift test -c release --scratch-path "$SCRATCH" --filter TakeoverTests/repeatedKillsUnderFio 2>&1 \
  | tee /tmp/hearth-recovery-bench.log \
  | sed -n '/^recovery pause over/,/^| [0-9]/p'
