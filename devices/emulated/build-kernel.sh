#!/usr/bin/env bash
# Cross-compile edgemia's native kernel (the _native Python extension) for
# the emulated arm64 board, with aarch64-linux-gnu-g++:
#
#   devices/emulated/build-kernel.sh ROOT OUT_DIR [PYBIND11_INCLUDE]
#
# ROOT is the root file system of build-rootfs.sh, which provides the aarch64
# Python headers. PYBIND11_INCLUDE defaults to the headers of the pybind11
# package that `python3 -m pybind11` finds; it must be 2.12 or newer, because
# older pybind11 returns wrong arrays with numpy 2. Writes
# OUT_DIR/_native.cpython-311-aarch64-linux-gnu.so.
#
# The source list is every .cc file under csrc/, the same files that
# CMakeLists.txt builds, and the flags are the ones it gives: -O3 with
# -ffp-contract=off everywhere, and -march=armv8.2-a+dotprod for the
# dot-product GEMM path only (cmake/EdgemiaGemm.cmake).
set -euo pipefail

root="$1"
out="$2"
source_dir="$(cd "$(dirname "$0")/../.." && pwd)"
compiler="${CXX_AARCH64:-aarch64-linux-gnu-g++}"
pybind11_include="${3:-$(python3 -m pybind11 --includes | tr ' ' '\n' | grep pybind11 | sed 's/^-I//' | head -n 1)}"

python_include="$root/usr/include/python3.11"
pyconfig_include="$root/usr/include/aarch64-linux-gnu/python3.11"
test -f "$python_include/Python.h" || { echo "$python_include/Python.h not found; run build-rootfs.sh" >&2; exit 1; }
test -f "$pybind11_include/pybind11/pybind11.h" || { echo "pybind11 headers not found in '$pybind11_include'" >&2; exit 1; }

mkdir -p "$out/objects" "$out/include/aarch64-linux-gnu"
# Python.h includes <aarch64-linux-gnu/python3.11/pyconfig.h>. Adding the
# root's /usr/include would also put its C library headers before the cross
# compiler's, so only that one directory is linked in.
ln -sfn "$pyconfig_include" "$out/include/aarch64-linux-gnu/python3.11"
flags=(-std=c++17 -O3 -ffp-contract=off -fPIC -fvisibility=hidden -Wall -Wextra
       -I"$source_dir/csrc" -isystem "$pybind11_include" -isystem "$python_include" -isystem "$out/include")
objects=()
pids=()
for source in $(cd "$source_dir" && find csrc -name '*.cc' | sort); do
  extra=()
  if [ "$source" = csrc/gemm/gemm_neondot.cc ]; then
    extra=(-march=armv8.2-a+dotprod)
  fi
  object="$out/objects/$(echo "$source" | tr / _).o"
  "$compiler" "${flags[@]}" "${extra[@]}" -c "$source_dir/$source" -o "$object" &
  objects+=("$object")
  pids+=($!)
  # Two compilers at a time; `wait PID` fails the script when that compiler failed.
  if [ ${#pids[@]} = 2 ]; then
    wait "${pids[0]}"
    wait "${pids[1]}"
    pids=()
  fi
done
for pid in "${pids[@]}"; do wait "$pid"; done
"$compiler" -shared -o "$out/_native.cpython-311-aarch64-linux-gnu.so" "${objects[@]}" -lpthread
echo "$out/_native.cpython-311-aarch64-linux-gnu.so"
