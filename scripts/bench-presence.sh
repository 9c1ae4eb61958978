#!/usr/bin/env bash
# Presence at scale: MEMBERS (default 10,000) members of one topic over three instances on one
# redis-server, watched from a fourth; joins and leaves paced at RATE/s (default 1,000); TTL
# seconds for a killed instance's members (default 15). Prints the figures of
# loadtest/src/bin/presence-bench.rs. Release build; redis-server on a free loopback port.
#
#   scripts/bench-presence.sh
#   MEMBERS=10000 RATE=1000 TTL=15 scripts/bench-presence.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export RUSTFLAGS="--cfg erase_components"
cargo build --release -q -p loadtest --bin presence-bench
work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" --daemonize no >"$work/redis.log" 2>&1 &
redis=$!
trap 'kill $redis 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.05; done
target/release/presence-bench --redis "redis://127.0.0.1:$port" --members "${MEMBERS:-10000}" \
  --rate "${RATE:-1000}" --ttl "${TTL:-15}"
