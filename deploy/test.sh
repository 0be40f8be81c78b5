#!/usr/bin/env bash
# Installs dependencies, builds drover with warnings as errors, and runs the
# whole test suite (ctest); then builds and runs it again under
# AddressSanitizer + UndefinedBehaviorSanitizer; then builds the libFuzzer
# targets with clang and runs each for a bounded time on its seed corpus.
#   DROVER_BUILD_DIR   build directory (default: build/ in the checkout)
#   DROVER_SKIP_ASAN=1 skip the sanitizer pass
#   DROVER_SKIP_FUZZ=1 skip the fuzz pass
#   DROVER_FUZZ_SECONDS how long each fuzzer runs (default 20)
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

# Only the fuzz targets and their tests: the rest is what the passes above
# already built and ran.
run_fuzz() {
	local dir=$1
	echo "== configure $dir (clang, libFuzzer)"
	cmake -S "$root" -B "$dir" -DDROVER_WERROR=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
		-DCMAKE_C_COMPILER=clang -DDROVER_FUZZ=ON \
		-DFUZZ_SECONDS="${DROVER_FUZZ_SECONDS:-20}" >/dev/null
	echo "== build $dir (fuzz targets)"
	cmake --build "$dir" -j "$jobs" --target drover-fuzz -- --no-print-directory >/dev/null
	echo "== fuzz $dir"
	(cd "$dir" && ctest --output-on-failure -j "$jobs" -L fuzz)
}

start=$(date +%s)
# The small Linux test kernel (tests/linux) is built once for both passes.
export DROVER_KERNEL_CACHE=${DROVER_KERNEL_CACHE:-$build/linux-kernel}
run_suite "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDROVER_SANITIZE=OFF
if [ "${DROVER_SKIP_ASAN:-0}" = 0 ]; then
	run_suite "$build-asan" -DCMAKE_BUILD_TYPE=Debug -DDROVER_SANITIZE=ON
fi
if [ "${DROVER_SKIP_FUZZ:-0}" = 0 ]; then
	run_fuzz "$build-clang-fuzz"
fi
echo "== all tests passed in $(( $(date +%s) - start )) s"
