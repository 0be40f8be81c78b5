#!/usr/bin/env bash
# What survives a dying process, on a real two-host cluster:
#  - an agent killed with SIGKILL: its VM keeps running (the console keeps
#    ticking, the same drover-vmm pid), the host is marked down after the
#    heartbeat timeout and up again when a new agent comes, which adopts
#    the VM; the VM can then be stopped and started through the API;
#  - droverd killed with SIGKILL, with an operation in flight: after a
#    restart the hosts, the VMs and the events are all there and the
#    operation completes.
#  usage: test-restart.sh BUILD_DIR
. "$(dirname "$0")/testlib.sh"
DROVER_HEARTBEAT_TIMEOUT_S=3
cluster_test_begin "$1" 2
guest=$1/tests/guests/hello.elf

check "vm-a created on host-1" drover vm create --name vm-a --kernel "$guest" \
	--cmdline hello.ticks --memory 64M --host host-1 --wait
pid=$(vm_field vm-a pid)
check "vm-a's VMM (pid $pid) runs" vmm_alive "$pid"

# ---- the agent dies
drover_agent_kill 1 KILL
t0=$(vm_ticks vm-a)
sleep 1
check "vm-a keeps ticking without its agent" test "$(vm_ticks vm-a)" -gt "$t0"
wait_for 15 "host-1 marked down" '[ "$(host_field host-1 state)" = down ]'
drover event list | grep -q "host-down" || fail "no host-down event"
check "vm-a's VMM still runs" vmm_alive "$pid"
drover_agent_start 1
wait_for 15 "host-1 up again" '[ "$(host_field host-1 state)" = up ]'
check "the same VMM was adopted" test "$(vm_field vm-a pid)" = "$pid"
check "vm-a is running" test "$(vm_field vm-a state)" = running
grep -q "adopt" "$DROVER_WORK/h1/agent.log" || fail "the agent's log does not mention adopting vm-a"
check "vm-a stops through the API after adoption" drover vm stop vm-a --stop-timeout 1 --wait
wait_for 10 "vm-a's VMM ends" '! vmm_alive "$pid"'
check "vm-a starts again" drover vm start vm-a --wait
check "vm-a runs again" test "$(vm_field vm-a state)" = running

# ---- droverd dies, with an operation in flight
ids_before=$(drover -o json vm list | python3 -c 'import json,sys; print(sorted(v["id"] for v in json.load(sys.stdin)))')
events_before=$(drover -o json event list | json_len)
out=$(drover -o json vm create --name vm-b --kernel "$guest" --cmdline hello.ticks --memory 64M)
op=$(python3 -c 'import json, sys; print(json.load(sys.stdin)["operation"]["id"])' <<<"$out")
droverd_kill KILL
droverd_start || fail "droverd did not restart"
check "the hosts are known after the restart" test "$(drover -o json host list | json_len)" = 2
ids_after=$(drover -o json vm list | python3 -c 'import json,sys; print(sorted(v["id"] for v in json.load(sys.stdin) if v["name"] != "vm-b"))')
check "the VMs are the same after the restart" test "$ids_before" = "$ids_after"
check "vm-a is still running" test "$(vm_field vm-a state)" = running
check "the operation in flight completes after the restart" drover operation wait "$op" --timeout 30
check "vm-b runs" test "$(vm_field vm-b state)" = running
wait_for 10 "vm-b's console ticks" '[ "$(vm_ticks vm-b)" -gt 0 ]'
check "no event was lost" test "$(drover -o json event list | json_len)" -gt "$events_before"
wait_for 15 "both hosts up after the restart" '[ "$(drover -o json host list --state up | json_len)" = 2 ]'
check "vm-a deleted" drover vm delete vm-a --wait
check "vm-b deleted" drover vm delete vm-b --wait
