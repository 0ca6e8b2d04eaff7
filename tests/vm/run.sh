#!/usr/bin/env bash
# Runs corral-cgroups' real cgroup v2 tests (the #[ignore]d ones) in a
# throwaway QEMU guest: build hosts mount cgroup v1, production hosts run
# v2. See tests/vm/README.md.
#
# Environment:
#   CORRAL_VM_KERNEL   boot this kernel (vmlinux or bzImage) instead of
#                      Debian's linux-image-amd64 (fetched and cached)
#   CORRAL_VM_CACHE    cache directory (default: <repo>/target/vm-cache)
#   CORRAL_VM_TIMEOUT  seconds before the guest is killed (default: 600)
#   CORRAL_VM_VERBOSE  1: print the guest console also on success
set -euo pipefail

started=$(date +%s%N)
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cache=${CORRAL_VM_CACHE:-$repo/target/vm-cache}
timeout_s=${CORRAL_VM_TIMEOUT:-600}
crate=corral-cgroups

# Seconds since a $(date +%s%N) stamp, one decimal.
elapsed() {
    local ns=$(($(date +%s%N) - $1))
    printf '%d.%d' $((ns / 1000000000)) $((ns / 100000000 % 10))
}
say() { printf 'vm: %s\n' "$*" >&2; }
die() { printf 'vm: error: %s\n' "$*" >&2; exit 1; }

# --- tools -----------------------------------------------------------------
missing=()
command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
command -v cpio >/dev/null || missing+=(cpio)
busybox=$(command -v busybox || true)
if [[ -z $busybox ]] || ldd "$busybox" >/dev/null 2>&1; then
    # Absent, or the dynamically linked one from the "busybox" package,
    # which cannot run alone in the initramfs.
    missing+=(busybox-static)
fi
for tool in cargo ldd gzip timeout; do
    command -v "$tool" >/dev/null || die "$tool is required"
done
if ((${#missing[@]})); then
    die "missing ${missing[*]}: install with
    apt-get install --no-install-recommends ${missing[*]}
or run tests/vm/install-deps.sh"
fi

mkdir -p "$cache"
work=$(mktemp -d "$cache/run.XXXXXX")
trap 'rm -rf "$work"' EXIT

# --- kernel ----------------------------------------------------------------
# Debian's stock kernel has cgroup v2, memcg, pids, CFS bandwidth, the 8250
# serial console, devtmpfs and gzip initrd support built in.
fetch_kernel() {
    if ! command -v apt-get >/dev/null || ! command -v dpkg-deb >/dev/null; then
        die "no cached kernel and no apt-get/dpkg-deb to fetch Debian's; set CORRAL_VM_KERNEL"
    fi
    local dl=$cache/kernel-download
    rm -rf "$dl" && mkdir -p "$dl"
    say "fetching Debian's linux-image-amd64 (once; cached in $cache/kernel)"
    (cd "$dl" && apt-get download -q linux-image-amd64 >/dev/null 2>&1) ||
        die "apt-get download linux-image-amd64 failed (run apt-get update first?)"
    local meta versioned
    meta=$(find "$dl" -maxdepth 1 -name 'linux-image-amd64_*.deb' | head -n1)
    [[ -n $meta ]] || die "apt-get download linux-image-amd64 produced no .deb"
    # Depends: linux-image-6.1.0-NN-amd64 (= ...): NN moves with ABI bumps.
    versioned=$(dpkg-deb -f "$meta" Depends | tr ',' '\n' | sed -n 's/^ *\(linux-image-[0-9][^ ]*\).*/\1/p' | head -n1)
    [[ -n $versioned ]] || die "cannot find the versioned kernel package in $(dpkg-deb -f "$meta" Depends)"
    (cd "$dl" && apt-get download -q "$versioned" >/dev/null 2>&1) ||
        die "apt-get download $versioned failed"
    dpkg-deb -x "$dl/${versioned}"_*.deb "$dl/root"
    local vmlinuz
    vmlinuz=$(find "$dl/root/boot" -maxdepth 1 -name 'vmlinuz-*' | head -n1)
    [[ -f $vmlinuz ]] || die "no boot/vmlinuz-* in $versioned"
    mkdir -p "$cache/kernel"
    cp "$vmlinuz" "$cache/kernel/vmlinuz"
    echo "$versioned" >"$cache/kernel/VERSION"
    # The ELF vmlinux inside boots about twice as fast (QEMU's PVH entry,
    # no self-decompression under emulation): find the XZ stream's magic
    # and decompress from there.
    if command -v xz >/dev/null; then
        local offset
        offset=$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$vmlinuz" | head -n1 | cut -d: -f1 || true)
        # --single-stream stops at the end of the XZ data (the rest of
        # vmlinuz follows it); a file, not a pipe, so no SIGPIPE on the way.
        if [[ -n $offset ]] &&
            tail -c +"$((offset + 1))" "$vmlinuz" >"$dl/payload.xz" &&
            xz -dc --single-stream "$dl/payload.xz" >"$cache/kernel/vmlinux.tmp" 2>/dev/null &&
            [[ $(od -An -tx1 -N4 "$cache/kernel/vmlinux.tmp" | tr -d ' ') == 7f454c46 ]]; then
            mv "$cache/kernel/vmlinux.tmp" "$cache/kernel/vmlinux"
        else
            rm -f "$cache/kernel/vmlinux.tmp"
            say "could not extract vmlinux; booting the compressed vmlinuz (slower)"
        fi
    else
        say "xz not found (apt package xz-utils); booting the compressed vmlinuz (slower)"
    fi
    rm -rf "$dl"
}

if [[ -n ${CORRAL_VM_KERNEL:-} ]]; then
    kernel=$CORRAL_VM_KERNEL
    [[ -f $kernel ]] || die "CORRAL_VM_KERNEL=$kernel does not exist"
else
    [[ -f $cache/kernel/vmlinuz ]] || fetch_kernel
    kernel=$cache/kernel/vmlinux
    [[ -f $kernel ]] || kernel=$cache/kernel/vmlinuz
    say "kernel: $(cat "$cache/kernel/VERSION" 2>/dev/null || echo '?') ($(basename "$kernel"))"
fi

# --- test binaries -----------------------------------------------------------
say "building $crate tests"
build_json=$work/build.json
(cd "$repo" && cargo test -p "$crate" --no-run --message-format=json >"$build_json") ||
    die "cargo test -p $crate --no-run failed"
stage=$work/initramfs
mkdir -p "$stage"/{bin,dev,proc,sys,tmp,tests}
tests=()
while IFS=$'\t' read -r name exe; do
    # Only binaries that hold ignored tests: the rest ran on the host.
    # grep reads the whole list (no -q): with pipefail, a grep that quits
    # at the first match can kill the lister with SIGPIPE and fail the test.
    if "$exe" --list --ignored 2>/dev/null | grep ': test$' >/dev/null; then
        tests+=("$name")
        cp "$exe" "$stage/tests/$name"
    fi
done < <(grep '"reason":"compiler-artifact"' "$build_json" |
    grep '"executable":"/' |
    sed -n 's/.*"target":{[^}]*"name":"\([^"]*\)".*"executable":"\([^"]*\)".*/\1\t\2/p')
((${#tests[@]})) || die "no test binary of $crate holds ignored tests"
say "guest runs: ${tests[*]}"

# --- initramfs -------------------------------------------------------------
cp "$busybox" "$stage/bin/busybox"
# Test binaries are dynamically linked: pack what ldd lists, at the same paths.
for bin in "$stage"/tests/*; do
    ldd "$bin" | grep -o '/[^ ]*' | while read -r lib; do
        mkdir -p "$stage$(dirname "$lib")"
        cp -L "$lib" "$stage$lib"
    done
done
if command -v strip >/dev/null; then
    strip --strip-debug "$stage"/tests/* 2>/dev/null || true
fi
if [[ $(id -u) == 0 ]]; then
    mknod -m 600 "$stage/dev/console" c 5 1
fi
cat >"$stage/init" <<'INIT'
#!/bin/busybox sh
# Guest init: mount what the tests need, give them a real cgroup v2
# hierarchy with memory, pids and cpu enabled at the root, run every test
# binary's ignored tests, report "<name> <exit code>" on ttyS1, power off.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tmpfs tmpfs /tmp
report() { echo "$1 $2" >/dev/ttyS1; }
if ! mount -t cgroup2 cgroup2 /sys/fs/cgroup; then
    report setup 1
    poweroff -f
fi
if ! echo "+cpu +memory +pids" >/sys/fs/cgroup/cgroup.subtree_control; then
    report setup 2
    poweroff -f
fi
report setup 0
export CORRAL_TEST_CGROUP2_ROOT=/sys/fs/cgroup RUST_BACKTRACE=1 HOME=/tmp
echo "guest: $(uname -r), cgroup2 controllers: $(cat /sys/fs/cgroup/cgroup.subtree_control)"
for test in /tests/*; do
    name=${test##*/}
    echo "guest: running $name"
    "$test" --ignored --test-threads=1 --show-output
    report "$name" "$?"
done
poweroff -f
INIT
chmod +x "$stage/init"
(cd "$stage" && find . -print0 | cpio --null -o -H newc --quiet) | gzip -1 >"$work/initrd.gz"

# --- boot ------------------------------------------------------------------
# /dev/kvm may exist without hardware virtualisation behind it (a stock
# kernel then hangs instead of failing): use KVM only with vmx/svm.
if grep -qwE 'vmx|svm' /proc/cpuinfo && [[ -w /dev/kvm ]]; then
    accel=(-accel kvm -cpu host)
else
    accel=(-accel tcg -cpu max)
fi
say "booting (${accel[*]}, timeout ${timeout_s}s)"
boot_started=$(date +%s%N)
results=$work/results
console=$work/console.log
: >"$results"
set +e
timeout "$timeout_s" qemu-system-x86_64 \
    -M pc -m 512 -nodefaults -no-user-config -display none -no-reboot \
    "${accel[@]}" \
    -kernel "$kernel" -initrd "$work/initrd.gz" \
    -append 'console=ttyS0 quiet panic=-1 init_on_alloc=0' \
    -serial stdio -serial "file:$results" </dev/null >"$console" 2>&1
qemu_rc=$?
set -e
boot_s=$(elapsed "$boot_started")

# --- verdict ---------------------------------------------------------------
failed=()
[[ $qemu_rc == 124 ]] && failed+=("guest timed out after ${timeout_s}s")
[[ $qemu_rc != 0 && $qemu_rc != 124 ]] && failed+=("qemu exited with $qemu_rc")
tr -d '\r' <"$results" >"$results.clean"
for name in setup "${tests[@]}"; do
    rc=$(awk -v n="$name" '$1 == n { print $2 }' "$results.clean" | tail -n1)
    if [[ -z $rc ]]; then
        failed+=("$name: no result")
    elif [[ $rc != 0 ]]; then
        failed+=("$name: exit code $rc")
    fi
done

total_s=$(elapsed "$started")
if ((${#failed[@]})); then
    echo "----- guest console -----" >&2
    tr -d '\r' <"$console" >&2
    echo "----- guest results -----" >&2
    cat "$results.clean" >&2
    echo "-------------------------" >&2
    for f in "${failed[@]}"; do say "FAILED: $f"; done
    exit 1
fi
if [[ ${CORRAL_VM_VERBOSE:-0} == 1 ]]; then
    tr -d '\r' <"$console"
fi
tr -d '\r' <"$console" | grep -E '^test result:' | sed 's/^/vm: guest: /' >&2 || true
say "passed: ${tests[*]} (guest ${boot_s}s, total ${total_s}s)"
