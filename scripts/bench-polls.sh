#!/usr/bin/env bash
# What a long poll costs the server beside a stream, on the embedded broker: POLLERS clients
# (default 500) follow `tasks` by polls while EVENTS tasks (default 200) are created at RATE/s
# (default 20), then as many streams do the same through `loadtest`, each on a fresh release
# server. Prints both tools' figures; the server's CPU per delivery is the one to compare.
#
#   scripts/bench-polls.sh
#   POLLERS=500 EVENTS=200 RATE=20 scripts/bench-polls.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export RUSTFLAGS="--cfg erase_components" LEPTOS_OUTPUT_NAME=taskboard
cargo build --release -q -p server -p loadtest
pollers=${POLLERS:-500} events=${EVENTS:-200} rate=${RATE:-20}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
server=
trap '[ -n "$server" ] && kill $server 2>/dev/null; wait 2>/dev/null || true' EXIT
start_server() {
  port=$(free_port)
  # The per-client limits are lifted for this one client address (the benchmark's own setting).
  SSE_MAX_STREAMS_PER_CLIENT=100000 HTTP_MAX_PENDING_PER_CLIENT=100000 SESSION_SECRET=poll-bench-secret-of-thirty-two-bytes \
    LEPTOS_SITE_ADDR=127.0.0.1:$port LEPTOS_SITE_ROOT=target/site RUST_LOG=warn target/release/server &
  server=$!
  for _ in $(seq 200); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && return; sleep 0.05; done
  echo "the server did not start" >&2; exit 1
}
echo "== polls"
start_server
target/release/poll-bench --url "http://127.0.0.1:$port" --pid "$server" --pollers "$pollers" --events "$events" --rate "$rate"
kill $server; wait $server 2>/dev/null || true
echo "== streams"
start_server
target/release/loadtest --url "http://127.0.0.1:$port" --pid "$server" --streams "$pollers" --events "$events" --rate "$rate" \
  | grep -Ei "deliver|cpu|events"
