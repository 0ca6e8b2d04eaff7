#!/usr/bin/env bash
# Installs what tests/vm/run.sh needs on Debian/Ubuntu (CI calls this).
# The kernel itself is fetched by run.sh with `apt-get download` and cached.
set -euo pipefail
sudo=()
if [[ $(id -u) != 0 ]]; then
    sudo=(sudo)
fi
"${sudo[@]}" apt-get update -q
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q --no-install-recommends \
    qemu-system-x86 busybox-static cpio xz-utils
