#!/usr/bin/env bash
# Proof that the integration is separable: writes a minimal Leptos + axum app into a temporary
# folder outside the workspace, depending on the library crates by path only; checks that no
# demo crate or demo dependency is in its dependency tree (nor in the libraries'); builds it for
# `ssr` and for `hydrate` (wasm32); starts it and checks a publish -> SSE -> typed decode round
# trip (its own `cargo test`). Shares the workspace's build cache. Run by scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
say() { printf '\033[1m[adopter]\033[0m %s\n' "$*"; }

app=$(mktemp -d "${TMPDIR:-/tmp}/sse-notify-adopter.XXXXXX")
trap 'rm -rf "$app"' EXIT
mkdir -p "$app/src" "$app/tests"
sed "s|@ROOT@|$root|g" scripts/adopter/Cargo.toml.in > "$app/Cargo.toml"
cp scripts/adopter/src/*.rs "$app/src/"
# Its main.rs is the guide's (docs/guide/src/adopt.md), as the page shows it (only the crate's name put in).
awk '/<!-- adopter: main.rs/ { on = 1; next } on && /^```rust$/ { body = 1; next } body && /^```$/ { exit } body { print }' \
  docs/guide/src/adopt.md | sed 's/my_app::/adopter::/' > "$app/src/main.rs"
grep -q 'SseApp::from_env' "$app/src/main.rs" || { echo "FAIL: no main.rs block found in docs/guide/src/adopt.md" >&2; exit 1; }
cp scripts/adopter/tests/*.rs "$app/tests/"
# The workspace's lock pins the same versions, so the shared build cache is reused.
cp Cargo.lock "$app/Cargo.lock"
export CARGO_TARGET_DIR="$root/target"

# The demo's crates and the demo-only dependencies must not reach an adopter.
forbidden='^(shared|client|server|cookie) '
check_tree() {
  local what=$1; shift
  local tree
  tree=$(cargo tree "$@" -e normal,build --prefix none --format '{p}' | sort -u)
  if grep -E "$forbidden" <<<"$tree"; then
    echo "FAIL: $what pulls in the demo's crates or dependencies (above)" >&2
    exit 1
  fi
  say "dependency tree of $what: $(wc -l <<<"$tree") crates, none of the demo's"
}
for lib in sse-notify-core sse-notify-broker sse-notify-axum leptos-sse-notify; do
  check_tree "$lib" -p "$lib" --all-features
done
if cargo tree -p sse-notify-broker --all-features -e normal --prefix none --format '{p}' | grep -E '^(axum|tower|tower-http|hyper|hyper-util|http-body|leptos) '; then
  echo "FAIL: sse-notify-broker depends on an HTTP or web framework crate (above)" >&2
  exit 1
fi
if cargo tree -p sse-notify-axum -e normal --prefix none --format '{p}' | grep -E '^leptos'; then
  echo "FAIL: sse-notify-axum depends on leptos" >&2
  exit 1
fi
if cargo tree -p sse-notify-core -e normal --prefix none --format '{p}' | grep -E '^(tokio|leptos|axum) '; then
  echo "FAIL: sse-notify-core depends on an async runtime or framework" >&2
  exit 1
fi
(cd "$app" && check_tree "the adopter app (ssr)" --features ssr --offline)
(cd "$app" && check_tree "the adopter app (hydrate)" --features hydrate --target wasm32-unknown-unknown --offline)

started=$(date +%s)
say "cargo build (ssr)"
(cd "$app" && cargo build --offline --features ssr --bin adopter)
say "cargo build (hydrate, wasm32)"
(cd "$app" && cargo build --offline --lib --features hydrate --target wasm32-unknown-unknown)
say "built in $(( $(date +%s) - started )) s; round trip:"
(cd "$app" && cargo test --offline --features ssr)

# --- The CSR shape: a client-side-rendered page on a plain axum API (the guide's adopt page, "A CSR frontend on
# a plain axum API"), written from that page's blocks as they are. Each block must also be
# examples/notes' file (the example is what the page shows); the only thing changed here is
# where the [patch] finds the checkout.
notes=$(mktemp -d "${TMPDIR:-/tmp}/sse-notify-notes.XXXXXX")
trap 'rm -rf "$app" "$notes"' EXIT
block() { awk -v want="<!-- notes: $1 -->" '$0 == want { on = 1; next } on && /^```/ && !body { body = 1; next } body && /^```$/ { exit } body { print }' docs/guide/src/adopt.md; }
for file in Cargo.toml api/Cargo.toml api/src/main.rs web/Cargo.toml web/src/main.rs web/index.html; do
  mkdir -p "$notes/$(dirname "$file")"
  block "$file" > "$notes/$file"
  [ -s "$notes/$file" ] || { echo "FAIL: docs/guide/src/adopt.md has no block for $file" >&2; exit 1; }
  example="examples/notes/$file"
  if [ "$file" = Cargo.toml ]; then
    # The [patch] names where the checkout is: the page's and the example's differ only there.
    crates='s#path = "[^"]*/crates/#path = "CRATES/#'
    sed -E "$crates" "$example" > "$notes/example-Cargo.toml"
    sed -E "$crates" "$notes/$file" > "$notes/page-Cargo.toml"
    example="$notes/example-Cargo.toml"
    if ! diff -u "$example" "$notes/page-Cargo.toml"; then
      echo "FAIL: docs/guide/src/adopt.md's $file and examples/notes/$file differ (above)" >&2
      exit 1
    fi
    sed -i -E "s#path = \"[^\"]*/crates/#path = \"$root/crates/#" "$notes/$file"
    continue
  fi
  if ! diff -u "$example" "$notes/$file"; then
    echo "FAIL: docs/guide/src/adopt.md's $file and examples/notes/$file differ (above)" >&2
    exit 1
  fi
done
cp Cargo.lock "$notes/Cargo.lock"
ln -s "$root/target" "$notes/target"
(cd "$notes" && check_tree "the notes API" -p notes-api --offline && check_tree "the notes page" -p notes-web --target wasm32-unknown-unknown --offline)
if (cd "$notes" && cargo tree -p notes-api -e normal --prefix none --format '{p}' --offline | grep -E '^leptos'); then
  echo "FAIL: the plain axum API pulls in leptos" >&2
  exit 1
fi
started=$(date +%s)
say "the guide's build commands (notes: API and CSR page)"
block build > "$notes/build.sh"
(cd "$notes" && bash -euo pipefail build.sh)
say "built in $(( $(date +%s) - started )) s"
out="$root/target/adopter-csr"
rm -rf "$out" && mkdir -p "$out"
cp "$root/target/debug/notes-api" "$out/notes-api"
cp -r "$notes/web/dist" "$out/dist"
say "the notes shape is in target/adopter-csr (end2end/tests/adopter-csr.spec.ts runs it)"
