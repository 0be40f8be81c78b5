#!/usr/bin/env bash
# Boots the small test kernel (build-kernel.sh) under drover-vmm with its
# root on a virtio-blk disk, and checks from the kernel's own log and from
# the image afterwards that Linux's virtio drivers found, read and wrote the
# disk. lib.sh says how a kernel without user space ends here.
#
#   raw-smp   raw image, root=/dev/vda rw, --cpus 2: both CPUs brought up,
#             the disk probed with its capacity, ext2 mounted read-write,
#             /sbin/init read from it; afterwards the superblock shows
#             Linux's mount (mount count 0 -> 1, state "not clean", as ext2
#             leaves a mounted file system) and e2fsck -fn finds no error
#   qcow2     the same on a qcow2 image, 1 CPU; afterwards qemu-img check
#             finds it consistent, and the superblock read back through
#             qemu-img shows Linux's mount. Also the power button: once Linux
#             has found it ("ACPI: button: Power Button [PWRB]"),
#             system_powerdown on the control socket must reach Linux's
#             input layer as KEY_POWER (evbug logs the event: with no user
#             space, nothing else hears it)
#   readonly  raw image with readonly=on; the kernel is asked for a
#             read-write root (rw): only a disk that Linux sees as read-only
#             (VIRTIO_BLK_F_RO) makes it fall back to a read-only mount, so
#             "readonly" in the mount line is what shows the flag arrived
#             (with "ro" asked, the line would read the same without it).
#             The image is byte-identical afterwards. The kernel booted here
#             is a 50 MiB vmlinux: the test kernel with 42 MiB of unloaded
#             section added (as debug info makes a vmlinux that large)
#
# Every case stops the VM through its control socket (quit, exit status 4)
# once the last line came, and on nested PVM hosts checks that the int3
# exits were performed and counted (query-status, and drover-vmm's log).
#
#   DROVER_LINUX_BOOT_TIMEOUT=S  seconds for the kernel to reach the end
#                                (default 300; about 70 s on the build hosts)
#
# usage: boot-virtio.sh DROVER_VMM KERNEL_CACHE_DIR WORK_DIR CASE
set -euo pipefail

[ $# -eq 4 ] || { echo "usage: $0 DROVER_VMM KERNEL_CACHE_DIR WORK_DIR raw-smp|qcow2|readonly" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
VMM=$1
cache=$2
work=$3
case_name=$4
timeout=${DROVER_LINUX_BOOT_TIMEOUT:-300}
# shellcheck source=lib.sh
. "$here/lib.sh"

case $case_name in raw-smp|qcow2|readonly) ;; *) echo "unknown case '$case_name'" >&2; exit 2 ;; esac
trap end_vmm EXIT
trap 'exit 1' INT TERM
for tool in mke2fs dumpe2fs e2fsck qemu-img socat gcc readelf objcopy; do
	command -v "$tool" >/dev/null ||
		{ echo "'$tool' is missing: deploy/install-deps.sh installs it" >&2; exit 1; }
done

kernel=$("$here/build-kernel.sh" "$cache" | tail -n 1)
rm -rf "$work"
mkdir -p "$work"
log=$work/console.log
sock=$work/control.sock
image_mib=64
entry=$(make_root_image "$work" "$image_mib")
entry=${entry#0x}

fail() {
	echo "FAIL ($case_name): $*"
	if [ -f "$log" ]; then
		echo "--- last lines of the kernel log ($log):"
		kernel_messages "$log" | tail -n 25
	fi
	if [ -s "$log.vmm" ]; then
		echo "--- drover-vmm's messages:"
		tail -n 15 "$log.vmm"
	fi
	[ -n "${VMM_PID:-}" ] && kill -0 "$VMM_PID" 2>/dev/null && stop_vmm "$sock"
	exit 1
}

sb_field() {
	dumpe2fs -h "$1" 2>/dev/null | sed -n "s/^$2: *//p"
}

disk="path=$work/root.img"
cpus=1
case $case_name in
raw-smp)
	disk="$disk,format=raw"
	cpus=2
	;;
qcow2)
	qemu-img convert -f raw -O qcow2 "$work/root.img" "$work/root.qcow2"
	rm -f "$work/root.img"
	disk="path=$work/root.qcow2,format=qcow2"
	;;
readonly)
	disk="$disk,format=raw,readonly=on"
	head -c $(( 50 * 1024 * 1024 - $(stat -c %s "$kernel") )) /dev/zero >"$work/pad.bin"
	objcopy --add-section .drover_pad="$work/pad.bin" --set-section-flags .drover_pad=noload,readonly \
		"$kernel" "$work/vmlinux-50m"
	rm -f "$work/pad.bin"
	kernel=$work/vmlinux-50m
	[ "$(stat -c %s "$kernel")" -ge $(( 50 * 1024 * 1024 )) ] || fail "padding the kernel to 50 MiB did not work"
	before_sum=$(sha256sum <"$work/root.img")
	;;
esac
[ "$case_name" = qcow2 ] || { [ "$(sb_field "$work/root.img" "Mount count")" = 0 ] || fail "mke2fs made a used image"; }

mount_ro=""
[ "$case_name" = readonly ] && mount_ro=" readonly"
expect=("Linux version 6\.1\..*")
[ "$cpus" = 2 ] && expect+=("smp: Brought up 1 node, 2 CPUs" "smpboot: Total of 2 processors activated .*")
expect+=(
	"$(virtio_blk_probe_line virtio0 vda $(( image_mib * 1024 * 1024 )))"
	"VFS: Mounted root \(ext2 filesystem\)$mount_ro on device [0-9]+:0\."
	"Run /sbin/init as init process"
	"traps: init\[1\] trap invalid opcode ip:$entry sp:[0-9a-f]+ error:0 in init\[$entry\+[0-9a-f]+\]"
	"Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000004"
)

echo "$case_name: booting $(basename "$kernel") ($(( $(stat -c %s "$kernel") >> 20 )) MiB) with --cpus $cpus --disk $disk"
cmdline=$(linux_cmdline rw)
# evbug logs at debug level
[ "$case_name" = qcow2 ] && cmdline="$cmdline loglevel=8"
start_vmm "$log" "$sock" --kernel "$kernel" --memory 128M --cpus "$cpus" \
	--cmdline "$cmdline" --disk "$disk"
if [ "$case_name" = qcow2 ]; then
	# GED0's interrupt -> _EVT -> Notify (PWRB, 0x80) -> the button driver
	# -> input event 1 (EV_KEY), code 116 (KEY_POWER), pressed.
	wait_for_lines "$log" "$timeout" "ACPI: button: Power Button \[PWRB\]" \
		"evbug: Connected device: input[0-9]+ \(Power Button at PNP0C0C/button/input[0-9]+\)" ||
		fail "Linux did not find the power button (above)"
	reply=$(qmp "$sock" system_powerdown || true)
	case $reply in *'"return"'*) ;; *) fail "system_powerdown: $reply" ;; esac
	wait_for_lines "$log" "$timeout" \
		"evbug: Event\. Dev: input[0-9]+, Type: 1, Code: 116, Value: 1" ||
		fail "the power button press did not reach Linux (above)"
fi
wait_for_lines "$log" "$timeout" "${expect[@]}" || fail "a kernel line is missing (above)"
status=$(qmp "$sock" query-status || true)
stop_vmm "$sock"
echo "root mounted $(line_time "$log" "VFS: Mounted root .*") s after exec; init killed $(line_time "$log" "Kernel panic .*") s after exec"
echo "query-status: $status"
[ "$VMM_STATUS" = 4 ] || fail "drover-vmm exited with status $VMM_STATUS after quit, not 4"

# Lines that must not appear anywhere: the disk failing Linux, or the kernel
# tripping over something drover-vmm gave it.
bad=$(kernel_messages "$log" | grep -E 'I/O error|EXT2-fs \(vda\): error|^BUG: |Oops|^WARNING: |virtio.*(fail|error)' || true)
[ -z "$bad" ] || fail "the kernel reported: $bad"

if [ -d /sys/module/kvm_pvm ]; then
	# Linux's int3 self test runs on every boot; this host's KVM hands it to
	# the VMM.
	int3=$(echo "$status" | sed -n 's/.*"int3": *\([0-9]*\).*/\1/p')
	[ "${int3:-0}" -ge 1 ] || fail "query-status counted no int3 ($status)"
	grep -q "instructions emulated for the guest: int3 $int3," "$log.vmm" ||
		fail "drover-vmm's log has no count of emulated instructions (int3 $int3)"
fi

case $case_name in
raw-smp|qcow2)
	img=$work/root.img
	if [ "$case_name" = qcow2 ]; then
		qemu-img check -q "$work/root.qcow2" || fail "qemu-img check finds $work/root.qcow2 inconsistent"
		qemu-img convert -f qcow2 -O raw "$work/root.qcow2" "$work/readback.img"
		img=$work/readback.img
	fi
	count=$(sb_field "$img" "Mount count")
	state=$(sb_field "$img" "Filesystem state")
	[ "$count" = 1 ] || fail "superblock mount count is '$count' after Linux mounted it read-write, not 1"
	[ "$state" = "not clean" ] ||
		fail "superblock state is '$state': Linux's read-write mount marks it 'not clean'"
	e2fsck -fn "$img" >"$work/e2fsck.out" 2>&1 ||
		fail "e2fsck -fn finds errors after Linux wrote the disk: $(tail -n 5 "$work/e2fsck.out")"
	echo "superblock after the boot: mount count $count, state '$state'; e2fsck -fn: no errors"
	;;
readonly)
	[ "$(sha256sum <"$work/root.img")" = "$before_sum" ] || fail "the read-only image changed"
	echo "image unchanged; Linux fell back to a read-only mount"
	rm -f "$kernel"
	;;
esac
echo "PASS ($case_name)"
