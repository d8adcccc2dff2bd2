#!/usr/bin/env bash
# Upstream CSI conformance suite (kubernetes-csi/csi-test's csi-sanity) against
# `hearth serve` on one machine, every capability on: attach limit, modify
# (mutable parameters), snapshots, clones, expansion, list, group snapshots.
# Needs Go and the network (unless CSI_SANITY is given), and FUSE for Hearth.
#   e2e/csi-sanity.sh                                    # go install csi-sanity, swift build hearth
#   CSI_SANITY=/path/to/csi-sanity HEARTH=/path/to/hearth e2e/csi-sanity.sh
#   e2e/csi-sanity.sh --ginkgo.focus='ModifyVolume'      # extra arguments go to csi-sanity
# Results (JUnit XML, logs) land in $OUT_DIR (default .build/csi-sanity).
# Exit status is csi-sanity's.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)   # no cd: relative paths in the environment stay the caller's

CSI_TEST_VERSION="${CSI_TEST_VERSION:-v5.3.1}"   # newest v5.3.x (v5.4.0 wants Go >= 1.23)
OUT_DIR="${OUT_DIR:-$repo/.build/csi-sanity}"
VOLUME_SIZE=$((1024 * 1024 * 1024))              # --csi.testvolumesize, 1 GiB

dir=$(mktemp -d "${TMPDIR:-/tmp}/hearth-sanity.XXXXXX")
HEARTH="${HEARTH:-}"
# The command under test; $dir holds its socket, store and data.
HEARTH_SERVE=(serve --endpoint "unix://$dir/csi.sock" --node-id sanity-node
              --store "file://$dir/store" --data-dir "$dir/data" --allowed-path "$dir"
              --max-volumes 4 --log-level warning)

server_pid=""

# shellcheck disable=SC2317  # reached through the EXIT trap (shellcheck 0.9 cannot tell)
unmount_all() {
    # Mount points under $dir, deepest first (mountinfo field 5, octal-escaped).
    local mounts m
    mounts=$(awk -v d="$dir" '$5 == d || index($5, d "/") == 1 { print $5 }' /proc/self/mountinfo | sort -r) || true
    [[ -n "$mounts" ]] || return 0
    while IFS= read -r m; do
        m=$(printf '%b' "$m")
        echo "cleanup: unmounting $m" >&2
        fusermount3 -u -z "$m" 2>/dev/null || fusermount -u -z "$m" 2>/dev/null \
            || umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    done <<<"$mounts"
}

# shellcheck disable=SC2317  # the EXIT trap
cleanup() {
    local status=$?
    if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$server_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    unmount_all
    if [[ -f "$dir/hearth.log" ]]; then cp "$dir/hearth.log" "$OUT_DIR/hearth.log" 2>/dev/null || true; fi
    # --one-file-system: never descend into anything still mounted.
    rm -rf --one-file-system "$dir" 2>/dev/null || echo "cleanup: could not remove $dir entirely" >&2
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir -p "$OUT_DIR"

# csi-sanity: given, or built from the pinned tag into a temporary GOBIN.
if [[ -n "${CSI_SANITY:-}" ]]; then
    sanity="$CSI_SANITY"
else
    command -v go >/dev/null || { echo "need Go to install csi-sanity (or set CSI_SANITY)" >&2; exit 2; }
    echo "installing csi-sanity $CSI_TEST_VERSION" >&2
    mkdir -p "$dir/gobin"
    GOBIN="$dir/gobin" GOFLAGS="" go install \
        "github.com/kubernetes-csi/csi-test/v5/cmd/csi-sanity@$CSI_TEST_VERSION"
    sanity="$dir/gobin/csi-sanity"
fi
[[ -x "$sanity" ]] || { echo "csi-sanity not executable: $sanity" >&2; exit 2; }

# hearth: given, or built from this checkout.
if [[ -z "$HEARTH" ]]; then
    (cd "$repo" && swift build --product hearth >&2)
    HEARTH="$(cd "$repo" && swift build --show-bin-path)/hearth"
fi
[[ -x "$HEARTH" ]] || { echo "hearth not executable: $HEARTH" >&2; exit 2; }

mkdir -p "$dir/store" "$dir/data"
cat >"$dir/mutable-parameters.yaml" <<'EOF'
commitInterval: "5s"
EOF

echo "starting: $HEARTH ${HEARTH_SERVE[*]}" >&2
"$HEARTH" "${HEARTH_SERVE[@]}" >"$dir/hearth.log" 2>&1 &
server_pid=$!

for _ in $(seq 300); do
    [[ -S "$dir/csi.sock" ]] && break
    if ! kill -0 "$server_pid" 2>/dev/null; then
        echo "hearth serve exited before listening:" >&2
        tail -n 50 "$dir/hearth.log" >&2 || true
        exit 1
    fi
    sleep 0.1
done
[[ -S "$dir/csi.sock" ]] || { echo "no socket at $dir/csi.sock after 30 s" >&2; tail -n 50 "$dir/hearth.log" >&2; exit 1; }

junit="$OUT_DIR/junit.xml"
rm -f "$junit"
args=(
    --csi.endpoint "unix://$dir/csi.sock"
    --csi.stagingdir "$dir/staging"
    --csi.mountdir "$dir/mount"
    --csi.testvolumesize "$VOLUME_SIZE"
    --csi.testvolumemutableparameters "$dir/mutable-parameters.yaml"
    --csi.testnodevolumeattachlimit
    --ginkgo.junit-report "$junit"
    --ginkgo.no-color
    --ginkgo.v
)
if [[ -n "${CSI_SANITY_SECRETS:-}" ]]; then args+=(--csi.secrets "$CSI_SANITY_SECRETS"); fi
if [[ -n "${CSI_SANITY_VOLUME_PARAMETERS:-}" ]]; then args+=(--csi.testvolumeparameters "$CSI_SANITY_VOLUME_PARAMETERS"); fi

set +e
"$sanity" "${args[@]}" "$@" 2>&1 | tee "$OUT_DIR/csi-sanity.log"
rc=${PIPESTATUS[0]}
set -e

echo
echo "== csi-sanity $CSI_TEST_VERSION against hearth: exit $rc"
grep -E '^Ran [0-9]+ of [0-9]+ Specs|^(SUCCESS|FAIL)! ' "$OUT_DIR/csi-sanity.log" || true
if [[ -f "$junit" ]]; then
    count() { grep -c "<testcase [^>]*status=\"$1\"" "$junit" || true; }
    printf 'passed %s  failed %s  skipped %s  pending %s  (junit: %s)\n' \
        "$(count passed)" "$(($(count failed) + $(count panicked) + $(count timedout) + $(count interrupted) + $(count aborted)))" \
        "$(count skipped)" "$(count pending)" "$junit"
    # Failed specs, and skipped ones with the reason (specs left out by --ginkgo.focus/skip
    # carry the bare message "skipped" and are only counted).
    awk '
        /<testcase / {
            name = $0; sub(/.*<testcase name="/, "", name); sub(/".*/, "", name)
            status = $0; sub(/.*status="/, "", status); sub(/".*/, "", status)
            if (status != "passed" && status != "skipped" && status != "pending") print "  " status ": " name
        }
        /<skipped message="/ && status == "skipped" {
            reason = $0; sub(/.*<skipped message="/, "", reason); sub(/".*/, "", reason)
            if (reason == "skipped") filtered++; else print "  skipped: " name " (" reason ")"
        }
        END { if (filtered) print "  (" filtered " specs not selected by focus/skip)" }
    ' "$junit"
else
    echo "no JUnit report at $junit" >&2
fi
exit "$rc"
