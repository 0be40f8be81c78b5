#!/bin/bash
# drover-img convert against qemu-img convert on a 2 GiB raw image that mixes
# random data, zero-filled (allocated) regions and holes.
#
# usage: tests/bench/convert.sh [path/to/drover-img] [work dir] [runs (5)]
#   DROP_CACHES=1   drop the page cache before every run (needs root; cold
#                   reads). Default: warm cache, the source read once before
#                   the runs, as a host that just wrote it would have it.
#   SIZE_MIB=2048   image size.
#   VERBOSE=1       print every run's times.
#   BENCH_COMPRESS=1  also time raw->qcow2 with -c (slow: zlib on every cluster).
#
# Both tools run with their defaults: output cache=unsafe (no fsync at the
# end), sparse detection at 4k. The output is removed and `sync` run between
# runs (not timed), so dirty pages of one run do not slow the next. MB/s is
# the virtual size over the wall time; ratio is drover's MB/s over qemu's.
# This is a benchmark, not a test: it asserts only that the outputs match.
set -euo pipefail

DROVER_IMG=${1:-$(dirname "$0")/../../build/storage/drover-img}
WORK=${2:-${TMPDIR:-/tmp}}
RUNS=${3:-5}
SIZE_MIB=${SIZE_MIB:-2048}
DROP_CACHES=${DROP_CACHES:-0}

command -v qemu-img >/dev/null || { echo "convert.sh: qemu-img not found (qemu-utils)" >&2; exit 1; }
[ -x "$DROVER_IMG" ] || { echo "convert.sh: $DROVER_IMG: no drover-img there" >&2; exit 1; }
DIR=$(mktemp -d "$WORK/drover-bench-convert.XXXXXX")
trap 'rm -rf "$DIR"' EXIT

# ---- the source: 4 MiB regions in a fixed pattern of ten ----
#   0 1 2 3: random data        4: zero-filled, allocated
#   5: 64k data / 64k hole      6 7 8: hole     9: 1 MiB data, 3 MiB zeroes
make_source() {
	local src=$DIR/src.raw i
	truncate -s "${SIZE_MIB}M" "$src"
	head -c $((64 << 20)) /dev/urandom >"$DIR/random.bin"
	for ((i = 0; i < SIZE_MIB / 4; i++)); do
		local off=$((i * 4)) skip=$(((i * 4) % 60))
		case $((i % 10)) in
		0 | 1 | 2 | 3)
			dd if="$DIR/random.bin" of="$src" bs=1M count=4 skip=$skip seek=$off \
				conv=notrunc status=none ;;
		4)
			dd if=/dev/zero of="$src" bs=1M count=4 seek=$off conv=notrunc status=none ;;
		5)
			local k
			for ((k = 0; k < 64; k += 2)); do
				dd if="$DIR/random.bin" of="$src" bs=64k count=1 skip=$((k + i % 512)) \
					seek=$((off * 16 + k)) conv=notrunc status=none
			done ;;
		9)
			dd if="$DIR/random.bin" of="$src" bs=1M count=1 skip=$skip seek=$off \
				conv=notrunc status=none
			dd if=/dev/zero of="$src" bs=1M count=3 seek=$((off + 1)) conv=notrunc \
				status=none ;;
		esac
	done
	rm -f "$DIR/random.bin"
}

prepare_cache() {
	sync
	if [ "$DROP_CACHES" = 1 ]; then
		echo 3 >/proc/sys/vm/drop_caches
	else
		cat "$1" >/dev/null
	fi
}

now() { date +%s.%N; }

# time_once TOOL SRC DST ARGS... -> seconds
time_once() {
	local tool=$1 src=$2 dst=$3 t0 t1
	shift 3
	rm -f "$dst"
	prepare_cache "$src"
	t0=$(now)
	"$tool" convert "$@" "$src" "$dst"
	t1=$(now)
	awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }'
}

min() { awk -v a="$1" -v b="$2" 'BEGIN { print (a == "" || b < a) ? b : a }'; }

# One row: the two tools alternate run by run, so that whatever else the
# host is doing weighs on both alike; the best run of each counts.
row() {
	local name=$1 src=$2 ext=$3 td="" tq="" r d q
	shift 3
	for ((r = 0; r < RUNS; r++)); do
		d=$(time_once "$DROVER_IMG" "$src" "$DIR/out-drover.$ext" "$@")
		q=$(time_once qemu-img "$src" "$DIR/out-qemu.$ext" "$@")
		[ "${VERBOSE:-0}" = 1 ] && echo "  $name run $r: drover ${d}s qemu ${q}s" >&2
		td=$(min "$td" "$d")
		tq=$(min "$tq" "$q")
	done
	qemu-img compare "$DIR/out-drover.$ext" "$DIR/out-qemu.$ext" >/dev/null ||
		{ echo "convert.sh: $name: outputs differ" >&2; exit 1; }
	awk -v n="$name" -v s="$SIZE_MIB" -v td="$td" -v tq="$tq" 'BEGIN {
		d = s * 1.048576 / td; q = s * 1.048576 / tq
		printf "%-14s %9.2f %9.0f %9.2f %9.0f %7.2fx\n", n, td, d, tq, q, d / q
	}'
	rm -f "$DIR/out-drover.$ext" "$DIR/out-qemu.$ext"
}

echo "making a ${SIZE_MIB} MiB source (40% random data, 20% zeroes, 30% holes, mixed)..." >&2
make_source
qemu-img convert -O qcow2 "$DIR/src.raw" "$DIR/src.qcow2"
cache=$([ "$DROP_CACHES" = 1 ] && echo "dropped before each run" || echo "warm (source read before each run)")
echo "page cache: $cache; best of $RUNS runs; MB/s = virtual size / wall time"
printf "%-14s %9s %9s %9s %9s %8s\n" "conversion" "drover s" "MB/s" "qemu s" "MB/s" "ratio"
row "raw->qcow2" "$DIR/src.raw" qcow2 -O qcow2
row "qcow2->raw" "$DIR/src.qcow2" raw -O raw
row "raw->raw" "$DIR/src.raw" raw -O raw
if [ "${BENCH_COMPRESS:-0}" = 1 ]; then
	row "raw->qcow2 -c" "$DIR/src.raw" qcow2 -c -O qcow2
fi
