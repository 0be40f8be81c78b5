#!/bin/bash
# Runs the virtio-blk guest cases: makes a disk image, boots one or more VMs
# on it through run-guest.sh, then checks the image from the host.
#
#   run-blk.sh [options] -- RUN-GUEST-ARGS [--- RUN-GUEST-ARGS]...
#
#   --image FILE        the image (made afresh; removed when the case passes)
#   --format F          raw or qcow2 (qemu-img create -f F)
#   --size SIZE         its virtual size (qemu-img syntax: 32M, 3G)
#   --tool PATH         the blkpattern host tool
#   --prefill SEED      before the runs, the image gets blkcheck's pattern for
#                       SEED (blkpattern write; a qcow2 image is converted
#                       from a raw one)
#   --layout L          how qemu-img lays out a prefilled qcow2 image: convert
#                       (default), compressed (convert -c), c512 or c2m
#                       (cluster sizes), extl2 (extended L2, subclusters),
#                       backing (an empty overlay on a qcow2 base that holds
#                       the pattern), snapshot (an internal snapshot taken
#                       after the pattern: every cluster shared)
#   --unchanged         the image file must be byte for byte the same after
#                       the runs (SHA-256)
#   --check SEED        after the runs, blkpattern check on the image (a qcow2
#                       image is converted to raw first)
#
# Each RUN-GUEST-ARGS is what run-guest.sh takes (its options, --, the VMM
# command); the runs happen in order and the first failure ends the case.
# Afterwards a qcow2 image must pass qemu-img check (no leaks, no corruption).
set -u

usage() {
	sed -n '2,29p' "$0" | sed 's/^# \{0,1\}//' >&2
	exit 2
}

image=""
format=""
size=""
tool=""
prefill=""
unchanged=0
check=""
layout=convert
while [ $# -gt 0 ]; do
	case "$1" in
	--image) image="$2"; shift 2 ;;
	--format) format="$2"; shift 2 ;;
	--size) size="$2"; shift 2 ;;
	--tool) tool="$2"; shift 2 ;;
	--prefill) prefill="$2"; shift 2 ;;
	--layout) layout="$2"; shift 2 ;;
	--unchanged) unchanged=1; shift ;;
	--check) check="$2"; shift 2 ;;
	--) shift; break ;;
	*) echo "run-blk.sh: unknown option '$1'" >&2; usage ;;
	esac
done
[ -n "$image" ] && [ -n "$format" ] && [ -n "$size" ] && [ $# -gt 0 ] || usage
case "$format" in raw|qcow2) ;; *) echo "run-blk.sh: format '$format': raw or qcow2" >&2; exit 2 ;; esac
if [ -n "$prefill$check" ] && [ ! -x "$tool" ]; then
	echo "run-blk.sh: blkpattern tool '$tool' not executable" >&2
	exit 2
fi
if ! command -v qemu-img >/dev/null 2>&1; then
	echo "run-blk.sh: qemu-img not found (Debian package qemu-utils)" >&2
	exit 1
fi
runner="$(dirname "$0")/run-guest.sh"

fail() {
	echo "run-blk.sh: FAILED: $*"
	echo "run-blk.sh: the image stays at $image"
	exit 1
}

mkdir -p "$(dirname "$image")"
rm -f "$image" "$image.raw" "$image.base"
if [ -n "$prefill" ]; then
	raw="$image"
	[ "$format" = qcow2 ] && raw="$image.raw"
	qemu-img create -q -f raw "$raw" "$size" || fail "qemu-img create"
	"$tool" write "$raw" "$prefill" || fail "blkpattern write"
	if [ "$format" = qcow2 ]; then
		opts=()
		case "$layout" in
		convert|backing|snapshot) ;;
		compressed) opts=(-c) ;;
		c512) opts=(-o cluster_size=512) ;;
		c2m) opts=(-o cluster_size=2M) ;;
		extl2) opts=(-o extended_l2=on,cluster_size=64k) ;;
		*) echo "run-blk.sh: layout '$layout' unknown" >&2; exit 2 ;;
		esac
		target="$image"
		[ "$layout" = backing ] && target="$image.base"
		qemu-img convert -q -f raw -O qcow2 "${opts[@]}" "$raw" "$target" ||
			fail "qemu-img convert ($layout)"
		rm -f "$raw"
		if [ "$layout" = backing ]; then
			qemu-img create -q -f qcow2 -b "$target" -F qcow2 "$image" ||
				fail "qemu-img create (overlay)"
		elif [ "$layout" = snapshot ]; then
			qemu-img snapshot -c prefilled "$image" || fail "qemu-img snapshot -c"
		fi
	fi
else
	qemu-img create -q -f "$format" "$image" "$size" || fail "qemu-img create"
fi
before=""
[ "$unchanged" = 1 ] && before=$(sha256sum <"$image")

# Each run: the arguments up to the next "---".
run=()
runs=0
flush_run() {
	[ ${#run[@]} -gt 0 ] || return 0
	runs=$((runs + 1))
	echo "run-blk.sh: run $runs"
	"$runner" "${run[@]}" || fail "run $runs"
	run=()
}
for a in "$@"; do
	if [ "$a" = "---" ]; then
		flush_run
	else
		run+=("$a")
	fi
done
flush_run

if [ "$unchanged" = 1 ]; then
	after=$(sha256sum <"$image")
	[ "$before" = "$after" ] || fail "the image changed (sha256 ${before%% *} before, ${after%% *} after)"
	echo "run-blk.sh: image unchanged (sha256 ${after%% *})"
fi
if [ "$format" = qcow2 ]; then
	out=$(qemu-img check "$image" 2>&1) || fail "qemu-img check: $out"
	echo "run-blk.sh: qemu-img check: clean"
fi
if [ -n "$check" ]; then
	raw="$image"
	if [ "$format" = qcow2 ]; then
		raw="$image.raw"
		qemu-img convert -q -f qcow2 -O raw "$image" "$raw" || fail "qemu-img convert"
	fi
	"$tool" check "$raw" "$check" || fail "blkpattern check (seed $check)"
	[ "$raw" != "$image" ] && rm -f "$raw"
fi
rm -f "$image" "$image.base"
echo "run-blk.sh: passed"
exit 0
