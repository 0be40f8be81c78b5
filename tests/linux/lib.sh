# Shared by the small-kernel tests (boot-virtio.sh) and the benchmark
# (tests/bench/linux-boot.sh): the root image, the command line, starting
# drover-vmm with a timestamped console log, waiting for kernel lines, and
# stopping the VM through its control socket. Sourced, not run.
#
# The kernel (build-kernel.sh) has no user space that can run on nested PVM
# hosts (ENVIRONMENT.md), so everything is read from its own log. Its root
# image holds one known file, /sbin/init: a static ELF whose only instruction
# is ud2. Linux mounts the disk, reads the ELF from it, enters it, and the
# SIGILL kills init: "Attempted to kill init! exitcode=0x00000004" is the
# proof that the file's bytes came through virtio-blk, and the panic is a
# clean end. The kernel then spins in its panic loop, a whole host core on
# nested hosts, until the VM is stopped: the tests stop it by its control
# socket, a trap (end_vmm) by its PID if the script dies first, and panic=60
# makes the kernel reset the VM (--on-reboot exit) should both be gone.

# The command line: the serial console, the root disk, and on nested PVM
# hosts what the guest wrongly sees there (ENVIRONMENT.md): XSAVE and
# FSGSBASE, and the CPUID bits of SSE4/AVX/BMI/POPCNT/SMAP/RDRAND/PCID...
# rodata=off skips write-protecting the kernel, ~6 s of emulated page-table
# work after the root mount that these tests do not look at.
linux_cmdline() {
	local root_opts=$1
	local cl="console=ttyS0 root=/dev/vda $root_opts rodata=off panic=60"

	if [ -d /sys/module/kvm_pvm ]; then
		cl="$cl noxsave nofsgsbase"
		cl="$cl clearcpuid=129,137,140,145,147,148,150,151,153,156,157,158,197,291,293,296,298,304,306,307,308,311,312,317,514,534"
	fi
	echo "$cl"
}

# make_root_image DIR SIZE_MIB: DIR/root.img, ext2, holding /sbin/init (the
# ud2 ELF); prints the ELF's entry point (0x-hex), which the kernel names
# when init traps.
make_root_image() {
	local dir=$1 size=$2

	rm -rf "$dir/rootfs" "$dir/root.img"
	mkdir -p "$dir/rootfs/sbin"
	printf '.globl _start\n_start:\n\tud2\n' >"$dir/init.S"
	gcc -nostdlib -static -no-pie -Wl,--build-id=none -o "$dir/rootfs/sbin/init" "$dir/init.S" ||
		{ echo "building the ud2 init failed" >&2; return 1; }
	mke2fs -q -t ext2 -L drover-root -d "$dir/rootfs" -F "$dir/root.img" "${size}M" >/dev/null ||
		{ echo "mke2fs failed" >&2; return 1; }
	LC_ALL=C readelf -h "$dir/rootfs/sbin/init" | sed -n 's/^ *Entry point address: *//p'
}

# Linux's string_get_size() (lib/string_helpers.c): how the kernel prints a
# capacity, "67.1 MB" (divisor 1000) or "64.0 MiB" (1024). For sizes below
# 2^32 blocks, as the tests' images are.
kernel_size_string() {
	local blocks=$1 blk=$2 div=$3
	local size=$(( blocks * blk )) rem=0 i=0 j=0 sf tmp=""
	local -a r=(500 50 5) u10=(B kB MB GB TB) u2=(B KiB MiB GiB TiB)

	while [ "$size" -ge "$div" ]; do
		rem=$(( size % div )); size=$(( size / div )); i=$(( i + 1 ))
	done
	sf=$size
	while [ $(( sf * 10 )) -lt 1000 ]; do sf=$(( sf * 10 )); j=$(( j + 1 )); done
	[ "$div" = 1024 ] && rem=$(( (rem * 1000) >> 10 ))
	rem=$(( rem + r[j] ))
	if [ "$rem" -ge 1000 ]; then rem=$(( rem - 1000 )); size=$(( size + 1 )); fi
	if [ "$j" -gt 0 ]; then tmp=$(printf '.%03u' "$rem"); tmp=${tmp:0:j+1}; fi
	if [ "$div" = 1024 ]; then echo "$size$tmp ${u2[i]}"; else echo "$size$tmp ${u10[i]}"; fi
}

# The line virtio_blk prints when it probes a disk of that many bytes.
virtio_blk_probe_line() {
	local dev=$1 name=$2 bytes=$3
	local n=$(( bytes / 512 ))

	echo "virtio_blk $dev: \\[$name\\] $n 512-byte logical blocks \\($(kernel_size_string "$n" 512 1000)/$(kernel_size_string "$n" 512 1024)\\)"
}

# start_vmm LOG SOCKET ARGS...: starts drover-vmm (VMM) in the background
# with its console on LOG, each line prefixed with the host time it arrived
# at (EPOCHREALTIME), and its own messages on LOG.vmm. Sets VMM_PID and
# VMM_START (the host time just before exec).
start_vmm() {
	local log=$1 sock=$2
	shift 2
	rm -f "$log" "$log.vmm" "$sock"
	VMM_START=$EPOCHREALTIME
	"$VMM" --serial stdio --control "$sock" --log-level info --on-reboot exit "$@" \
		</dev/null 2>"$log.vmm" \
		> >(while IFS= read -r line; do printf '%s %s\n' "$EPOCHREALTIME" "$line"; done >"$log") &
	VMM_PID=$!
}

# The kernel's message on a log line: without the host time and the
# kernel's own "[    1.234567] " stamp, and without the serial line's CR.
kernel_messages() {
	sed -e 's/^[0-9.]* //' -e 's/\r$//' -e 's/^\[ *[0-9]*\.[0-9]*\] //' "$1"
}

# wait_for_lines LOG TIMEOUT PATTERN...: waits until each extended regular
# expression matches a whole kernel message, in the order given; returns 1
# (saying which one is missing) when drover-vmm ends or TIMEOUT seconds
# pass first.
wait_for_lines() {
	local log=$1 timeout=$2
	shift 2
	local deadline=$(( SECONDS + timeout )) missing

	while missing=$(first_missing_line "$log" "$@") && [ -n "$missing" ]; do
		if ! kill -0 "$VMM_PID" 2>/dev/null; then
			echo "drover-vmm ended before the kernel printed a line matching: $missing"
			return 1
		fi
		# Nothing comes after a panic but the reset that panic=60 asks for.
		if kernel_messages "$log" | grep '^Kernel panic - not syncing' >/dev/null; then
			missing=$(first_missing_line "$log" "$@")
			[ -n "$missing" ] || return 0
			echo "the kernel panicked before it printed a line matching: $missing"
			return 1
		fi
		if [ "$SECONDS" -ge "$deadline" ]; then
			echo "no line matching this within ${timeout} s: $missing"
			return 1
		fi
		sleep 0.5
	done
}

# Prints the first PATTERN that has no match after the previous one's line,
# nothing when all matched. Patterns go in through ARGV: awk would rewrite
# the backslashes of a -v assignment.
first_missing_line() {
	local log=$1
	shift
	if [ ! -s "$log" ]; then
		echo "$1"
		return 0
	fi
	kernel_messages "$log" | awk '
		BEGIN { n = ARGC - 1; for (i = 1; i <= n; i++) pat[i] = ARGV[i]; ARGC = 1; k = 1 }
		k <= n && $0 ~ ("^" pat[k] "$") { k++ }
		END { if (k <= n) print pat[k] }' "$@"
}

# The host time (seconds since exec) at which the first kernel message
# matching PATTERN arrived; nothing if none did. (Reading to the end: an
# early exit would fail the pipeline under pipefail.)
line_time() {
	sed -e 's/\r$//' "$1" | awk '
		BEGIN { p = ARGV[1]; t0 = ARGV[2]; ARGC = 1 }
		{ t = $1; sub(/^[0-9.]* /, ""); sub(/^\[ *[0-9]*\.[0-9]*\] /, "") }
		!done && $0 ~ ("^" p "$") { printf "%.2f\n", t - t0; done = 1 }' "$2" "$VMM_START"
}

# For an EXIT trap: kills drover-vmm by its PID if it is still running.
end_vmm() {
	if [ -n "${VMM_PID:-}" ] && kill -0 "$VMM_PID" 2>/dev/null; then
		kill -KILL "$VMM_PID" 2>/dev/null || true
	fi
}

# qmp SOCKET COMMAND: one command on the control socket; prints the reply.
qmp() {
	printf '{"execute": "%s"}\n' "$2" | socat -t 1 - "UNIX-CONNECT:$1" 2>/dev/null |
		grep -m1 '"return"\|"error"'
}

# stop_vmm SOCKET: quit through the control socket, then the PID if
# drover-vmm is still there after 20 s; sets VMM_STATUS.
stop_vmm() {
	local sock=$1 i

	qmp "$sock" quit >/dev/null || true
	for i in $(seq 200); do
		kill -0 "$VMM_PID" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$VMM_PID" 2>/dev/null; then
		echo "drover-vmm did not end 20 s after quit: killing PID $VMM_PID" >&2
		kill -KILL "$VMM_PID" 2>/dev/null || true
	fi
	VMM_STATUS=0
	wait "$VMM_PID" || VMM_STATUS=$?
	VMM_PID=""
}
