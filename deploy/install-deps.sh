#!/usr/bin/env bash
# Installs every Debian package that drover's build, tests and benchmarks
# need. Idempotent: quiet and quick when everything is already there.
#   DROVER_TEST_LINUX=1  also installs what the opt-in Linux boot test needs
#                        (Debian's cloud kernel, busybox, cpio, lz4).
set -euo pipefail

packages=(
	# build
	build-essential cmake pkg-config
	libjansson-dev liburing-dev zlib1g-dev
	# control plane: protocol, controller state, REST server, CLI, token hashes
	protobuf-c-compiler libprotobuf-c-dev libsqlite3-dev libmicrohttpd-dev
	libcurl4-openssl-dev libssl-dev
	# tests
	libcmocka-dev
	qemu-system-x86 qemu-utils   # the conformance and benchmark peer
	acpica-tools                 # iasl checks the ACPI tables drover builds
	gzip socat
	python3                      # drover-img interoperability tests (stdlib only)
	strace                       # qcow2 crash test: faults injected at chosen syscalls
	iproute2                     # cluster tests: hosts as network namespaces, veths, bridge
	sqlite3                      # cluster tests read droverd's database as an operator would
	python3-yaml python3-jsonschema  # droverd's tests check every response against openapi.yaml
	wrk                          # REST latency benchmark (tests/bench/)
	# sanitizers and fuzzing
	clang libclang-rt-14-dev
	# tests/linux (ctest -L linux): a small kernel built from Debian's sources
	# with the virtio drivers built in, booted from an ext2 disk made here
	linux-source-6.1 xz-utils bc bison flex libelf-dev   # kernel build (libssl-dev above)
	e2fsprogs                    # mke2fs for the root image, e2fsck -n after the boot
)
if [ "${DROVER_TEST_LINUX:-0}" != 0 ]; then
	packages+=(linux-image-cloud-amd64 busybox-static cpio lz4)
fi

missing=()
for p in "${packages[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing+=("$p")
	fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" != 0 ]; then
	echo "install-deps: missing packages: ${missing[*]}; run this script as root" >&2
	exit 1
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
