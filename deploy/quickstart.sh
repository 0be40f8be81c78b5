#!/usr/bin/env bash
# drover quick start: installs dependencies, builds, and runs a small cluster
# on this one machine: droverd and three agents, each "host" a network
# namespace of its own joined to the others by a private bridge; a token is
# made, VMs (the project's `hello` test guest, which ticks on its serial
# console) are placed and started through the CLI, shown, stopped and
# deleted; then everything is torn down. deploy/vmm-tour.sh shows drover-vmm
# and drover-img alone.
#   DROVER_BUILD_DIR   build directory (default: build/ in the checkout)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build=${DROVER_BUILD_DIR:-$root/build}
work=$(mktemp -d /tmp/drover-quickstart.XXXXXX)
hosts=3

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
# Shows a CLI command as the operator would type it, then runs it.
cli() { printf '$ drover %s\n' "$*"; drover "$@"; }

say "Installing dependencies (Debian packages)"
"$root/deploy/install-deps.sh"

say "Building drover"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j "$(nproc)" -- --no-print-directory >/dev/null
echo "droverd, drover-agent, drover-vmm and drover are in $build"

. "$root/tests/cluster/cluster.sh"
cleanup() {
	drover_cluster_stop
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP PIPE

say "A cluster of $hosts hosts (network namespaces on a private bridge, 10.77.0.0/24)"
echo "droverd on 10.77.0.1 (REST :8080, agents :7070); agents on 10.77.0.11-$((10 + hosts))"
echo "an admin token: droverd token create --db droverd.db --role admin"
drover_cluster_start "$build" "$work" "$hosts"
echo "(the CLI below runs in the controller's namespace with DROVER_URL and DROVER_TOKEN set)"
cli host list

guest=$build/tests/guests/hello.elf
say "Where would a 2-vCPU, 256 MiB VM go? (nothing is created)"
cli placement --vcpus 2 --memory 256M --kernel "$guest"

say "Three VMs of one anti-affinity group: one per host"
for i in 1 2 3; do
	cli vm create --name "web-$i" --kernel "$guest" --cmdline hello.ticks --vcpus 1 \
		--memory 64M --label app=web --anti-affinity web --wait
done
cli vm list

say "A fourth one of the group has nowhere to go (409, with each host's reason)"
cli vm create --name web-4 --kernel "$guest" --cmdline hello.ticks --memory 64M \
	--anti-affinity web || echo "-> refused, as it should be"

say "A VM larger than any host (422: no host could ever take it)"
cli placement --vcpus 64 --memory 64M || echo "-> refused, as it should be"

say "The guests run: their consoles tick"
sleep 1
for i in 1 2 3; do
	read -r id host < <(drover -o json vm show "web-$i" | json_fields id host_name)
	printf 'web-%s on %s: %s ticks so far\n' "$i" "$host" \
		"$(vm_console "${host#host-}" "$id" | grep -c tick)"
done

say "Pause, resume, stop"
cli vm pause web-1 --wait
cli vm resume web-1 --wait
echo "(a stop presses the ACPI power button; the hello guest has no ACPI driver, so after"
echo " the 2 s stop timeout drover-vmm is told to quit, flushing the disks as it goes)"
cli vm stop web-2 --stop-timeout 2 --wait
printf '$ drover vm show web-2\n'
drover vm show web-2 | grep -E "^(State|Exit)"
cli vm list

say "Host maintenance: no new VMs there"
cli host maintenance host-1 on
cli placement --vcpus 1 --memory 64M --host host-1 || echo "-> refused, as it should be"
cli host maintenance host-1 off

say "Deleting the VMs"
for i in 1 2 3; do
	cli vm delete "web-$i" --wait
done
cli event list

say "Summary"
cli host list
cli vm list
echo
echo "droverd kept its state in $work/droverd.db (SQLite); each agent's VMs lived under"
echo "$work/hN/run/vms/. Next: deploy/test.sh runs the whole suite; README.md documents"
echo "droverd's REST API, the CLI, drover-agent and drover-vmm."
