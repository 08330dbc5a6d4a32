#!/usr/bin/env bash
# Builds the C examples with Debian's clang for wasm32-wasi (apt packages clang, lld, wasi-libc,
# libclang-rt-dev-wasm32; .ci/run installs them). Usage: build.sh [OUTDIR] (default: ./build).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/build}"
mkdir -p "$out"
for src in journey echo-server recursion; do
  clang --target=wasm32-wasi -O2 -o "$out/$src.wasm" "$here/$src.c"
done
