#!/usr/bin/env bash
# Store throughput vs a plain tool on the same backend, one run, ratios printed.
#   e2e/bench/store.sh                      # 1 GiB through a directory store vs cp
#   SIZE=256MiB e2e/bench/store.sh
#   STORE=s3://bucket/bench S3_ENDPOINT=http://host:9000 e2e/bench/store.sh   # vs boto3
# (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY for S3.) Do not publish moto numbers.
set -euo pipefail
cd "$(dirname "$0")/../.."
SIZE="${SIZE:-1GiB}"
args=(store --size "$SIZE" --work-dir "${WORK_DIR:-/var/tmp}")
if [[ -n "${STORE:-}" ]]; then args+=(--store "$STORE"); fi
if [[ -n "${S3_ENDPOINT:-}" ]]; then args+=(--s3-endpoint "$S3_ENDPOINT"); fi
swift build -c release --product hearth-bench >&2
"$(swift build -c release --show-bin-path)/hearth-bench" "${args[@]}"
