#!/bin/bash
# Runs a VMM with a test guest and checks what the guest printed.
#
#   run-guest.sh [options] -- COMMAND [ARGS...]
#
#   --expect FILE       an expectation file (repeatable): one extended regular
#                       expression per line (blank lines and lines starting
#                       with '#' skipped); the lines must match the command's
#                       standard output (the guest's serial console) in order.
#                       Each file is matched on its own.
#   --status N          the exit status the command must end with (default 0)
#   --timeout SEC       kill the command after SEC seconds (default 30)
#   --until-match       for guests that never stop: end the command (SIGTERM)
#                       once every expectation matched; its status is then
#                       not checked
#   --input PROMPT TEXT once the output contains PROMPT (a fixed string), type
#                       TEXT and a newline on the command's standard input
#                       (earlier, a guest initialising its UART would flush
#                       it); without it, stdin is /dev/null
#   --initrd FILE SIZE  first write SIZE random bytes to FILE, and replace
#                       {INITRD_SIZE} and {INITRD_CRC32} in ARGS by its size
#                       and CRC-32 (read from gzip's trailer, 0x-hex)
#
# On failure it says which expectation was missing or which status came,
# and shows the last 30 lines of output.
set -u

usage() {
	sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//' >&2
	exit 2
}

expects=()
status=0
timeout=30
until_match=0
initrd=""
initrd_size=""
input=""
prompt=""
has_input=0
while [ $# -gt 0 ]; do
	case "$1" in
	--expect) expects+=("$2"); shift 2 ;;
	--status) status="$2"; shift 2 ;;
	--timeout) timeout="$2"; shift 2 ;;
	--until-match) until_match=1; shift ;;
	--initrd) initrd="$2"; initrd_size="$3"; shift 3 ;;
	--input) prompt="$2"; input="$3"; has_input=1; shift 3 ;;
	--) shift; break ;;
	*) echo "run-guest.sh: unknown option '$1'" >&2; usage ;;
	esac
done
[ $# -gt 0 ] || usage
cmd=("$@")

if ! command -v "${cmd[0]}" >/dev/null 2>&1; then
	echo "run-guest.sh: '${cmd[0]}' not found (QEMU comes from Debian's qemu-system-x86)" >&2
	exit 1
fi
for f in "${expects[@]}"; do
	[ -r "$f" ] || { echo "run-guest.sh: expectation file '$f' not readable" >&2; exit 2; }
done

if [ -n "$initrd" ]; then
	mkdir -p "$(dirname "$initrd")"
	head -c "$initrd_size" /dev/urandom >"$initrd" || exit 1
	size=$(stat -c %s "$initrd")
	crc=$(gzip -c "$initrd" | tail -c 8 | od -An -tx4 -N4 | tr -d ' \n')
	for i in "${!cmd[@]}"; do
		cmd[$i]=${cmd[$i]//\{INITRD_SIZE\}/$size}
		cmd[$i]=${cmd[$i]//\{INITRD_CRC32\}/0x$crc}
	done
fi

out=$(mktemp)
err=$(mktemp)
trap 'rm -f "$out" "$err"' EXIT

# check_expectations QUIET: 0 when every file matches in order; otherwise
# names the first missing line (unless QUIET).
check_expectations() {
	local quiet=$1 f pat i n
	local -a lines
	mapfile -t lines < <(tr -d '\r' <"$out")
	n=${#lines[@]}
	for f in "${expects[@]}"; do
		i=0
		while IFS= read -r pat || [ -n "$pat" ]; do
			[ -z "$pat" ] && continue
			[ "${pat:0:1}" = "#" ] && continue
			while [ "$i" -lt "$n" ] && ! [[ ${lines[$i]} =~ $pat ]]; do
				i=$((i + 1))
			done
			if [ "$i" -ge "$n" ]; then
				[ "$quiet" = 1 ] || echo "run-guest.sh: $(basename "$f"): no line matching '$pat' (in order)"
				return 1
			fi
			i=$((i + 1))
		done <"$f"
	done
	return 0
}

show_output() {
	echo "---- last 30 lines of output ----"
	tr -d '\r' <"$out" | tail -n 30
	if [ -s "$err" ]; then
		echo "---- last 30 lines of standard error ----"
		tail -n 30 "$err"
	fi
}

echo "run-guest.sh: ${cmd[*]}"
start=$(date +%s%N)
if [ "$has_input" = 1 ]; then
	# Through a FIFO held open until the end, so that the VMM never sees
	# the end of its input (QEMU's stdio would take that as a hang-up).
	fifo=$(mktemp -u)
	mkfifo "$fifo"
	trap 'rm -f "$out" "$err" "$fifo"' EXIT
	timeout -k 5 "$timeout" "${cmd[@]}" <"$fifo" >"$out" 2>"$err" &
	pid=$!
	exec 3>"$fifo"
	while kill -0 "$pid" 2>/dev/null && ! grep -qF -- "$prompt" "$out"; do
		sleep 0.02
	done
	printf '%s\n' "$input" >&3
else
	timeout -k 5 "$timeout" "${cmd[@]}" </dev/null >"$out" 2>"$err" &
	pid=$!
fi
if [ "$until_match" = 1 ]; then
	while kill -0 "$pid" 2>/dev/null; do
		if check_expectations 1; then
			kill -TERM "$pid" 2>/dev/null
			break
		fi
		sleep 0.05
	done
fi
wait "$pid"
rc=$?
[ "$has_input" = 1 ] && exec 3>&-
ms=$((($(date +%s%N) - start) / 1000000))

fail=0
if [ "$until_match" = 1 ]; then
	if ! check_expectations 0; then
		[ "$rc" = 124 ] && echo "run-guest.sh: timed out after ${timeout} s"
		fail=1
	fi
else
	if [ "$rc" = 124 ]; then
		echo "run-guest.sh: timed out after ${timeout} s"
		fail=1
	elif [ "$rc" != "$status" ]; then
		echo "run-guest.sh: exit status $rc, expected $status"
		fail=1
	fi
	check_expectations 0 || fail=1
fi
if [ "$fail" = 1 ]; then
	show_output
	echo "run-guest.sh: FAILED after ${ms} ms"
	exit 1
fi
tr -d '\r' <"$out"
echo "run-guest.sh: passed in ${ms} ms"
exit 0
