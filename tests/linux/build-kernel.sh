#!/usr/bin/env bash
# Builds the small test kernel (an ELF vmlinux with a PVH note and Linux's
# virtio drivers built in) from Debian's linux-source-6.1 package and
# kernel.config, and prints the path of the vmlinux on its last line.
#
# The result is cached under CACHE_DIR/<key>/, the key being a hash of the
# package's version, kernel.config's settings, the compiler's version and
# RECIPE below: when that directory holds a vmlinux, nothing is built. Runs
# that share a CACHE_DIR wait for each other (flock), so that tests started
# together build once.
#
#   DROVER_KERNEL_JOBS=N   make -jN (default 2: the build hosts have 2 cores)
#   DROVER_KERNEL_CACHE=D  use D instead of CACHE_DIR: lets build directories
#                          (the normal and the sanitizer pass) share one build
#
# usage: build-kernel.sh CACHE_DIR
set -euo pipefail

[ $# -eq 1 ] || { echo "usage: $0 CACHE_DIR" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
fragment=$here/kernel.config
tarball=/usr/src/linux-source-6.1.tar.xz
cache=${DROVER_KERNEL_CACHE:-$1}
jobs=${DROVER_KERNEL_JOBS:-2}
# Bump when a change below changes the kernel that comes out (not for
# comments or messages), so that caches built the old way are not used.
RECIPE=1

version=$(dpkg-query -W -f='${Version}' linux-source-6.1 2>/dev/null || true)
if [ -z "$version" ] || [ ! -f "$tarball" ]; then
	echo "build-kernel: Debian's linux-source-6.1 is not installed ($tarball);" \
	     "deploy/install-deps.sh installs it" >&2
	exit 1
fi
for tool in make gcc bc bison flex xz; do
	command -v "$tool" >/dev/null ||
		{ echo "build-kernel: '$tool' is missing; deploy/install-deps.sh installs it" >&2; exit 1; }
done

# The fragment's settings, not its comments, go into the key.
key=$( { echo "linux-source-6.1 $version recipe $RECIPE"; gcc --version | head -1
	 grep -E '^(CONFIG_|# CONFIG_.* is not set$)' "$fragment" | sort; } |
	sha256sum | cut -c1-16)
out=$cache/$key
mkdir -p "$cache"
exec 9>"$cache/lock"
flock 9

if [ -s "$out/vmlinux" ]; then
	echo "build-kernel: cached ($out)" >&2
	echo "$out/vmlinux"
	exit 0
fi

# A build that died half-way leaves its source tree and a .tmp directory.
src=$cache/src
rm -rf "$src" "$cache"/*.tmp
mkdir -p "$src" "$out.tmp"
log=$out.tmp/build.log
start=$(date +%s)
echo "build-kernel: linux-source-6.1 $version, key $key, make -j$jobs (log: $log)" >&2

fail() {
	echo "build-kernel: $1; last lines of $log:" >&2
	tail -n 25 "$log" >&2
	exit 1
}

tar -xJf "$tarball" -C "$src" --strip-components=1 || fail "unpacking $tarball failed"
# Fixed build metadata, so that the same key gives the same banner.
export KBUILD_BUILD_USER=drover KBUILD_BUILD_HOST=drover KBUILD_BUILD_TIMESTAMP="$version"
{
	make -C "$src" tinyconfig &&
	"$src/scripts/kconfig/merge_config.sh" -m -O "$src" "$src/.config" "$fragment" &&
	make -C "$src" olddefconfig
} >>"$log" 2>&1 || fail "configuring the kernel failed"

# merge_config only warns when Kconfig drops an option (a missing dependency):
# a kernel without, say, VIRTIO_BLK would still build and the tests would
# fail far from the cause.
dropped=()
while IFS= read -r line; do
	case $line in
	CONFIG_*=*)
		grep -qxF "$line" "$src/.config" || dropped+=("$line") ;;
	"# CONFIG_"*" is not set")
		opt=${line#\# }
		opt=${opt%% *}
		! grep -qE "^$opt=[ym]\$" "$src/.config" || dropped+=("$line") ;;
	esac
done <"$fragment"
[ ${#dropped[@]} -eq 0 ] ||
	fail "kernel.config asks for '${dropped[*]}', which olddefconfig did not keep (a dependency?)"

nice make -C "$src" -j"$jobs" vmlinux >>"$log" 2>&1 || fail "building vmlinux failed"
cp "$src/vmlinux" "$src/.config" "$out.tmp/"
mv "$out.tmp/.config" "$out.tmp/config"
rm -rf "$out"
mv "$out.tmp" "$out"
rm -rf "$src"
echo "build-kernel: built in $(( $(date +%s) - start )) s: $out/vmlinux ($(du -h "$out/vmlinux" | cut -f1))" >&2
echo "$out/vmlinux"
