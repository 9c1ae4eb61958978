#!/usr/bin/env bash
# Installs what the app and its tests need, only what is missing. Safe to run again: a second
# run on a ready machine takes a second or two.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_LEPTOS_VERSION=0.3.10
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

# Debian packages: Redis for the tests and multi-instance runs, Chromium for Playwright (and,
# with its driver, for the Leptos hook's own tests in the browser), nginx and Prometheus for the
# production-scale example (whose smoke run is part of the tests).
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
command -v nginx >/dev/null || missing+=(nginx)
command -v prometheus >/dev/null || missing+=(prometheus)
if [ ${#missing[@]} -gt 0 ]; then
  say "apt-get install ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# clippy checks the library crates against their stated MSRV (scripts/test.sh).
if ! cargo clippy --version >/dev/null 2>&1; then
  say "rustup component add clippy"
  rustup component add clippy
fi
if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  say "rustup target add wasm32-unknown-unknown"
  rustup target add wasm32-unknown-unknown
fi

# mdBook builds the guide (docs/guide) in the test command.
MDBOOK_VERSION=0.4.52
if ! mdbook --version 2>/dev/null | grep -q "$MDBOOK_VERSION"; then
  say "cargo install mdbook $MDBOOK_VERSION (about 2 minutes)"
  cargo install --locked mdbook --version "$MDBOOK_VERSION"
fi

if ! cargo leptos --version 2>/dev/null | grep -q "$CARGO_LEPTOS_VERSION"; then
  say "cargo install cargo-leptos@$CARGO_LEPTOS_VERSION (about 11 minutes, once)"
  cargo install cargo-leptos@"$CARGO_LEPTOS_VERSION" --locked
fi

# cargo-leptos runs whatever wasm-bindgen is on PATH: it must equal Cargo.lock's version.
wb_version=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
if ! wasm-bindgen --version 2>/dev/null | grep -qx "wasm-bindgen $wb_version"; then
  say "cargo install wasm-bindgen-cli $wb_version (about 2 minutes, once per version)"
  # Not --locked: its own lockfile pins a webpki-roots that the registry here lacks.
  cargo install wasm-bindgen-cli --version "$wb_version" --force
fi

want_pw=$(node -p "require('./end2end/package.json').devDependencies['@playwright/test']")
have_pw=$(node -p "try { require('./end2end/node_modules/@playwright/test/package.json').version } catch { '' }")
if [ "$want_pw" != "$have_pw" ]; then
  say "npm install (end2end)"
  (cd end2end && npm install --no-audit --no-fund --loglevel=error)
fi
