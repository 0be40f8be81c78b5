#!/usr/bin/env bash
# virtio-blk benchmark: the blkbench guest (random 4 KiB reads and writes at
# queue depths 1 and 32, sequential 1 MiB reads and writes) under drover-vmm
# and under QEMU (virtio-blk-pci on microvm), on the same image files with
# the same cache mode; prints IOPS and MB/s per row and the ratio
# drover/QEMU (above 1: drover faster).
#   tests/bench/blk.sh [BUILD_DIR]    MS=3000 per row, SIZE=1G, CACHES="none writeback"
#   QEMU_AIO=threads|io_uring|native  QEMU's aio= (default: QEMU's own, threads)
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$root/build}
ms=${MS:-3000}
size=${SIZE:-1G}
caches=${CACHES:-none writeback}
vmm=$build/vmm/drover-vmm
guest=$build/tests/guests/blkbench.elf
work=$(mktemp -d /tmp/drover-blkbench.XXXXXX)
trap 'rm -rf "$work"' EXIT
[ -x "$vmm" ] && [ -f "$guest" ] || { echo "blk.sh: build first ($vmm, $guest)" >&2; exit 1; }

# Images fully allocated, so that reads hit data and writes overwrite it.
qemu-img create -q -f raw -o preallocation=full "$work/disk.raw" "$size"
qemu-img create -q -f qcow2 -o preallocation=full "$work/disk.qcow2" "$size"

run_qemu() {  # format cache
	local aio=""
	[ -n "${QEMU_AIO:-}" ] && aio=",aio=$QEMU_AIO"
	qemu-system-x86_64 -machine microvm,accel=kvm,pcie=on,acpi=on -cpu qemu64,-pni -m 256 \
		-kernel "$guest" -nodefaults -no-user-config -nographic -serial stdio \
		-device isa-debug-exit,iobase=0x501,iosize=2 \
		-drive "if=none,id=d0,file=$work/disk.$1,format=$1,cache=$2$aio" \
		-device virtio-blk-pci,drive=d0,disable-legacy=on -append "blkbench.ms=$ms" \
		</dev/null 2>&1 || true
}
run_drover() {  # format cache
	"$vmm" --kernel "$guest" --memory 256M --serial stdio --cmdline "blkbench.ms=$ms" \
		--disk "path=$work/disk.$1,format=$1,cache=$2" </dev/null 2>&1 || true
}
row() {  # output row field
	echo "$1" | awk -v r="$2" -v f="$3" '$2 == r || ($2 " " $3) == r {
		for (i = 1; i <= NF; i++) if ($i == f) { print $(i + 1); exit } }'
}

printf '%-8s %-6s %-16s %12s %12s %7s %11s %11s %7s\n' format cache row \
	"drover iops" "qemu iops" ratio "drover MB/s" "qemu MB/s" ratio
for format in raw qcow2; do
	for cache in $caches; do
		q=$(run_qemu "$format" "$cache" | grep '^blkbench: ')
		d=$(run_drover "$format" "$cache" | grep '^blkbench: ' || true)
		for r in "randread qd1" "randread qd32" "randwrite qd1" "randwrite qd32" \
			 "seqread qd4" "seqwrite qd4"; do
			qi=$(echo "$q" | grep "^blkbench: $r " | sed 's/.* iops \([0-9]*\).*/\1/')
			qm=$(echo "$q" | grep "^blkbench: $r " | sed 's/.* mbps \([0-9.]*\).*/\1/')
			di=$(echo "$d" | grep "^blkbench: $r " | sed 's/.* iops \([0-9]*\).*/\1/')
			dm=$(echo "$d" | grep "^blkbench: $r " | sed 's/.* mbps \([0-9.]*\).*/\1/')
			ri="n/a"; rm="n/a"
			if [ -n "$di" ] && [ -n "$qi" ] && [ "$qi" != 0 ]; then
				ri=$(echo "scale=2; $di / $qi" | bc)
				rm=$(echo "scale=2; $dm / $qm" | bc)
			fi
			printf '%-8s %-6s %-16s %12s %12s %7s %11s %11s %7s\n' "$format" "$cache" "$r" \
				"${di:-n/a}" "${qi:-n/a}" "$ri" "${dm:-n/a}" "${qm:-n/a}" "$rm"
		done
	done
done
