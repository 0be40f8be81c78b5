#!/usr/bin/env bash
# Linux boot benchmark: the small test kernel (tests/linux/build-kernel.sh,
# built or taken from BUILD_DIR/linux-kernel) boots under drover-vmm with its
# root on a raw virtio-blk disk (ext2, root=/dev/vda ro); each run's time
# from exec to the kernel's "VFS: Mounted root" line (host clock, as the
# console line reaches drover-vmm's stdout; the kernel's own timestamps run
# several seconds behind on nested hosts), and the median over the runs. One
# run at a time, 1 vCPU, 128 MiB.
#
# There is no peer figure: QEMU stops at the kernel's int3 self test on the
# nested PVM build hosts (ENVIRONMENT.md). There, ring-0 code is emulated at
# about 1 us per instruction and the figure is tens of seconds; on a VT-x /
# AMD-V host a kernel this small should mount its root in well under a
# second (not measured here).
#   tests/bench/linux-boot.sh [BUILD_DIR]      (default: build/)   RUNS=3
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$root/build}
runs=${RUNS:-3}
VMM=$build/vmm/drover-vmm
[ -x "$VMM" ] || { echo "linux-boot.sh: $VMM missing: build first" >&2; exit 1; }
# shellcheck source=../linux/lib.sh
. "$root/tests/linux/lib.sh"

kernel=$("$root/tests/linux/build-kernel.sh" "$build/linux-kernel" | tail -n 1)
work=$(mktemp -d)
trap 'end_vmm; rm -rf "$work"' EXIT
trap 'exit 1' INT TERM
make_root_image "$work" 64 >/dev/null

mounts=()
echo "== Linux boot: $runs runs, $kernel, 128 MiB, 1 vCPU, root on raw virtio-blk"
for i in $(seq "$runs"); do
	start_vmm "$work/console.log" "$work/control.sock" --kernel "$kernel" --memory 128M \
		--cmdline "$(linux_cmdline ro)" --disk "path=$work/root.img,format=raw,readonly=on"
	if ! wait_for_lines "$work/console.log" 600 "VFS: Mounted root .*"; then
		stop_vmm "$work/control.sock"
		kernel_messages "$work/console.log" | tail -n 20
		exit 1
	fi
	m=$(line_time "$work/console.log" "VFS: Mounted root .*")
	stop_vmm "$work/control.sock"
	printf 'run %d: exec -> root mounted %7.2f s\n' "$i" "$m"
	mounts+=("$m")
done
median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
printf 'median of %d: exec -> root mounted %7.2f s\n' "$runs" "$(median "${mounts[@]}")"
