#!/usr/bin/env bash
# A million idle streams on this box, then one event to all of them (docs/benchmarks.md, "A
# million streams"). One redis-server; INSTANCES release servers of the demo on it, each holding
# an equal share of the streams (a process may hold 20,000 descriptors here, so a million streams
# take at least 51 processes); the load tool holding the streams from SOURCES loopback addresses
# in workers of up to 19,000 streams. Once every stream is up, one event is published into Redis
# (as another instance would) and must reach every stream. Prints the load tool's figures: time
# until all are up, server memory per stream, kernel memory per stream (both ends: the clients
# are on this box too), the delivery time of the event (p50, p99, last) and the servers' CPU for it.
#
#   scripts/bench-million.sh                     1,000,000 streams on topic `tasks`
#   STREAMS=100000 scripts/bench-million.sh      a smaller run (instances and sources scale)
#   PRESENCE=1 scripts/bench-million.sh          every stream also asks the topic's presence
#   LOADTEST_ARGS="--concurrency 256"            more load tool options (default: 64 connects in
#                                                flight per worker)
#
# A refused open (503 `broker_unavailable` when an instance's Redis answers later than its 2 s
# bound under the connect storm) is retried, as the Leptos hook and EventSource-based clients do
# (`--reconnect`); the retries are counted in the figures.
#
# Limits it needs, set here for its own processes only (the README's production section says
# what each costs): the open-files soft limit raised to the hard one (each instance and each
# load tool worker holds up to ~19,500 sockets); the per-client stream bound and the per-instance
# connection bound lifted (all streams come from a few loopback addresses). It checks, and does
# not change, the machine-wide ones: fs.file-max (two descriptors per stream: both ends) and the
# memory free (about 12 GiB for a million).
set -euo pipefail
cd "$(dirname "$0")/.."
streams=${STREAMS:-1000000}
per_instance=${PER_INSTANCE:-19500}
instances=${INSTANCES:-$(( (streams + per_instance - 1) / per_instance ))}
# A source address towards one server gets a port per stream from the ephemeral range; past
# ~15,000 per address connects slow down (loadtest says why), so one address per 12,500.
sources_count=${SOURCES:-$(( streams / 12500 + 2 ))}
say() { printf '\033[1m[bench-million]\033[0m %s\n' "$*" >&2; }
fail() { say "FAILED: $*"; exit 1; }

ulimit -n "$(ulimit -Hn)"
[ "$(ulimit -n)" -ge $(( streams / instances + 200 )) ] || fail "open files $(ulimit -n): too few for $(( streams / instances )) streams per instance; set INSTANCES higher"
file_max=$(cat /proc/sys/fs/file-max)
[ "$file_max" -ge $(( streams * 2 + 100000 )) ] || fail "fs.file-max is $file_max: a stream takes two descriptors on this box"
avail_kib=$(awk '/^MemAvailable:/ {print $2}' /proc/meminfo)
need_kib=$(( streams * 12 ))
[ "$avail_kib" -ge "$need_kib" ] || fail "$(( avail_kib / 1024 )) MiB available; about $(( need_kib / 1024 )) MiB needed"
command -v redis-server >/dev/null || fail "redis-server is missing (run scripts/setup.sh)"

. scripts/bench-lib.sh
start_redis

say "$instances instances on one Redis, $streams streams from $sources_count source addresses"
urls=() server_pids=()
for i in $(seq "$instances"); do
  p=$(free_port)
  env REDIS_URL="$redis_url" LEPTOS_SITE_ADDR="127.0.0.1:$p" RUST_LOG=warn \
    SSE_MAX_STREAMS_PER_CLIENT=1000000 SSE_MAX_CONNECTIONS=$(( per_instance + 1000 )) \
    target/release/server >"$work/server-$i.log" 2>&1 &
  pids+=($!) server_pids+=($!)
  urls+=(--url "http://127.0.0.1:$p")
done
for u in "${urls[@]}"; do [ "$u" = --url ] || wait_for "$u/health" 30; done

sources=$(seq -s, -f '127.0.1.%g' 1 "$sources_count")
path=/events
[ "${PRESENCE:-0}" = 1 ] && path="/events?presence=tasks"
target/release/loadtest "${urls[@]}" --path "$path" --streams "$streams" --per-process 19000 \
  --sources "$sources" --events 1 --publish redis --redis "$redis_url" --timeout 120 --reconnect \
  $(printf -- '--pid %s ' "${server_pids[@]}") --quiet ${LOADTEST_ARGS:---concurrency 64} | tee "$work/summary.txt"
if ! grep -q '"complete_streams":'"$streams"',' "$work/summary.txt"; then
  mkdir -p /tmp/bench-million-logs && cp "$work"/*.log /tmp/bench-million-logs/
  fail "not every stream received the event (the servers' logs: /tmp/bench-million-logs)"
fi
say "every one of $streams streams received the event"
