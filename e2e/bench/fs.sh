#!/usr/bin/env bash
# Filesystem benchmark: fio (sequential 1 MiB and random 4 KiB, read and write, 1 and
# 4 jobs) and a metadata run (create + stat + unlink 10,000 files, find over them) on
# a cached Hearth volume, the native directory under it, and bindfs over that
# directory. Prints one table of MiB/s (or seconds) and ratios, all from this run.
#
# Usage: e2e/bench/fs.sh [hearth binary] [work dir]
# Needs: fio, bindfs; runs as root (drops caches between runs).
set -euo pipefail
HEARTH=${1:-$(dirname "$0")/../../.build/release/hearth}
WORK=${2:-/tmp/hearth-fsbench}
SIZE=${FS_BENCH_SIZE:-512m}
RUNTIME=${FS_BENCH_RUNTIME:-10}
FILES=${FS_BENCH_FILES:-10000}

# The hearth column runs with passthrough (the default, --passthrough auto); a second
# daemon with --passthrough off (kernel writeback cache, every read and write through
# the daemon) gives the "hearth-nopt" column. FS_BENCH_NOPT=0 leaves it out.
NOPT=${FS_BENCH_NOPT:-1}
# A third daemon serves FUSE over io_uring (--io-uring, passthrough as the first):
# the "hearth-uring" column. It needs the fuse module's enable_uring parameter,
# which this script turns on for the run and puts back at exit. FS_BENCH_URING=0
# leaves it out; it is left out by itself on a kernel without CONFIG_FUSE_IO_URING.
URING_PARAM=/sys/module/fuse/parameters/enable_uring
URING=${FS_BENCH_URING:-1}
[ -w "$URING_PARAM" ] || URING=0

cleanup() {
  for pid in "${PIDS[@]:-}"; do [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true; done
  fusermount3 -u "$WORK/bindfs" 2>/dev/null || umount -l "$WORK/bindfs" 2>/dev/null || true
  for d in hearth nopt uring; do umount -l "$WORK/$d" 2>/dev/null || true; done
}
# At exit the data goes too (the stores keep every version: ~24 GB after a full run,
# and a full disk takes the machine's other work down with it); the daemons' logs
# stay. FS_BENCH_KEEP=1 keeps everything.
finish() {
  cleanup
  [ -n "${URING_BEFORE:-}" ] && echo "$URING_BEFORE" > "$URING_PARAM"
  [ "${FS_BENCH_KEEP:-0}" = 1 ] || find "$WORK" -mindepth 1 -maxdepth 1 ! -name '*.log' -exec rm -rf {} + 2>/dev/null || true
  if [ -n "$FRESH_IMG" ]; then
    mkdir -p "$WORK.logs" && cp "$WORK"/*.log "$WORK.logs/" 2>/dev/null || true
    umount "$WORK" 2>/dev/null || umount -l "$WORK" 2>/dev/null || true
    rm -f "$FRESH_IMG"
  fi
}
trap finish EXIT
cleanup
rm -rf "$WORK"
mkdir -p "$WORK"
# FS_BENCH_FRESH_FS=SIZE (e.g. 40G): run everything on a new ext4 (mkfs defaults, so
# with a journal) in a sparse image file next to $WORK, made for this run and removed
# at exit. The native rows then do not depend on what the host filesystem deleted in
# the minutes before: without a journal, ext4's inode allocator skips every inode
# freed in the last 1-6 minutes (recently_deleted), and the same native metadata
# round took 0.41 to 1.30 s on this machine's root filesystem depending on that
# history (docs/fuse.md, session 13).
FRESH_IMG=
if [ -n "${FS_BENCH_FRESH_FS:-}" ]; then
  FRESH_IMG="$WORK.img"
  rm -f "$FRESH_IMG"
  truncate -s "$FS_BENCH_FRESH_FS" "$FRESH_IMG"
  mkfs.ext4 -q -F "$FRESH_IMG"
  mount -o loop "$FRESH_IMG" "$WORK"
fi
# On ext4, let each target's directory start in a block group of its own (Orlov
# spreads subdirectories of a +T directory): without a journal the inode allocator
# skips every inode deleted in the last minutes (recently_deleted), so one target's
# (or the previous run's) deletions would slow the next target's creates. Harmless
# elsewhere.
chattr +T "$WORK" 2>/dev/null || true
mkdir -p "$WORK"/{native,bindfs}
# The same for each round of the metadata rows (below): a directory of its own per
# round, which native (and bindfs over it) would otherwise fill in block groups
# full of the last round's deletions.
chattr +T "$WORK/native" 2>/dev/null || true

# The volumes are created with hearth-bench (next to the hearth binary): the CLI's
# volume verbs belong to another area and the store layout is all we need.
BENCH=${HEARTH_BENCH:-$(dirname "$HEARTH")/hearth-bench}
# start_daemon NAME [hearth mount flags]: a fresh volume with its own store and
# cache, mounted at $WORK/NAME; log in $WORK/NAME.log.
PIDS=()
start_daemon() {
  local name=$1; shift
  mkdir -p "$WORK/$name" "$WORK/store-$name" "$WORK/cache-$name"
  local vol
  vol=$("$BENCH" fs --create-volume bench --store-dir "$WORK/store-$name" --capacity $((100 << 30)))
  "$HEARTH" mount --store "file://$WORK/store-$name" --cache-dir "$WORK/cache-$name" --cache-size 20GiB \
    --commit-interval 5s "$@" ${HEARTH_MOUNT_ARGS:-} "$vol" "$WORK/$name" >"$WORK/$name.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 100); do mountpoint -q "$WORK/$name" && break; sleep 0.1; done
  mkdir -p "$WORK/$name/fio"
}
start_daemon hearth --stats-file "$WORK/hearth.stats"
HEARTH_PID=${PIDS[-1]}
[ "$NOPT" = 1 ] && start_daemon nopt --passthrough off
if [ "$URING" = 1 ]; then
  URING_BEFORE=$(cat "$URING_PARAM")
  echo Y > "$URING_PARAM"
  start_daemon uring --io-uring
fi
bindfs --no-allow-other "$WORK/native" "$WORK/bindfs" 2>/dev/null || bindfs "$WORK/native" "$WORK/bindfs"
mkdir -p "$WORK/native/fio"

# Before each run: what the previous run wrote is made durable everywhere, as
# native's `sync` waits for its writeback: fsync of a Hearth directory (fsyncdir)
# waits for a commit of everything dirty, so the next row does not share the 2
# cores with hashing and storing the previous row's gigabytes.
drop() {
  for d in "$WORK/hearth/fio" "$WORK/nopt/fio" "$WORK/uring/fio"; do
    [ -d "$d" ] && python3 -c 'import os,sys; fd=os.open(sys.argv[1], os.O_RDONLY); os.fsync(fd)' "$d"
  done
  sync; echo 3 > /proc/sys/vm/drop_caches
}

# FS_BENCH_MODE=xattr: how xattr handling costs writes and `ls -l` (docs/fuse.md).
# The daemon above runs with HEARTH_MOUNT_ARGS (e.g. --xattrs); prints two numbers
# per target: sequential 1 MiB write MiB/s and warm `ls -lR` of $FILES files in ms.
if [ "${FS_BENCH_MODE:-}" = xattr ]; then
  for t in native hearth; do
    d="$WORK/$t"
    mkdir -p "$d/ls"
    python3 - "$d/ls" "$FILES" <<'PY'
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    with open(f"{d}/f{i}", "w") as f: f.write("x")
PY
    sync
    drop
    w=$(fio --name=x --directory="$d/fio" --rw=write --bs=${FS_BENCH_XATTR_BS:-1m} --size="$SIZE" --ioengine=psync --invalidate=0 \
      --output-format=json 2>/dev/null |
      python3 -c 'import json,sys; j=json.load(sys.stdin)["jobs"][0]; print("%.1f" % (j["write"]["bw"]/1024))')
    ls -lR "$d/ls" >/dev/null
    best=999999
    for _ in 1 2 3 4 5; do
      t0=$(date +%s%N); ls -lR "$d/ls" >/dev/null; t1=$(date +%s%N)
      ms=$(( (t1 - t0) / 1000000 )); [ $ms -lt $best ] && best=$ms
    done
    echo "xattr-mode ${HEARTH_MOUNT_ARGS:-default} $t: seq write ${FS_BENCH_XATTR_BS:-1m} ${w} MiB/s, warm ls -lR $FILES files ${best} ms"
  done
  exit 0
fi

# fio MiB/s for one target directory.
fio_run() { # dir rw bs jobs
  local dir=$1 rw=$2 bs=$3 jobs=$4
  drop
  fio --name=b --directory="$dir" --rw="$rw" --bs="$bs" --size="$SIZE" --numjobs="$jobs" \
    --ioengine=psync --invalidate=0 --time_based --runtime="$RUNTIME" --group_reporting \
    --output-format=json 2>/dev/null |
    python3 -c 'import json,sys; j=json.load(sys.stdin)["jobs"][0]; print("%.1f" % ((j["read"]["bw"]+j["write"]["bw"])/1024))'
}

# FS_BENCH_MODE=meta: only the metadata rows (no fio), for iterating on them.
TARGETS="native hearth"; [ "$NOPT" = 1 ] && TARGETS="$TARGETS nopt"; [ "$URING" = 1 ] && TARGETS="$TARGETS uring"
declare -a ROWS
row() { ROWS+=("$1|$2|$3|$4|${5:--}|${6:--}"); }
ratio() { python3 -c "import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); print('%.2f' % (a/b if b else 0))" "$1" "$2"; }

# Lay the fio files out once per target (so reads hit cached, committed data).
[ "${FS_BENCH_MODE:-}" = meta ] || {
for jobs in 1 4; do
  for t in $TARGETS; do
    d="$WORK/$t/fio"; [ $t = native ] || true
    fio --name=b --directory="$d" --rw=write --bs=1m --size="$SIZE" --numjobs=$jobs --invalidate=0 \
      --output-format=terse >/dev/null 2>&1
  done
done
sync

# FS_BENCH_SPECS: a comma-separated subset of the fio rows, e.g. "randread 4k".
IFS=',' read -ra SPECS <<<"${FS_BENCH_SPECS:-read 1m,write 1m,randread 4k,randwrite 4k}"
for spec in "${SPECS[@]}"; do
  set -- $spec
  for jobs in 1 4; do
    n=$(fio_run "$WORK/native/fio" "$1" "$2" $jobs)
    b=$(fio_run "$WORK/bindfs/fio" "$1" "$2" $jobs)
    h=$(fio_run "$WORK/hearth/fio" "$1" "$2" $jobs)
    w=-; [ "$NOPT" = 1 ] && w=$(fio_run "$WORK/nopt/fio" "$1" "$2" $jobs)
    u=-; [ "$URING" = 1 ] && u=$(fio_run "$WORK/uring/fio" "$1" "$2" $jobs)
    row "fio $1 $2 x$jobs (MiB/s)" "$n" "$b" "$h" "$w" "$u"
  done
done
}

meta() { # dir round -> seconds for create+stat+unlink, seconds for find
  local dir=$1/meta-$2
  mkdir -p "$dir"
  drop
  # Timed inside one interpreter: python3 here is a pyenv shim that takes 0.11-0.18 s
  # to start (more after drop_caches), and two start-ups inside the timed span added
  # ~0.3 s to every target's row until session 14, pulling every ratio toward 1.
  python3 - "$dir" "$FILES" <<'PY'
import os, subprocess, sys, time
d, n = sys.argv[1], int(sys.argv[2])
t0 = time.perf_counter()
for i in range(n):
    with open(f"{d}/f{i}", "w") as f: f.write("x")
for i in range(n): os.stat(f"{d}/f{i}")
t1 = time.perf_counter()
subprocess.run(["find", d], stdout=subprocess.DEVNULL, check=True)
t2 = time.perf_counter()
for i in range(n): os.unlink(f"{d}/f{i}")
t3 = time.perf_counter()
print("%.3f %.3f" % ((t1 - t0) + (t3 - t2), t2 - t1))
PY
}
# The metadata rows are short and swing from run to run (on ext4 without a journal,
# native itself took 0.68-1.73 s for the same row on one day: the inode allocator
# skips recently deleted inodes). So they run FS_BENCH_META_ROUNDS times (default
# 3), the targets taking turns within each round so that a drift of the disk's state
# reaches all of them alike; the table shows each target's median and every sample
# is printed under it.
ROUNDS=${FS_BENCH_META_ROUNDS:-3}
# The requests the kernel made Hearth wait for in its first round, from the daemon's
# --stats-file (SIGUSR1 writes it): every op but the asynchronous ones (FORGET,
# RELEASE, INTERRUPT), which no caller waits for.
sync_requests() {
  rm -f "$WORK/hearth.stats"; kill -USR1 "$HEARTH_PID"
  for _ in $(seq 50); do [ -f "$WORK/hearth.stats" ] && break; sleep 0.1; done
  python3 -c 'import json,sys; ops=json.load(open(sys.argv[1]))["ops"]
print(sum(n for op, n in ops.items() if op not in ("forget", "batchForget", "release", "releasedir", "interrupt")))' "$WORK/hearth.stats"
}
declare -A META_S FIND_S
SYNC_BEFORE=$(sync_requests)
for round in $(seq "$ROUNDS"); do
  for t in native bindfs hearth nopt uring; do
    case $t in nopt) [ "$NOPT" = 1 ] || continue ;; uring) [ "$URING" = 1 ] || continue ;; esac
    read -r m f <<<"$(meta "$WORK/$t" "$round")"
    META_S[$t]+="$m "; FIND_S[$t]+="$f "
    [ "$t" = hearth ] && [ "$round" = 1 ] && SYNC_AFTER=$(sync_requests)
  done
done
median() { python3 -c "import statistics, sys; print('%.3f' % statistics.median(map(float, sys.argv[1:])))" $1; }
med() { # row-samples target -> median, or - for a target left out
  local -n samples=$1
  [ -n "${samples[$2]:-}" ] && median "${samples[$2]}" || echo -
}
row "create+stat+unlink $FILES (s)" "$(med META_S native)" "$(med META_S bindfs)" "$(med META_S hearth)" \
  "$(med META_S nopt)" "$(med META_S uring)"
row "find $FILES (s)" "$(med FIND_S native)" "$(med FIND_S bindfs)" "$(med FIND_S hearth)" \
  "$(med FIND_S nopt)" "$(med FIND_S uring)"

# The cost of one FUSE round trip on this machine: ioctl(TCGETS) on an open file,
# which every FUSE daemon answers at once (ENOTTY) and no cache absorbs. Python's
# open() makes exactly this call (isatty), and the metadata row is ~7 synchronous
# round trips per file; natively it is a syscall.
roundtrip() { # dir -> microseconds per ioctl
  echo x > "$1/rt"
  python3 - "$1/rt" <<'PY'
import fcntl, os, sys, termios, time
fd = os.open(sys.argv[1], os.O_RDONLY)
n = 20000
t = time.perf_counter()
for _ in range(n):
    try: fcntl.ioctl(fd, termios.TCGETS)
    except OSError: pass
print("%.1f" % (1e6 * (time.perf_counter() - t) / n))
PY
  rm -f "$1/rt"
}
w=-; [ "$NOPT" = 1 ] && w=$(roundtrip "$WORK/nopt")
u=-; [ "$URING" = 1 ] && u=$(roundtrip "$WORK/uring")
RTT_HEARTH=$(roundtrip "$WORK/hearth")
row "ioctl round trip (us)" "$(roundtrip "$WORK/native")" "$(roundtrip "$WORK/bindfs")" "$RTT_HEARTH" "$w" "$u"

# hearth = passthrough (auto); hearth-nopt = --passthrough off (writeback cache);
# hearth-uring = passthrough (auto) and --io-uring.
F='%-30s %9s %9s %9s %10s %10s %11s %12s %11s\n'
printf "$F" "benchmark" "native" "bindfs" "hearth" "hearth/nat" "hearth/bfs" "hearth-nopt" "hearth-uring" "uring/nat"
for r in "${ROWS[@]}"; do
  IFS='|' read -r name n b h w u <<<"$r"
  x=; [[ $name == *"(s)"* || $name == *"(us)"* ]] && x=x
  un=-; [ "$u" != - ] && un="$(ratio "$u" "$n")$x"
  printf "$F" "$name" "$n" "$b" "$h" "$(ratio "$h" "$n")$x" "$(ratio "$h" "$b")$x" "$w" "$u" "$un"
done
echo "(throughput rows: ratio > 1 is faster; time rows: ratio < 1 is faster)"
echo "metadata rows are medians of $ROUNDS rounds; samples (s):"
for t in native bindfs hearth nopt uring; do
  [ -n "${META_S[$t]:-}" ] && echo "  $t: create+stat+unlink ${META_S[$t]}| find ${FIND_S[$t]}"
done
# Each round's targets run back to back, so a round's own ratio is the least
# exposed to the host's drift over the run; and the floor the protocol sets: the
# requests a caller waits for (counted in round 1, find included) times one round
# trip as measured above, which no daemon can go below on this machine and kernel.
python3 - "${META_S[native]}" "${META_S[hearth]}" "$((SYNC_AFTER - SYNC_BEFORE))" "$FILES" "$RTT_HEARTH" <<'PY'
import statistics, sys
native = [float(x) for x in sys.argv[1].split()]; hearth = [float(x) for x in sys.argv[2].split()]
requests, files, rtt = int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
ratios = [h / n for h, n in zip(hearth, native)]
print("create+stat+unlink hearth/native per round: %s (median %.2fx)" % (" ".join("%.2fx" % r for r in ratios), statistics.median(ratios)))
floor = requests * rtt / 1e6
print("round-trip floor: %.1f waited-for requests per file x %.1f us = %.3f s (%.2fx native's median)"
      % (requests / files, rtt, floor, floor / statistics.median(native)))
PY
if grep -q "passthrough disabled" "$WORK/hearth.log"; then echo "warning: the hearth daemon disabled passthrough"; fi
