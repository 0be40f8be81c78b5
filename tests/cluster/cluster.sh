# A drover cluster on this machine: droverd in the namespace "ctl" and one
# drover-agent per host namespace (netns.sh), each agent with run and state
# directories of its own under WORK. Sourced by the cluster tests and by
# deploy/quickstart.sh.
#
#   drover_cluster_start BUILD WORK NHOSTS   everything up; hosts registered
#   drover ARGS...                           the CLI, run in the controller's
#                                            namespace with URL and token set
#   drover_agent_start K / drover_agent_kill K [SIGNAL]
#   droverd_start / droverd_kill [SIGNAL]
#   drover_cluster_stop                      VMs, agents, droverd, namespaces
#   vm_console K VM_ID                       the console log of a VM on host hK
#
# Every process is started here and stopped here by its PID; the VMMs that
# agents start are found through their pid files under WORK.

. "$(dirname "${BASH_SOURCE[0]}")/netns.sh"

DROVER_BUILD=""
DROVER_WORK=""
DROVERD_PID=""
declare -A DROVER_AGENT_PID=()
DROVER_REST_PORT=8080
DROVER_AGENT_PORT=7070

droverd_start() {
	local ctl
	ctl=$(cluster_ip ctl)
	# `ip netns exec` itself, not a function, goes to the background: it
	# execs the program, so $! is the program's PID.
	ip netns exec "$(cluster_ns ctl)" "$DROVER_BUILD/controller/droverd" serve --db "$DROVER_WORK/droverd.db" \
		--listen "$ctl:$DROVER_REST_PORT" --agent-listen "$ctl:$DROVER_AGENT_PORT" \
		--heartbeat-timeout-s "${DROVER_HEARTBEAT_TIMEOUT_S:-6}" \
		>>"$DROVER_WORK/droverd.log" 2>&1 &
	DROVERD_PID=$!
	for _ in $(seq 100); do
		if drover_raw --timeout 1 host list >/dev/null 2>&1; then
			return 0
		fi
		kill -0 "$DROVERD_PID" 2>/dev/null || break
		sleep 0.1
	done
	echo "droverd did not come up; its log:" >&2
	tail -20 "$DROVER_WORK/droverd.log" >&2
	return 1
}

droverd_kill() {
	local sig=${1:-TERM}
	[ -n "$DROVERD_PID" ] || return 0
	kill "-$sig" "$DROVERD_PID" 2>/dev/null || true
	wait "$DROVERD_PID" 2>/dev/null || true
	DROVERD_PID=""
}

drover_agent_config() {
	local k=$1 dir=$DROVER_WORK/h$k
	mkdir -p "$dir"
	cat >"$dir/agent.json" <<JSON
{
  "controller": "$(cluster_ip ctl):$DROVER_AGENT_PORT",
  "host-name": "host-$k",
  "run-dir": "$dir/run",
  "state-dir": "$dir/state",
  "migration-address": "$(cluster_ip "h$k"):7071",
  "vmm": "$DROVER_BUILD/vmm/drover-vmm",
  "heartbeat-interval-ms": 1000,
  "reconnect-min-ms": 200,
  "reconnect-max-ms": 2000,
  "labels": {"rack": "r$(( (k + 1) / 2 ))"}
}
JSON
}

drover_agent_start() {
	local k=$1
	[ -f "$DROVER_WORK/h$k/agent.json" ] || drover_agent_config "$k"
	ip netns exec "$(cluster_ns "h$k")" "$DROVER_BUILD/agent/drover-agent" \
		--config "$DROVER_WORK/h$k/agent.json" \
		>>"$DROVER_WORK/h$k/agent.log" 2>&1 &
	DROVER_AGENT_PID[$k]=$!
}

drover_agent_kill() {
	local k=$1 sig=${2:-TERM} pid=${DROVER_AGENT_PID[$1]:-}
	[ -n "$pid" ] || return 0
	kill "-$sig" "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	unset "DROVER_AGENT_PID[$k]"
}

# The CLI against this cluster, without waiting for anything.
drover_raw() {
	cluster_exec ctl env DROVER_URL="http://$(cluster_ip ctl):$DROVER_REST_PORT" \
		DROVER_TOKEN="${DROVER_TOKEN:-}" HOME="$DROVER_WORK" \
		"$DROVER_BUILD/controller/drover" "$@"
}

drover() {
	drover_raw "$@"
}

# Waits until N hosts are up; 0 if so.
drover_wait_hosts() {
	local n=$1 up
	for _ in $(seq 150); do
		up=$(drover_raw -o json host list 2>/dev/null | grep -c '"state": "up"' || true)
		[ "$up" -ge "$n" ] && return 0
		sleep 0.2
	done
	echo "only $up of $n hosts came up" >&2
	return 1
}

drover_cluster_start() {
	DROVER_BUILD=$1
	DROVER_WORK=$2
	local n=$3
	mkdir -p "$DROVER_WORK"
	cluster_up "drv$$" "$n" || return 1
	DROVER_TOKEN=$("$DROVER_BUILD/controller/droverd" token create --db "$DROVER_WORK/droverd.db" \
		--role admin --name cluster-admin) || return 1
	export DROVER_TOKEN
	droverd_start || return 1
	for k in $(seq 1 "$n"); do
		drover_agent_start "$k"
	done
	drover_wait_hosts "$n"
}

# Every VMM an agent started (pid files under WORK/h*/run/vms/*/).
_drover_vmm_pids() {
	cat "$DROVER_WORK"/h*/run/vms/*/pid 2>/dev/null || true
}

drover_cluster_stop() {
	local k pid
	for k in "${!DROVER_AGENT_PID[@]}"; do
		drover_agent_kill "$k" TERM
	done
	droverd_kill TERM
	for pid in $(_drover_vmm_pids); do
		# only drover-vmm processes: a stale pid file may name another process by now
		if [ "$(cat /proc/"$pid"/comm 2>/dev/null)" = drover-vmm ]; then
			kill -KILL "$pid" 2>/dev/null || true
		fi
	done
	cluster_down
}

vm_console() {
	cat "$DROVER_WORK/h$1/run/vms/$2/console.log" 2>/dev/null
}

# Reads a JSON object on stdin and prints the named top-level fields on one
# line, separated by spaces ("-" for null or missing).
json_fields() {
	python3 -c 'import json, sys
o = json.load(sys.stdin)
print(" ".join("-" if o.get(k) is None else str(o.get(k)) for k in sys.argv[1:]))' "$@"
}
