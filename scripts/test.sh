#!/usr/bin/env bash
# Runs every test: unit and doc tests, integration tests against real servers and a real
# redis-server, then the Playwright end-to-end tests in Chromium. Fails loudly if any cannot run.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh

# The same flags cargo-leptos uses for debug builds, so the tests and the app share one build of
# every dependency instead of compiling the world twice.
export RUSTFLAGS="--cfg erase_components"

echo "== cargo test (unit, doc, integration with redis-server)"
cargo test --workspace --locked

echo "== cargo leptos build"
cargo leptos build

echo "== playwright (end-to-end, Chromium)"
cd end2end
npx playwright test
