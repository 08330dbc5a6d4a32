#!/usr/bin/env bash
# Builds the AssemblyScript example with the assemblyscript compiler from npm (a devDependency of
# Roam, pinned in package.json: `npm ci` installs it). Usage: build.sh [OUTDIR] (default: ./build).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/build}"
mkdir -p "$out"
# --exportStart _start: the top level runs as a WASI command's _start, which Roam enters.
# --runtime stub: the sieve allocates a few arrays once; it needs no garbage collector.
"$here/../../node_modules/.bin/asc" "$here/sieve.ts" -o "$out/sieve.wasm" \
  -O3 --runtime stub --exportStart _start
