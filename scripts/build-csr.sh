#!/usr/bin/env bash
# Builds the client-side-rendered example (examples/csr) to WASM and puts it, with its page,
# under target/site/csr/, where the demo server serves it as /csr/index.html. Uses the
# workspace's build cache. Run by scripts/test.sh before the Playwright suite.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
say() { printf '\033[1m[csr]\033[0m %s\n' "$*"; }
export CARGO_TARGET_DIR="$root/target"
say "cargo build (csr, wasm32)"
(cd examples/csr && cargo build --locked --target wasm32-unknown-unknown)
out=target/site/csr
mkdir -p "$out"
wasm-bindgen --target web --no-typescript --out-dir "$out" target/wasm32-unknown-unknown/debug/csr-board.wasm
cp examples/csr/index.html "$out/index.html"
say "built: $out ($(du -sh "$out" | cut -f1))"
