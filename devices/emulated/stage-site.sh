#!/usr/bin/env bash
# Assemble the Python path of the emulated arm64 board: this checkout's
# edgemia package with the cross-compiled kernel, and the pure-Python
# `tflite` package, which Debian does not ship.
#
#   devices/emulated/stage-site.sh KERNEL_SO SITE_DIR [TFLITE_PACKAGE_DIR]
#
# KERNEL_SO is the output of build-kernel.sh. TFLITE_PACKAGE_DIR defaults to
# the `tflite` package that the host's python3 imports. SITE_DIR is replaced.
set -euo pipefail

kernel="$1"
site="$2"
source_dir="$(cd "$(dirname "$0")/../.." && pwd)"
tflite_dir="${3:-$(python3 -c 'import os, tflite; print(os.path.dirname(tflite.__file__))')}"

rm -rf "$site"
mkdir -p "$site"
# Python sources only: no byte code, and no host (x86-64) kernel.
(cd "$source_dir" && find edgemia -name '*.py' -print0 | xargs -0 cp --parents -t "$site")
cp "$kernel" "$site/edgemia/"
(cd "$(dirname "$tflite_dir")" && find tflite -name '*.py' -print0 | xargs -0 cp --parents -t "$site")
echo "$site"
