#!/usr/bin/env bash
# Runs every test: unit and doc tests, integration tests against real servers and a real
# redis-server, then the Playwright end-to-end tests in Chromium. Fails loudly if any cannot run.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh

# The same flags and compile-time environment cargo-leptos uses for debug builds, so the tests
# and the app share one build of every dependency instead of compiling the world twice. Leptos
# reads LEPTOS_OUTPUT_NAME at compile time: a server binary built without it asks the browser for
# `<name>_bg.wasm`, which cargo-leptos does not produce, and the page never hydrates.
export RUSTFLAGS="--cfg erase_components"
export LEPTOS_OUTPUT_NAME=taskboard
logs=target/test-logs
mkdir -p "$logs"

echo "== cargo test (unit, doc, integration with redis-server)"
cargo test --workspace --locked 2>&1 | tee "$logs/cargo-test.txt"

echo "== the server crate without Redis (its default feature off: the embedded broker only)"
cargo test --locked -p sse-notify-broker -p sse-notify-axum --no-default-features --lib --tests 2>&1 | tee "$logs/no-redis-test.txt"

echo "== the Leptos hook's own tests, in headless Chromium (wasm-bindgen-test, chromium-driver)"
CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner CHROMEDRIVER=/usr/bin/chromedriver \
  cargo test --locked -p leptos-sse-notify --features hydrate --target wasm32-unknown-unknown --lib 2>&1 |
  tee "$logs/wasm-test.txt"

echo "== cargo doc (the library crates, warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --locked --no-deps -p sse-notify-core -p sse-notify-broker -p sse-notify-axum -p leptos-sse-notify

echo "== the library crates as crates.io would take them: cargo package (each built from its package), manifests, MSRV"
# Cargo verifies each crate against the others through a local registry of the new tarballs,
# and takes a registry's crates as never changing: it unpacks them into CARGO_HOME once per
# name and version, and keeps what it built of them without looking at their files (their
# fingerprints list none). A crate changed since the last run, at the same version, would be
# checked against its old copy: both go first.
rm -rf "${CARGO_HOME:-$HOME/.cargo}"/registry/src/-*/{sse-notify-core,sse-notify-broker,sse-notify-axum,leptos-sse-notify}-0.1.0
for unit in "${CARGO_TARGET_DIR:-target}"/debug/.fingerprint/{sse-notify-core,sse-notify-broker,sse-notify-axum,leptos-sse-notify}-*/; do
  deps=$(ls "$unit"dep-lib-* 2>/dev/null | head -1 || true)
  if [ -n "$deps" ] && ! grep -qa "src/" "$deps"; then rm -rf "$unit"; fi
done
cargo package --locked --allow-dirty -p sse-notify-core -p sse-notify-broker -p sse-notify-axum -p leptos-sse-notify
python3 scripts/check-crates.py
# No standard-library item newer than the stated MSRV (clippy reads rust-version), on both sides.
cargo clippy --locked -p sse-notify-core -p sse-notify-broker -p sse-notify-axum -p leptos-sse-notify \
  --features leptos-sse-notify/ssr -- -A clippy::all -D clippy::incompatible_msrv
cargo clippy --locked -p leptos-sse-notify --features hydrate --target wasm32-unknown-unknown -- \
  -A clippy::all -D clippy::incompatible_msrv

echo "== the guide (mdBook): built, and no link in it, the README or a crate's README broken"
mdbook build docs/guide
python3 scripts/check-links.py

echo "== cargo leptos build"
cargo leptos build

echo "== the client-side-rendered example (examples/csr, served under /csr/)"
./scripts/build-csr.sh

echo "== adopter (a Leptos app outside the workspace, the libraries by path only)"
./scripts/adopter-test.sh 2>&1 | tee "$logs/adopter.txt"

echo "== playwright (end-to-end, Chromium)"
(cd end2end && PLAYWRIGHT_JSON_OUTPUT_NAME="../$logs/playwright.json" npx playwright test --reporter=list,json)

echo "== production example, smoke run (Redis, 3 instances, nginx, Prometheus, the load tool)"
./examples/production/run.sh --smoke 2>&1 | tee "$logs/production.txt"

echo "== production example on Sentinel, smoke run (the Redis primary killed mid-run)"
REDIS_SHAPE=sentinel ./examples/production/run.sh --smoke 2>&1 | tee "$logs/production-sentinel.txt"

# Doc tests are compiled examples, most of which run an assertion; they are counted apart.
count() { awk -v field="$1" '/^test result:/ { s += $field } END { print s + 0 }' "${@:2}"; }
doc_passed=$(awk '/^   Doc-tests/ { doc = 1 } /^     Running/ { doc = 0 } doc && /^test result:/ { s += $4 } END { print s + 0 }' "$logs/cargo-test.txt")
rust_logs=("$logs/cargo-test.txt" "$logs/no-redis-test.txt" "$logs/adopter.txt" "$logs/wasm-test.txt")
rust_passed=$(( $(count 4 "${rust_logs[@]}") - doc_passed ))
rust_failed=$(count 6 "${rust_logs[@]}")
read -r e2e_passed e2e_failed < <(node -e '
  const s = require(process.argv[1]).stats;
  console.log(s.expected, s.unexpected + s.flaky);' "$PWD/$logs/playwright.json")
# The production smoke runs are two more tests (the script fails the run if one does not pass).
echo "== summary: cargo test $rust_passed passed ($rust_failed failed) plus $doc_passed doc examples, playwright $e2e_passed passed ($e2e_failed failed), production smokes (single, sentinel) passed"
echo "$((rust_passed + e2e_passed + 2)) passed, $((rust_failed + e2e_failed)) failed"
