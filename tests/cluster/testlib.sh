# What the cluster tests share: a cluster brought up in a fresh work
# directory, torn down on exit (kept, with its logs, when a test fails),
# and checks that say what was wrong.
#
#   cluster_test_begin NHOSTS      (BUILD_DIR is $1 of the test script)
#   check DESCRIPTION CMD...       CMD must succeed
#   wait_for SECONDS DESCRIPTION 'CODE'   shell CODE (evaluated anew each
#                                  time) must succeed within SECONDS
#   vm_field NAME FIELD            a field of `drover -o json vm show NAME`
#   host_field NAME FIELD
set -uo pipefail

. "$(dirname "${BASH_SOURCE[0]}")/cluster.sh"

TEST_NAME=$(basename "$0" .sh)
TEST_FAILED=0

fail() {
	echo "$TEST_NAME: FAILED: $*" >&2
	TEST_FAILED=1
	exit 1
}

_test_end() {
	local status=$?
	[ "$TEST_FAILED" = 1 ] && status=1
	if [ "$status" != 0 ] && [ -n "$DROVER_WORK" ]; then
		echo "---- droverd.log (last 30 lines)" >&2
		tail -30 "$DROVER_WORK/droverd.log" >&2 2>/dev/null
		for log in "$DROVER_WORK"/h*/agent.log; do
			echo "---- $log (last 15 lines)" >&2
			tail -15 "$log" >&2
		done
	fi
	drover_cluster_stop
	if [ "$status" = 0 ]; then
		rm -rf "$DROVER_WORK"
		echo "$TEST_NAME: passed"
	else
		echo "$TEST_NAME: the work directory stays at $DROVER_WORK" >&2
	fi
	exit "$status"
}

cluster_test_begin() {
	local build=$1 n=$2
	if [ "$(id -u)" != 0 ]; then
		echo "$TEST_NAME: skipped: network namespaces need root"
		exit 77
	fi
	if [ ! -w /dev/kvm ]; then
		echo "$TEST_NAME: skipped: /dev/kvm is not usable"
		exit 77
	fi
	trap _test_end EXIT
	# A signal (ctest's timeout, a closed pipe) ends the test through EXIT too.
	trap 'exit 1' INT TERM HUP PIPE
	drover_cluster_start "$build" "$(mktemp -d /tmp/drover-$TEST_NAME.XXXXXX)" "$n" ||
		fail "the cluster did not come up"
}

check() {
	local what=$1
	shift
	"$@" || fail "$what (command: $*)"
}

wait_for() {
	local secs=$1 what=$2 code=$3 i
	for i in $(seq $((secs * 5))); do
		eval "$code" >/dev/null 2>&1 && return 0
		sleep 0.2
	done
	fail "$what: not within $secs s ($code)"
}

vm_field() {
	drover -o json vm show "$1" | json_fields "$2"
}

host_field() {
	drover -o json host show "$1" | json_fields "$2"
}

# The number of items of a JSON array on stdin.
json_len() {
	python3 -c 'import json, sys; print(len(json.load(sys.stdin)))'
}

# The number of "tick" lines VM NAME's console shows on its host.
vm_ticks() {
	local id host
	read -r id host < <(drover -o json vm show "$1" | json_fields id host_name)
	vm_console "${host#host-}" "$id" | grep -c "hello: tick"
}

# True while pid is a live drover-vmm.
vmm_alive() {
	local pid=$1
	[ "$(cat /proc/"$pid"/comm 2>/dev/null)" = drover-vmm ]
}
