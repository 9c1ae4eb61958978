#!/usr/bin/env bash
# What a write costs with and without an idempotency key, on the embedded broker and on Redis:
# WRITES tasks created (default 2000) by CLIENTS concurrent clients (default 16), without a key,
# with a key each, and with those keys again (replays), each on a fresh release server.
#
#   scripts/bench-writes.sh
#   WRITES=5000 CLIENTS=32 scripts/bench-writes.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export RUSTFLAGS="--cfg erase_components" LEPTOS_OUTPUT_NAME=taskboard
cargo build --release -q -p server -p loadtest
writes=${WRITES:-2000} clients=${CLIENTS:-16}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
server= redis=
trap '[ -n "$server" ] && kill $server 2>/dev/null; [ -n "$redis" ] && kill $redis 2>/dev/null; wait 2>/dev/null || true' EXIT
run() {
  port=$(free_port)
  SESSION_SECRET=write-bench-secret-of-thirty-two-bytes LEPTOS_SITE_ADDR=127.0.0.1:$port LEPTOS_SITE_ROOT=target/site \
    RUST_LOG=warn "$@" target/release/server &
  server=$!
  for _ in $(seq 200); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.05; done
  target/release/write-bench --url "http://127.0.0.1:$port" --pid "$server" --writes "$writes" --clients "$clients"
  kill $server; wait $server 2>/dev/null || true; server=
}
echo "== embedded broker"
run env
echo "== redis-server (the tasks, the log and the keys in it)"
rport=$(free_port)
redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no >/dev/null &
redis=$!
for _ in $(seq 100); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.05; done
run env REDIS_URL="redis://127.0.0.1:$rport"
