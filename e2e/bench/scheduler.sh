#!/usr/bin/env bash
# Extender prioritize latency (p50/p99) for 100 / 1,000 / 5,000 nodes, 8 Hearth
# volumes per pod, NodeNames and Nodes forms, over real HTTP on 127.0.0.1.
# Builds release; prints the table. Not a timed test: it prints numbers.
set -euo pipefail
cd "$(dirname "$0")/../.."
scratch="${SCRATCH:-.build-bench}"
swift build -c release --scratch-path "$scratch" --product hearth-bench >&2
"$scratch/release/hearth-bench" scheduler "$@"
