# A cluster of "hosts" on one machine: each host is a network namespace with
# one interface on a private switch (a bridge inside a namespace of its own),
# so nothing reaches the machine's own network and several clusters can run
# side by side. Sourced by the cluster tests and deploy/quickstart.sh.
#
#   cluster_up PREFIX N     namespaces PREFIX-sw (the bridge), PREFIX-ctl
#                           (10.77.0.1) and PREFIX-h1..hN (10.77.0.11..),
#                           loopback up in each
#   cluster_ns NAME         the namespace of "ctl" or "hK"
#   cluster_ip NAME         its address
#   cluster_exec NAME CMD.. runs CMD in that namespace
#   cluster_down            removes everything cluster_up made (idempotent)
#
# Needs root and iproute2. Processes started in the namespaces are the
# caller's to stop (by PID) before cluster_down, which kills (and names)
# any it finds left there.

CLUSTER_PREFIX=""
CLUSTER_HOSTS=0
CLUSTER_SUBNET=10.77.0

cluster_ns() {
	echo "$CLUSTER_PREFIX-$1"
}

cluster_ip() {
	case "$1" in
	ctl) echo "$CLUSTER_SUBNET.1" ;;
	h*) echo "$CLUSTER_SUBNET.$((10 + ${1#h}))" ;;
	*) echo "cluster_ip: unknown host '$1'" >&2; return 1 ;;
	esac
}

cluster_exec() {
	local name=$1
	shift
	ip netns exec "$(cluster_ns "$name")" "$@"
}

# One namespace on the switch: veth "v-NAME" on the bridge, "eth0" inside.
_cluster_attach() {
	local name=$1 ns sw
	ns=$(cluster_ns "$name")
	sw=$(cluster_ns sw)
	ip netns add "$ns" || return 1
	ip -n "$ns" link set lo up || return 1
	ip link add "c$$-$name" type veth peer name eth0 netns "$ns" || return 1
	ip link set "c$$-$name" netns "$sw" || return 1
	ip -n "$sw" link set "c$$-$name" master br0 up || return 1
	ip -n "$ns" addr add "$(cluster_ip "$name")/24" dev eth0 || return 1
	ip -n "$ns" link set eth0 up || return 1
}

cluster_up() {
	CLUSTER_PREFIX=$1
	CLUSTER_HOSTS=$2
	local sw
	sw=$(cluster_ns sw)
	if [ "$(id -u)" != 0 ]; then
		echo "cluster_up: network namespaces need root" >&2
		return 1
	fi
	ip netns add "$sw" || return 1
	ip -n "$sw" link set lo up || return 1
	ip -n "$sw" link add br0 type bridge || return 1
	ip -n "$sw" link set br0 up || return 1
	_cluster_attach ctl || return 1
	for k in $(seq 1 "$CLUSTER_HOSTS"); do
		_cluster_attach "h$k" || return 1
	done
}

cluster_down() {
	local name pid
	[ -n "$CLUSTER_PREFIX" ] || return 0
	for name in ctl $(seq -f 'h%g' 1 "$CLUSTER_HOSTS") sw; do
		# Anything still living in a namespace we made was started by us;
		# left alone it would keep the namespace (and its addresses) alive.
		for pid in $(ip netns pids "$(cluster_ns "$name")" 2>/dev/null); do
			echo "cluster_down: pid $pid ($(cat /proc/"$pid"/comm 2>/dev/null)) still in" \
				"$(cluster_ns "$name"): killed" >&2
			kill -KILL "$pid" 2>/dev/null || true
		done
		ip netns del "$(cluster_ns "$name")" 2>/dev/null || true
	done
	CLUSTER_PREFIX=""
}
