#!/usr/bin/env bash
# What one cached read costs the server: `GET /api/tasks` (a board of BOARD tasks) answered
# from the response cache, one instance on a fresh redis-server, loaded by wrk (`apt-get install
# wrk`) with CONNECTIONS keep-alive connections for RUNS runs of SECONDS each after a 2 s warm-up.
# Prints requests/s and the server's CPU per request (from /proc/<pid>/stat).
#
#   scripts/bench-reads.sh
#   SERVER=/tmp/old/server RUNS=5 scripts/bench-reads.sh    another build of the server
set -euo pipefail
cd "$(dirname "$0")/.."
board=${BOARD:-100} runs=${RUNS:-3} seconds=${SECONDS_PER_RUN:-5} connections=${CONNECTIONS:-50}
server=${SERVER:-target/release/server}
command -v wrk >/dev/null || { echo "bench-reads: wrk is missing (apt-get install wrk)" >&2; exit 1; }
. scripts/bench-lib.sh

start_redis
port=$(free_port)
REDIS_URL="$redis_url" LEPTOS_SITE_ADDR="127.0.0.1:$port" RUST_LOG=warn "$server" >"$work/server.log" 2>&1 &
server_pid=$!
pids+=("$server_pid")
url="http://127.0.0.1:$port/api/tasks"
wait_for "http://127.0.0.1:$port/health"
for i in $(seq "$board"); do
  curl -fs -X POST -H 'content-type: application/json' -d "{\"title\":\"board task $i\"}" "$url" >/dev/null
done
echo "GET /api/tasks: $(curl -fs "$url" | wc -c) bytes, $board tasks, $connections connections"
wrk -t1 -c"$connections" -d2s "$url" >/dev/null
cpu() { awk '{ print $14 + $15 }' "/proc/$server_pid/stat"; }
ticks=$(getconf CLK_TCK)
for run in $(seq "$runs"); do
  before=$(cpu)
  out=$(wrk -t1 -c"$connections" -d"${seconds}s" "$url")
  after=$(cpu)
  requests=$(awk '/requests in/ { print $1 }' <<<"$out")
  awk -v r="$run" -v n="$requests" -v s="$seconds" -v c=$((after - before)) -v t="$ticks" \
    'BEGIN { printf "run %d: %.0f requests/s, %.2f µs of server CPU per request\n", r, n / s, c * 1e6 / t / n }'
done
