#!/usr/bin/env bash
# Installs dependencies, builds drover with warnings as errors, and runs the
# whole test suite (ctest); then builds and runs it again under
# AddressSanitizer + UndefinedBehaviorSanitizer.
#   DROVER_BUILD_DIR   build directory (default: build/ in the checkout)
#   DROVER_SKIP_ASAN=1 skip the sanitizer pass
#   CTEST_ARGS         extra arguments for ctest (e.g. "-L vmm")
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build=${DROVER_BUILD_DIR:-$root/build}
jobs=$(nproc)

"$root/deploy/install-deps.sh"

run_suite() {
	local dir=$1; shift
	echo "== configure $dir ($*)"
	cmake -S "$root" -B "$dir" -DDROVER_WERROR=ON "$@" >/dev/null
	echo "== build $dir"
	cmake --build "$dir" -j "$jobs" -- --no-print-directory >/dev/null
	echo "== test $dir"
	# shellcheck disable=SC2086
	(cd "$dir" && ctest --output-on-failure --timeout 600 -j "$jobs" ${CTEST_ARGS:-})
}

start=$(date +%s)
run_suite "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDROVER_SANITIZE=OFF
if [ "${DROVER_SKIP_ASAN:-0}" = 0 ]; then
	run_suite "$build-asan" -DCMAKE_BUILD_TYPE=Debug -DDROVER_SANITIZE=ON
fi
echo "== all tests passed in $(( $(date +%s) - start )) s"
