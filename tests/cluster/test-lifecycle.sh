#!/usr/bin/env bash
# A VM's life through the CLI on a real one-host cluster, each step checked
# on the guest itself (its console): pause stops the ticks and resume
# restarts them, reboot boots it again, stop ends its VMM, start brings it
# back; a guest that crashes is reported crashed with its reason; errors
# (unknown VM, read-only token) come back as the API's errors with exit 1.
#  usage: test-lifecycle.sh BUILD_DIR
. "$(dirname "$0")/testlib.sh"
cluster_test_begin "$1" 1
guest=$1/tests/guests/hello.elf

check "vm created" drover vm create --name life --kernel "$guest" --cmdline hello.ticks \
	--memory 64M --vcpus 2 --wait
wait_for 10 "the guest ticks" '[ "$(vm_ticks life)" -gt 2 ]'

check "pause" drover vm pause life --wait
check "state paused" test "$(vm_field life state)" = paused
t0=$(vm_ticks life)
sleep 1
check "no tick while paused" test "$(vm_ticks life)" = "$t0"
check "resume" drover vm resume life --wait
wait_for 10 "ticks again after resume" '[ "$(vm_ticks life)" -gt "$t0" ]'

read -r id _ < <(drover -o json vm show life | json_fields id host_name)
boots() { vm_console 1 "$id" | grep -c "hello: hello"; }
b0=$(boots)
check "reboot" drover vm reboot life --wait
wait_for 10 "the guest booted again" '[ "$(boots)" -gt "$b0" ]'
check "still running after reboot" test "$(vm_field life state)" = running

pid=$(vm_field life pid)
# A graceful stop presses the ACPI power button; the hello guest has no ACPI
# driver and runs on, so after the stop timeout drover-vmm is told to quit.
t0=$(date +%s%N)
check "stop" drover vm stop life --stop-timeout 2 --wait
check "the stop waited for the guest first" test $(( ($(date +%s%N) - t0) / 1000000 )) -ge 2000
check "state stopped" test "$(vm_field life state)" = stopped
check "ended by quit, after the power button" test "$(vm_field life exit_reason)" = host-qmp-quit
check "its VMM ended" bash -c "! [ \"\$(cat /proc/$pid/comm 2>/dev/null)\" = drover-vmm ]"
check "start" drover vm start life --wait
check "running again" test "$(vm_field life state)" = running
check "a new VMM" test "$(vm_field life pid)" != "$pid"
check "forced stop" drover vm stop life --force --wait
check "stopped" test "$(vm_field life state)" = stopped

# A guest that triple-faults: drover-vmm ends with its report, the agent
# and droverd say crashed, with the reason.
check "crashing vm created" drover vm create --name crashy --kernel "$guest" \
	--cmdline hello.crash --memory 64M
wait_for 15 "crashy reported crashed" '[ "$(vm_field crashy state)" = crashed ]'
check "with its reason" test "$(vm_field crashy exit_reason)" = guest-crash
drover event list | grep -q "crash" || fail "no event tells of the crash"

# Errors: exit 1 and the API's error.
out=$(drover vm show nosuchvm 2>&1); status=$?
check "unknown VM: exit 1" test "$status" = 1
check "unknown VM: 404 named" grep -q "^drover: 404 not-found: " <<<"$out"
out=$(drover vm start nosuchvm 2>&1); status=$?
check "action on an unknown VM: exit 1, 404" bash -c "[ $status = 1 ] && grep -q '404' <<<'$out'"
reader=$("$DROVER_BUILD/controller/droverd" token create --db "$DROVER_WORK/droverd.db" \
	--role reader 2>/dev/null)
DROVER_TOKEN=$reader drover vm list >/dev/null || fail "a reader cannot list VMs"
out=$(DROVER_TOKEN=$reader drover vm delete life 2>&1); status=$?
check "a reader cannot delete: exit 1" test "$status" = 1
check "a reader cannot delete: 403" grep -q "^drover: 403 " <<<"$out"
out=$(DROVER_TOKEN=nonsense drover vm list 2>&1); status=$?
check "a bad token: 401 with a hint" bash -c "[ $status = 1 ] && grep -q 'droverd token create' <<<'$out'"

check "life deleted" drover vm delete life --wait
check "crashy deleted" drover vm delete crashy --wait
check "no VM left" test "$(drover -o json vm list | json_len)" = 0
