#!/usr/bin/env bash
# Placement benchmark: the scheduler places VMS VMs one after another on a
# simulated cluster of HOSTS hosts (varied sizes, CPU generations, labels, a
# few down or in maintenance), with spread and then with pack; prints
# decisions per second, mean/p50/p99/max time per decision, per kind of
# request, and how evenly the hosts end up used. Builds nothing.
#   tests/bench/placement.sh [BUILD_DIR]   (default: build/)   HOSTS=1000 VMS=10000 SEED=1
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$root/build}
bin=$build/tests/bench/placement
[ -x "$bin" ] || { echo "placement.sh: $bin missing: build first (cmake --build $build --target placement)" >&2; exit 1; }

"$bin" -H "${HOSTS:-1000}" -n "${VMS:-10000}" -s "${SEED:-1}"
