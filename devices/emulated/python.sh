#!/bin/sh
# Start the emulated arm64 board's Python under qemu-aarch64-static:
#
#   EDGEMIA_ARM64_ROOT=ROOT EDGEMIA_ARM64_SITE=SITE [EDGEMIA_QEMU_CPU=cortex-a72] \
#     devices/emulated/python.sh -m edgemia capture ...
#
# ROOT is build-rootfs.sh's root file system (default
# /var/cache/edgemia/bookworm-arm64) and SITE the Python path of
# stage-site.sh. EDGEMIA_QEMU_CPU picks the emulated CPU model (qemu's
# default, max, has the dot product; cortex-a72 has not). binfmt_misc is
# not needed: qemu starts the interpreter itself and finds its libraries
# under ROOT (-L).
root="${EDGEMIA_ARM64_ROOT:-/var/cache/edgemia/bookworm-arm64}"
: "${EDGEMIA_ARM64_SITE:?EDGEMIA_ARM64_SITE must name the directory that stage-site.sh wrote}"
PYTHONPATH="$EDGEMIA_ARM64_SITE"
PYTHONDONTWRITEBYTECODE=1
export PYTHONPATH PYTHONDONTWRITEBYTECODE
# -P keeps the working directory off sys.path, so that a checkout there
# cannot shadow the staged package.
exec qemu-aarch64-static -cpu "${EDGEMIA_QEMU_CPU:-max}" -L "$root" "$root/usr/bin/python3.11" -P "$@"
