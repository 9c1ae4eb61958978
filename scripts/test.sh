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

echo "== cargo leptos build"
cargo leptos build

echo "== playwright (end-to-end, Chromium)"
(cd end2end && PLAYWRIGHT_JSON_OUTPUT_NAME="../$logs/playwright.json" npx playwright test --reporter=list,json)

rust_passed=$(awk '/^test result:/ { s += $4 } END { print s + 0 }' "$logs/cargo-test.txt")
rust_failed=$(awk '/^test result:/ { s += $6 } END { print s + 0 }' "$logs/cargo-test.txt")
read -r e2e_passed e2e_failed < <(node -e '
  const s = require(process.argv[1]).stats;
  console.log(s.expected, s.unexpected + s.flaky);' "$PWD/$logs/playwright.json")
echo "== summary: cargo test $rust_passed passed ($rust_failed failed), playwright $e2e_passed passed ($e2e_failed failed)"
echo "$((rust_passed + e2e_passed)) passed, $((rust_failed + e2e_failed)) failed"
