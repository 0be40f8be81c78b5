#!/usr/bin/env bash
# droverd's REST API under load (a benchmark, not a test):
#   - 1,000 hosts: ctl-fakeagent connects 1,000 agents over the real protocol
#     (Hello, then a heartbeat from each every 5 s, as drover-agent would);
#   - 10,000 VMs: created through POST /v1/vms (placed by the scheduler,
#     defined on their fake hosts; "start": false), over one keep-alive
#     connection;
#   - then wrk --latency on GET /v1/vms (a page of 100) and on POST
#     /v1/placements (the scheduler over all 1,000 hosts), while the
#     heartbeats go on.
# Prints p50/p99 latency and requests/s of each.
#   tests/bench/rest.sh [BUILD_DIR]   (default: build/ in the checkout)
#   DROVER_BENCH_HOSTS, DROVER_BENCH_VMS, DROVER_BENCH_SECONDS, DROVER_BENCH_CONNECTIONS
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
build=$(cd "${1:-$root/build}" && pwd)
droverd=$build/controller/droverd
fake=$build/tests/integration/ctl-fakeagent
hosts=${DROVER_BENCH_HOSTS:-1000}
vms=${DROVER_BENCH_VMS:-10000}
seconds=${DROVER_BENCH_SECONDS:-20}
conns=${DROVER_BENCH_CONNECTIONS:-16}

for tool in "$droverd" "$fake"; do
	[ -x "$tool" ] || { echo "rest.sh: $tool is missing: build droverd and ctl-fakeagent" >&2; exit 1; }
done
command -v wrk >/dev/null || { echo "rest.sh: wrk is missing (deploy/install-deps.sh)" >&2; exit 1; }

tmp=$(mktemp -d /tmp/drover-bench-rest-XXXXXX)
pid=""
loader=""
cleanup() {
	[ -n "$loader" ] && kill "$loader" 2>/dev/null
	[ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
	[ -n "${DROVER_BENCH_KEEP:-}" ] || rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

token=$("$droverd" token create --db "$tmp/d.db" --role admin --name bench 2>/dev/null)
"$droverd" serve --db "$tmp/d.db" --listen 127.0.0.1:0 --agent-listen 127.0.0.1:0 \
	--log-level info >/dev/null 2>"$tmp/droverd.log" &
pid=$!
for _ in $(seq 100); do
	grep -q "REST API on" "$tmp/droverd.log" && break
	sleep 0.1
done
ports=$(sed -n 's/.*REST API on .* (port \([0-9]*\)), agents on .* (port \([0-9]*\)).*/\1 \2/p' \
	"$tmp/droverd.log")
read -r http_port agent_port <<<"$ports"
echo "== droverd on 127.0.0.1:$http_port (agents on $agent_port), database $tmp/d.db"

# Hosts, then VMs, through the real protocol and the real API. The fake
# agents stay connected (and beating) for the whole benchmark.
python3 - "$fake" "127.0.0.1:$agent_port" "$http_port" "$token" "$hosts" "$vms" "$tmp" <<'EOF' &
import http.client, json, os, subprocess, sys, time
fake, agent_addr, port, token, hosts, vms, tmp = sys.argv[1:]
hosts, vms = int(hosts), int(vms)
ag = subprocess.Popen([fake, agent_addr], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
t0 = time.time()
ag.stdin.write(json.dumps({"op": "connect_many", "prefix": "host", "count": hosts,
                           "cpus": 64, "mem_mib": 262144}) + "\n")
ag.stdin.flush()
for line in ag.stdout:
    ev = json.loads(line)
    if ev.get("ev") == "bad":
        sys.exit("fake agents: " + ev["why"])
    if ev.get("ev") == "connected_many":
        break
print("== %d hosts registered in %.1f s" % (hosts, time.time() - t0), flush=True)
c = http.client.HTTPConnection("127.0.0.1", int(port), timeout=30)
h = {"Authorization": "Bearer " + token, "Content-Type": "application/json"}
t0 = time.time()
for i in range(vms):
    body = {"name": "vm%05d" % i, "vcpus": 1 + i % 4, "memory": 512 * (1 + i % 4),
            "boot": {"kernel": "/srv/vmlinux"}, "labels": {"team": "t%d" % (i % 10)},
            "start": False}
    c.request("POST", "/v1/vms", json.dumps(body), h)
    r = c.getresponse()
    data = r.read()
    if r.status != 202:
        sys.exit("creating vm%05d: %d %s" % (i, r.status, data[:300]))
    if (i + 1) % 2000 == 0:
        print("   %d VMs, %.0f/s" % (i + 1, (i + 1) / (time.time() - t0)), flush=True)
print("== %d VMs created through the API in %.1f s (%.0f/s)" %
      (vms, time.time() - t0, vms / (time.time() - t0)), flush=True)
open(os.path.join(tmp, "loaded"), "w").close()
ag.stdin.flush()
while True:              # keep the agents connected until the benchmark ends
    time.sleep(3600)
EOF
loader=$!
while [ ! -e "$tmp/loaded" ]; do
	kill -0 $loader 2>/dev/null || { echo "rest.sh: loading failed" >&2; tail -5 "$tmp/droverd.log" >&2; exit 1; }
	sleep 0.5
done

cat >"$tmp/get.lua" <<EOF
wrk.headers["Authorization"] = "Bearer $token"
EOF
cat >"$tmp/place.lua" <<EOF
wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer $token"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"name": "probe", "vcpus": 2, "memory": "2G", "boot": {"kernel": "/srv/vmlinux"}}'
EOF

report() {
	local name=$1 out=$2
	local p50 p99 rps
	p50=$(awk '$1 == "50%" {print $2}' "$out")
	p99=$(awk '$1 == "99%" {print $2}' "$out")
	rps=$(awk '$1 == "Requests/sec:" {print $2}' "$out")
	printf '%-44s p50 %-9s p99 %-9s %s requests/s\n' "$name" "$p50" "$p99" "$rps"
	if grep -q "Non-2xx" "$out"; then
		echo "rest.sh: $name: some answers were not 2xx:" >&2
		grep "Non-2xx" "$out" >&2
		exit 1
	fi
}

echo "== wrk: $conns connections, 2 threads, $seconds s each ($(nproc) cores shared by wrk, droverd and the agents)"
wrk --latency -t2 -c"$conns" -d"${seconds}s" -s "$tmp/get.lua" \
	"http://127.0.0.1:$http_port/v1/vms" >"$tmp/get.out"
wrk --latency -t2 -c"$conns" -d"${seconds}s" -s "$tmp/get.lua" \
	"http://127.0.0.1:$http_port/v1/vms?label=team=t3&state=defined&limit=100" >"$tmp/getf.out"
wrk --latency -t2 -c"$conns" -d"${seconds}s" -s "$tmp/place.lua" \
	"http://127.0.0.1:$http_port/v1/placements" >"$tmp/place.out"
# One connection: the time one request takes, without queueing behind others.
wrk --latency -t1 -c1 -d"$(( (seconds + 1) / 2 ))s" -s "$tmp/get.lua" \
	"http://127.0.0.1:$http_port/v1/vms" >"$tmp/get1.out"
wrk --latency -t1 -c1 -d"$(( (seconds + 1) / 2 ))s" -s "$tmp/place.lua" \
	"http://127.0.0.1:$http_port/v1/placements" >"$tmp/place1.out"
report "GET /v1/vms (100 of $vms)" "$tmp/get.out"
report "GET /v1/vms?label=..&state=.. (100)" "$tmp/getf.out"
report "POST /v1/placements ($hosts hosts)" "$tmp/place.out"
echo "== one connection"
report "GET /v1/vms (100 of $vms)" "$tmp/get1.out"
report "POST /v1/placements ($hosts hosts)" "$tmp/place1.out"
