#!/usr/bin/env bash
# A tour of drover-vmm and drover-img on this machine (deploy/quickstart.sh
# shows the cluster): the project's test guests booted (PVH, the 64-bit
# Linux boot protocol, a bzImage), SMP, RAM above 4 GiB, and a running guest
# driven through the control socket; disk images made and checked with
# drover-img and used by a guest through virtio-blk.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build=${DROVER_BUILD_DIR:-$root/build}
work=$(mktemp -d /tmp/drover-quickstart.XXXXXX)
vm_pid=""
cleanup() {
	if [ -n "$vm_pid" ] && kill -0 "$vm_pid" 2>/dev/null; then
		kill "$vm_pid" 2>/dev/null || true
		wait "$vm_pid" 2>/dev/null || true
	fi
	rm -rf "$work"
}
trap cleanup EXIT

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

say "Installing dependencies (Debian packages)"
"$root/deploy/install-deps.sh"

say "Building drover"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j "$(nproc)" -- --no-print-directory >/dev/null
vmm=$build/vmm/drover-vmm
guests=$build/tests/guests
echo "drover-vmm: $vmm"

boot() {
	# boot DESCRIPTION drover-vmm-args...: runs a guest, shows its output and how it ended
	local what=$1; shift
	say "$what"
	printf '$ drover-vmm %s\n' "$*"
	local start end status=0
	start=$(date +%s%N)
	"$vmm" "$@" </dev/null || status=$?
	end=$(date +%s%N)
	printf -- '-> exit status %d after %d ms' "$status" $(( (end - start) / 1000000 ))
	case $status in
		0) echo " (guest powered off)";;
		2) echo " (guest crashed)";;
		3) echo " (guest reset, --on-reboot exit)";;
		4) echo " (stopped from the host)";;
		*) if [ "$status" -ge 16 ]; then echo " (guest's debug-exit code $((status - 16)))"; else echo; fi;;
	esac
}

boot "A PVH guest prints a line and exits through the debug port" \
	--kernel "$guests/hello.elf" --memory 64M
boot "The same guest entered through its 64-bit ELF entry (Linux 64-bit boot protocol)" \
	--kernel "$guests/hello.elf" --memory 64M --boot-protocol linux64
boot "The same guest as a Linux bzImage" \
	--kernel "$guests/hello.bzImage" --memory 64M
head -c 300000 /dev/urandom > "$work/initrd.img"
size=$(stat -c %s "$work/initrd.img")
crc=$(gzip -c "$work/initrd.img" | tail -c 8 | od -An -tx4 -N4 | tr -d ' ')
boot "bootinfo checks its command line, memory map and initrd" \
	--kernel "$guests/bootinfo.elf" --memory 5G --initrd "$work/initrd.img" \
	--cmdline "bootinfo.mem_mib=5120 bootinfo.initrd_size=$size bootinfo.initrd_crc32=$crc"
boot "smp: every vCPU checks in" --kernel "$guests/smp.elf" --memory 64M --cpus 4 \
	--cmdline "smp.expect=4"
boot "memtest writes and verifies all of 512 MiB of RAM" --kernel "$guests/memtest.elf" --memory 512M
boot "A guest that triple-faults ends with a report, not a hang" \
	--kernel "$guests/hello.elf" --memory 64M --cmdline hello.crash

say "Disks: drover-img makes a qcow2 image, a guest writes and checks it through virtio-blk"
img=$build/storage/drover-img
run "$img" create -f qcow2 -o cluster_size=64k "$work/disk.qcow2" 1G
boot "blkcheck drives virtio-blk itself: patterns, several queues, flush, discard, write-zeroes" \
	--kernel "$guests/blkcheck.elf" --memory 256M \
	--disk "path=$work/disk.qcow2,format=qcow2,cache=none,queues=2,serial=quickstart-disk,id=data" \
	--cmdline "blkcheck.seed=7 blkcheck.serial=quickstart-disk"
boot "A second VM on the same image finds what the first one wrote" \
	--kernel "$guests/blkcheck.elf" --memory 256M \
	--disk "path=$work/disk.qcow2,format=qcow2,readonly=on" --cmdline "blkcheck.seed=7 blkcheck.readonly"
run "$img" check "$work/disk.qcow2"
run "$img" snapshot -c after-blkcheck "$work/disk.qcow2"
run "$img" info "$work/disk.qcow2"
run "$img" convert -p -O raw "$work/disk.qcow2" "$work/disk.raw"
run "$img" compare "$work/disk.qcow2" "$work/disk.raw"

say "A running guest driven through the control socket (QMP-shaped JSON lines)"
sock=$work/vm.sock
"$vmm" --kernel "$guests/hello.elf" --cmdline hello.ticks --memory 64M --cpus 2 \
	--name quickstart --control "$sock" --serial "file:$work/serial.log" \
	--disk "path=$work/disk.raw,format=raw,id=data" </dev/null &
vm_pid=$!
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done
qmp() {
	printf '→ %s\n' "$1"
	printf '%s\n' "$1" | socat -t 0.3 - "UNIX-CONNECT:$sock" | sed -n '2,$p' | sed 's/^/← /'
}
qmp '{"execute": "query-status"}'
qmp '{"execute": "query-cpus"}'
qmp '{"execute": "query-block"}'
qmp '{"execute": "pause"}'
before=$(grep -c tick "$work/serial.log" || true); sleep 0.5
after=$(grep -c tick "$work/serial.log" || true)
echo "   ticks while paused: $before -> $after"
qmp '{"execute": "resume"}'
sleep 0.3
qmp '{"execute": "system-reset"}'
sleep 0.3
echo "   serial log: $(grep -c 'hello: hello' "$work/serial.log") boots, $(grep -c tick "$work/serial.log") ticks"
qmp '{"execute": "quit"}'
status=0; wait "$vm_pid" || status=$?; vm_pid=""
echo "-> exit status $status (quit)"

say "Done. deploy/quickstart.sh runs a cluster; deploy/test.sh runs the whole suite."
