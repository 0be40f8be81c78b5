#!/bin/bash
# Crash safety of a qcow2 disk under a VMM killed half way (kill -9) while
# the blkcrash guest writes: after every kill, `qemu-img check` must find no
# corruption (leaks are allowed: exit status 0 or 3), and every byte the
# guest saw flushed ("blkcrash: durable N") must hold its pattern.
#
#   run-blkcrash.sh --vmm qemu|drover --tool BLKPATTERN --image FILE
#                   [--rounds N] [--cache MODE] [--cluster-size SIZE] -- VMM-COMMAND...
#
# VMM-COMMAND is the whole command line; {IMAGE} in it is replaced by the
# image path. Each round makes a fresh image, starts the VMM, waits until
# the guest has announced a random number of flushes (1..40) plus a random
# 0-30 ms, then kills it with SIGKILL.
set -u

vmm=""
tool=""
image=""
rounds=10
cluster="64K"
while [ $# -gt 0 ]; do
	case "$1" in
	--vmm) vmm="$2"; shift 2 ;;
	--tool) tool="$2"; shift 2 ;;
	--image) image="$2"; shift 2 ;;
	--rounds) rounds="$2"; shift 2 ;;
	--cluster-size) cluster="$2"; shift 2 ;;
	--) shift; break ;;
	*) echo "run-blkcrash.sh: unknown option '$1'" >&2; exit 2 ;;
	esac
done
[ -n "$vmm" ] && [ -x "$tool" ] && [ -n "$image" ] && [ $# -gt 0 ] || {
	sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//' >&2
	exit 2
}
command -v qemu-img >/dev/null || { echo "run-blkcrash.sh: qemu-img missing (qemu-utils)" >&2; exit 1; }

seed=$((RANDOM % 1000 + 1))
out=$image.out
raw=$image.raw
pid=""
trap '[ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; rm -f "$image" "$out" "$raw"' EXIT
mkdir -p "$(dirname "$image")"

for round in $(seq 1 "$rounds"); do
	rm -f "$image" "$raw"
	qemu-img create -q -f qcow2 -o cluster_size="$cluster" "$image" 128M || exit 1
	cmd=()
	for a in "$@"; do
		a=${a//\{IMAGE\}/$image}
		cmd+=("${a//\{SEED\}/$seed}")
	done
	"${cmd[@]}" </dev/null >"$out" 2>&1 &
	pid=$!
	want=$((RANDOM % 40 + 1))
	for _ in $(seq 3000); do
		n=$(grep -c '^blkcrash: durable' "$out")
		[ "$n" -ge "$want" ] && break
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.01
	done
	sleep "0.0$((RANDOM % 30))"
	kill -9 "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	pid=""
	if grep -q 'FAIL' "$out"; then
		echo "round $round: the guest failed:"; tail -n 20 "$out"; exit 1
	fi
	# A kill can cut the last line short: only complete lines count.
	if [ -n "$(tail -c 1 "$out")" ]; then
		sed -i '$d' "$out"
	fi
	durable=$(grep '^blkcrash: durable' "$out" | tail -n 1 | awk '{print $3}')
	# Killed before the first flush (a slow start on a busy host): nothing
	# is promised, but the image must still be consistent.
	durable=${durable:-0}
	check=$(qemu-img check "$image" 2>&1)
	rc=$?
	if [ "$rc" != 0 ] && [ "$rc" != 3 ]; then
		echo "round $round: qemu-img check exited $rc after the kill ($durable bytes durable):"
		echo "$check"
		exit 1
	fi
	leaks=$(echo "$check" | sed -n 's/^\([0-9]*\) leaked clusters.*/\1/p')
	qemu-img convert -O raw "$image" "$raw" || exit 1
	if ! "$tool" check-prefix "$raw" "$seed" "$durable" >/dev/null; then
		echo "round $round: flushed data lost:"
		"$tool" check-prefix "$raw" "$seed" "$durable"
		exit 1
	fi
	echo "round $round: killed after $durable durable bytes; check: ${leaks:-0} leaked clusters, no corruption; flushed data intact"
done
echo "run-blkcrash.sh: $rounds rounds passed ($vmm)"
