#!/usr/bin/env bash
# Boot benchmark: drover-vmm and QEMU (microvm, the peer) boot the same PVH
# test guest (tests/guests/hello.elf); for each, the median over N runs of the
# time from exec to the guest's first serial line and to process exit, and
# the ratio. Then each VMM's own memory: its resident set minus the guest
# RAM the guest touched (the VM kept running with hello.ticks).
#   tests/bench/boot.sh [BUILD_DIR]      (default: build/)   RUNS=20
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$root/build}
runs=${RUNS:-20}
vmm=$build/vmm/drover-vmm
guest=$build/tests/guests/hello.elf
boottime=$build/tests/bench/boottime
for f in "$vmm" "$guest" "$boottime"; do
	[ -x "$f" ] || [ -f "$f" ] || { echo "boot.sh: $f missing: build first" >&2; exit 1; }
done
command -v qemu-system-x86_64 >/dev/null || { echo "boot.sh: qemu-system-x86_64 missing" >&2; exit 1; }

drover_cmd=("$vmm" --kernel "$guest" --memory 256M --serial stdio)
qemu_cmd=(qemu-system-x86_64 -machine microvm,accel=kvm -cpu qemu64,-pni -m 256
	-kernel "$guest" -nodefaults -no-user-config -nographic -serial stdio
	-device isa-debug-exit,iobase=0x501,iosize=2)

field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p"; }

echo "== boot: $runs runs each, same guest ($guest), 256 MiB, 1 vCPU"
d=$("$boottime" -n "$runs" -- "${drover_cmd[@]}" </dev/null)
q=$("$boottime" -n "$runs" -- "${qemu_cmd[@]}" </dev/null)
d_first=$(echo "$d" | field first_line_ms_median); d_exit=$(echo "$d" | field exit_ms_median)
q_first=$(echo "$q" | field first_line_ms_median); q_exit=$(echo "$q" | field exit_ms_median)
printf '%-34s %12s %12s %8s\n' "" drover-vmm qemu ratio
printf '%-34s %9.2f ms %9.2f ms %7.1fx\n' "exec -> first serial line (median)" "$d_first" "$q_first" \
	"$(echo "$q_first / $d_first" | bc -l)"
printf '%-34s %9.2f ms %9.2f ms %7.1fx\n' "exec -> process exit (median)" "$d_exit" "$q_exit" \
	"$(echo "$q_exit / $d_exit" | bc -l)"

# Resident memory of a running VMM minus the guest RAM it has touched: the
# guest RAM is the one anonymous mapping of (at least) 256 MiB.
overhead_kib() {
	local pid=$1 total touched
	total=$(awk '/^Rss:/ {print $2}' "/proc/$pid/smaps_rollup")
	touched=$(awk '/^[0-9a-f]+-[0-9a-f]+ / {size=0} /^Size:/ {size=$2} /^Rss:/ {if (size >= 262144) print $2}' \
		"/proc/$pid/smaps" | sort -n | tail -1)
	echo "$total ${touched:-0}"
}
running=""
trap '[ -n "$running" ] && kill $running 2>/dev/null' EXIT
measure() {
	local name=$1; shift
	"$@" </dev/null >/dev/null 2>&1 &
	local pid=$! total touched
	running=$pid
	sleep 1
	read -r total touched < <(overhead_kib "$pid")
	kill "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	running=""
	printf '%-12s RSS %7d KiB, guest RAM touched %7d KiB, VMM overhead %7d KiB (%.2f MiB)\n' \
		"$name" "$total" "$touched" "$((total - touched))" "$(echo "($total - $touched) / 1024" | bc -l)"
}
echo
echo "== memory: the guest keeps running (hello.ticks), 256 MiB"
measure drover-vmm "$vmm" --kernel "$guest" --memory 256M --serial none --cmdline hello.ticks
measure qemu qemu-system-x86_64 -machine microvm,accel=kvm -cpu qemu64,-pni -m 256 \
	-kernel "$guest" -nodefaults -no-user-config -display none -monitor none -serial null \
	-append hello.ticks -device isa-debug-exit,iobase=0x501,iosize=2
