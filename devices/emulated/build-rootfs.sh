#!/usr/bin/env bash
# Build a Debian bookworm arm64 root file system that runs `edgemia capture`
# under qemu-aarch64-static, without binfmt_misc or a chroot.
#
#   devices/emulated/build-rootfs.sh [ROOT]
#
# ROOT defaults to $EDGEMIA_ARM64_ROOT, else /var/cache/edgemia/bookworm-arm64.
# The root holds Python 3.11, Debian's numpy, scipy, flatbuffers, onnx and
# rich, and the Python headers that cross-compiling the kernel needs. It is
# built once and reused: the script does nothing when ROOT/.complete lists
# the same packages. Needs root
# (debootstrap), the debootstrap package and access to a Debian mirror
# (EDGEMIA_DEBIAN_MIRROR, default http://deb.debian.org/debian).
#
# debootstrap's first stage only unpacks the "required" packages, and its
# second stage would have to run arm64 programs, which needs binfmt_misc.
# So this runs the first stage alone and unpacks every downloaded package
# with dpkg-deb: no maintainer script runs, which a Python that is only
# started through qemu-aarch64-static -L ROOT does not need.
set -euo pipefail

root="${1:-${EDGEMIA_ARM64_ROOT:-/var/cache/edgemia/bookworm-arm64}}"
mirror="${EDGEMIA_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
packages=python3,python3-numpy,python3-scipy,python3-flatbuffers,python3-onnx,python3-rich,libpython3.11-dev

if [ "$(cat "$root/.complete" 2>/dev/null)" = "$packages" ]; then
  echo "$root is complete already"
  exit 0
fi
command -v debootstrap >/dev/null || { echo "debootstrap is not installed (apt-get install debootstrap)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "debootstrap needs root" >&2; exit 1; }

# Build beside the final directory and rename at the end, so that an
# interrupted build never leaves a root that looks complete.
partial="$root.partial"
rm -rf "$partial"
mkdir -p "$partial"
debootstrap --foreign --arch=arm64 --variant=minbase --include="$packages" bookworm "$partial" "$mirror"
for deb in "$partial"/var/cache/apt/archives/*.deb; do
  dpkg-deb -x "$deb" "$partial"
done
rm -f "$partial"/var/cache/apt/archives/*.deb
# update-alternatives, a maintainer script, would link the reference BLAS and
# LAPACK that numpy loads; link them here instead.
for library in blas/libblas.so.3 lapack/liblapack.so.3; do
  ln -sf "$library" "$partial/usr/lib/aarch64-linux-gnu/$(basename "$library")"
done
# The Python headers and the aarch64 interpreter must both be there.
test -x "$partial/usr/bin/python3.11"
test -f "$partial/usr/include/python3.11/Python.h"
echo "$packages" > "$partial/.complete"
rm -rf "$root"
mv "$partial" "$root"
echo "built $root"
