#!/bin/sh
# Runs one libFuzzer target for a bounded time on a scratch copy of its seed
# corpus: the fuzzer adds every new input to the corpus it is given, and the
# checked-in seeds must stay as they are. Any crash, leak, sanitizer report,
# timeout or broken invariant fails the run; the input that did it is kept.
#   run-fuzzer.sh FUZZER SEED_DIR SECONDS ARTIFACT_DIR [DICT]
set -eu
fuzzer=$1 seeds=$2 seconds=$3 artifacts=$4 dict=${5:-}
name=$(basename "$fuzzer")
work=$(mktemp -d "${TMPDIR:-/tmp}/drover-$name-XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/corpus" "$artifacts"
cp "$seeds"/* "$work/corpus/"
set -- -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
	-artifact_prefix="$artifacts/$name-"
if [ -n "$dict" ] && [ -f "$dict" ]; then
	set -- "$@" -dict="$dict"
fi
cd "$work"
status=0
"$fuzzer" "$@" "$work/corpus" || status=$?
if [ "$status" -ne 0 ]; then
	echo "run-fuzzer: $name failed (status $status); the input is in $artifacts/" >&2
fi
exit "$status"
