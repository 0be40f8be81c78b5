#!/usr/bin/env bash
# Registration and placement on a real three-host cluster: hosts register
# with their inventory; VMs spread over the hosts, capacity and
# anti-affinity are honoured (409 with each host's reason), a VM no host
# can ever take is refused (422); the chosen host really runs the guest;
# deleting a VM stops its VMM.  usage: test-placement.sh BUILD_DIR
. "$(dirname "$0")/testlib.sh"
cluster_test_begin "$1" 3
guest=$1/tests/guests/hello.elf

# Registration: three hosts up, inventory as the agents read it.
check "three hosts listed" test "$(drover -o json host list --state up | json_len)" = 3
read -r cpus ept kvm < <(drover -o json host show host-2 | python3 -c '
import json, sys
h = json.load(sys.stdin)
i = h["inventory"]
print(i["cpus"], i["ept"].replace(" ", "_"), i["kvm"])')
check "host-2 reports its CPUs" test "$cpus" -gt 0
check "host-2 reports KVM" test "$kvm" = True
[ -d /sys/module/kvm_intel ] || check "EPT is 'not available' without kvm_intel" test "$ept" = not_available
check "host-2's address is its namespace's" test "$(host_field host-2 address)" = 10.77.0.12

# Capacity: each host allows (2 cpus x 4.0) vCPUs here; one VM of 7 per host.
capacity=$(drover -o json host show host-1 | python3 -c '
import json, sys; print(json.load(sys.stdin)["capacity"]["vcpus"])')
big=$((capacity - 1))
for i in 1 2 3; do
	check "big-$i created" drover vm create --name "big-$i" --kernel "$guest" \
		--cmdline hello.ticks --vcpus "$big" --memory 64M --wait
done
hosts=$(for i in 1 2 3; do vm_field "big-$i" host_name; done | sort -u | wc -l)
check "the three big VMs are on three hosts" test "$hosts" = 3
for i in 1 2 3; do
	check "big-$i runs" test "$(vm_field "big-$i" state)" = running
	wait_for 10 "big-$i's console ticks" '[ "$(vm_ticks "big-$i")" -gt 2 ]'
done
out=$(drover vm create --name small --kernel "$guest" --vcpus 2 --memory 64M 2>&1)
check "a VM that fits nowhere now is refused with 409" grep -q "^drover: 409 " <<<"$out"
for h in 1 2 3; do
	check "host-$h's reason names the vCPUs" grep -q "host-$h: vcpus: $big allocated + 2 requested > $capacity allowed" <<<"$out"
done
out=$(drover placement --vcpus $((capacity + 1)) --memory 64M 2>&1)
check "a VM larger than any host is refused with 422" grep -q "^drover: 422 " <<<"$out"
check "nothing was created by the refusals" test "$(drover -o json vm list | json_len)" = 3

# Anti-affinity: room again (the big VMs go), then a group of three.
for i in 1 2 3; do
	pid=$(vm_field "big-$i" pid)
	check "big-$i deleted" drover vm delete "big-$i" --wait
	wait_for 10 "big-$i's VMM (pid $pid) ends" '! vmm_alive "$pid"'
done
for i in 1 2 3; do
	check "web-$i created" drover vm create --name "web-$i" --kernel "$guest" \
		--cmdline hello.ticks --memory 64M --anti-affinity web --label app=web --wait
done
hosts=$(for i in 1 2 3; do vm_field "web-$i" host_name; done | sort -u | wc -l)
check "the group spans three hosts" test "$hosts" = 3
out=$(drover vm create --name web-4 --kernel "$guest" --memory 64M --anti-affinity web 2>&1)
check "a fourth of the group is refused with 409" grep -q "^drover: 409 " <<<"$out"
check "its reasons name the group" test "$(grep -c "anti_affinity: a VM of group 'web'" <<<"$out")" = 3
check "label filter lists the group" test "$(drover -o json vm list --label app=web | json_len)" = 3
# Affinity: the first of a group anywhere, the next where it runs.
check "db-1 created" drover vm create --name db-1 --kernel "$guest" --memory 64M --affinity db --wait
check "db-2 created" drover vm create --name db-2 --kernel "$guest" --memory 64M --affinity db --wait
check "db-2 follows db-1" test "$(vm_field db-1 host_name)" = "$(vm_field db-2 host_name)"
# Pinned to a host by name.
check "pinned created" drover vm create --name pinned --kernel "$guest" --memory 64M --host host-3 --wait
check "pinned runs on host-3" test "$(vm_field pinned host_name)" = host-3
