#!/usr/bin/env bash
# The production-scale example: Redis, three app instances, nginx in front (the SSE settings
# the guide documents), Prometheus scraping every instance with alerting rules, and the load
# tool driving streams and events through nginx. Prints the load tool's figures and what
# Prometheus saw.
#
#   examples/production/run.sh            release build; STREAMS (10000), EVENTS (100), RATE (100/s),
#                                         INSTANCES (3), PUBLISH (rest: POST /api/tasks through
#                                         nginx; redis: straight into Redis), SOURCES (127.0.0.1),
#                                         LOADTEST_ARGS (more load tool options, e.g.
#                                         "--concurrency 64")
#   examples/production/run.sh --direct   the same, the load tool connecting to the instances
#                                         themselves (past nginx's per-worker descriptor limit:
#                                         the 100,000-stream run in docs/benchmarks.md)
#   examples/production/run.sh --smoke    debug build, 1,000 streams, 40 events, instance 2
#                                         stopped mid-run: every stream must reconnect through
#                                         nginx and get every event (part of scripts/test.sh)
#
# Then the refetch wave through nginx (REFETCH_VIEWERS, 1,000, each refetching GET /api/tasks after
# each of REFETCH_CHANGES, 100, changes at 10/s; 100 viewers and 20 changes in the smoke): what
# a change costs end to end.
#
#   REDIS_SHAPE=sentinel (with any of the above): Redis is a primary, two replicas and three
#   sentinels; the instances follow it with SSE_REDIS_MIN_REPLICAS=1 and the load tool publishes
#   into Redis the same way (PUBLISH=redis). With --smoke the primary is killed mid-run instead
#   of instance 2: every event acknowledged must still reach every stream.
#
# Everything runs on loopback ports chosen free at start, under a temporary directory, and is
# stopped on exit. Needs redis-server, nginx and prometheus (scripts/setup.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/../.."
here=examples/production

smoke=false direct=false
for arg in "$@"; do
  case $arg in
    --smoke) smoke=true ;;
    --direct) direct=true ;;
    *) echo "usage: $0 [--smoke] [--direct]" >&2; exit 2 ;;
  esac
done
shape=${REDIS_SHAPE:-single}
case $shape in
  single) publish=${PUBLISH:-rest} ;;
  # The demo's own store is in Redis too: while the primary fails over, POST /api/tasks fails.
  sentinel) publish=${PUBLISH:-redis} ;;
  *) echo "REDIS_SHAPE=$shape: use single or sentinel" >&2; exit 2 ;;
esac
instances=${INSTANCES:-3} sources=${SOURCES:-127.0.0.1}
if $smoke; then
  profile=debug streams=${STREAMS:-1000} events=${EVENTS:-40} rate=${RATE:-4} interval=1s
else
  profile=release streams=${STREAMS:-10000} events=${EVENTS:-100} rate=${RATE:-100} interval=5s
fi
say() { printf '\033[1m[production]\033[0m %s\n' "$*"; }
fail() { say "FAILED: $*"; exit 1; }

for tool in redis-server nginx prometheus promtool curl python3; do
  command -v "$tool" >/dev/null || fail "$tool is missing (run scripts/setup.sh)"
done

# The same compile-time settings as scripts/test.sh, so the debug build is the one already made.
export RUSTFLAGS="--cfg erase_components" LEPTOS_OUTPUT_NAME=taskboard
if [ "$profile" = release ]; then
  say "cargo build --release (server, loadtest)"
  cargo build --release --locked -p server -p loadtest
else
  [ -x target/debug/server ] || fail "target/debug/server is missing: run cargo leptos build first"
  cargo build --locked -p loadtest
fi
bin=target/$profile

dir=$(mktemp -d /tmp/sse-production.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# Polls `check` every 100 ms for at most `seconds`; fails naming `what`.
wait_for() {
  local what=$1 seconds=$2
  shift 2
  for _ in $(seq $((seconds * 10))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  fail "$what did not happen within ${seconds} s"
}

# A redis-server on port $1 (more arguments after it), with its own folder and log.
start_redis() {
  local port=$1
  shift
  mkdir -p "$dir/redis-$port"
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir/redis-$port" \
    --repl-diskless-sync-delay 0 "$@" >"$dir/redis-$port.log" 2>&1 &
  pids+=($!)
  redis_pids[$port]=$!
  wait_for "redis :$port answering" 10 redis-cli -p "$port" ping
}
declare -A redis_pids
redis_port=$(free_port)
start_redis "$redis_port"
redis_env=(REDIS_URL="redis://127.0.0.1:$redis_port")
if [ "$shape" = sentinel ]; then
  for _ in 1 2; do start_redis "$(free_port)" --replicaof 127.0.0.1 "$redis_port"; done
  sentinels=()
  for i in 1 2 3; do
    port=$(free_port)
    sentinels+=("127.0.0.1:$port")
    printf 'port %s\nbind 127.0.0.1\ndir %s\nsentinel monitor main 127.0.0.1 %s 2\nsentinel down-after-milliseconds main 1000\nsentinel failover-timeout main 10000\n' \
      "$port" "$dir" "$redis_port" >"$dir/sentinel-$i.conf"
    redis-server "$dir/sentinel-$i.conf" --sentinel >"$dir/sentinel-$i.log" 2>&1 &
    pids+=($!)
  done
  sentinels_ready() {
    local s
    for s in "${sentinels[@]}"; do
      [ "$(redis-cli -p "${s#*:}" sentinel replicas main | grep -c '^name$')" = 2 ] || return 1
      [ "$(redis-cli -p "${s#*:}" sentinel sentinels main | grep -c '^name$')" = 2 ] || return 1
    done
  }
  wait_for "the sentinels knowing both replicas and each other" 30 sentinels_ready
  sentinel_list=$(IFS=,; echo "${sentinels[*]}")
  redis_env=(REDIS_SENTINELS="$sentinel_list" REDIS_SENTINEL_MASTER=main SSE_REDIS_MIN_REPLICAS=1
    SSE_REDIS_MIN_REPLICAS_WAIT_MS=2000)
fi

ports=()
instance_pids=()
for i in $(seq 1 "$instances"); do
  port=$(free_port)
  ports+=("$port")
  # The load comes from one address, through nginx (X-Forwarded-For): lift the per-client limit
  # for it; a real deployment keeps the default.
  env "${redis_env[@]}" LEPTOS_SITE_ADDR="127.0.0.1:$port" LEPTOS_SITE_ROOT=target/site \
    SESSION_SECRET=production-example-secret-of-at-least-32-bytes SSE_CLIENT_IP_HEADER=x-forwarded-for \
    SSE_MAX_STREAMS_PER_CLIENT=1000000 SSE_MAX_TOPICS_PER_CLIENT=1000000 RUST_LOG=warn \
    "$bin/server" >"$dir/instance$i.log" 2>&1 &
  pid=$!
  pids+=("$pid")
  instance_pids+=("$pid")
done
for i in "${!ports[@]}"; do
  wait_for "instance $((i + 1)) ready" 30 curl -sf "http://127.0.0.1:${ports[$i]}/health/ready"
done

nginx_port=$(free_port)
mkdir -p "$dir"/{client_body,proxy,fastcgi,uwsgi,scgi}
upstreams=""
for port in "${ports[@]}"; do upstreams+="server 127.0.0.1:$port max_fails=0; "; done
sed -e "s|@DIR@|$dir|g" -e "s|@PORT@|$nginx_port|g" -e "s|@UPSTREAMS@|$upstreams|g" "$here/nginx.conf" >"$dir/nginx.conf"
nginx -t -q -p "$dir" -c "$dir/nginx.conf" 2>"$dir/nginx-check.log" || { cat "$dir/nginx-check.log"; fail "nginx -t"; }
nginx -p "$dir" -c "$dir/nginx.conf" 2>>"$dir/nginx-error.log" &
pids+=($!)
wait_for "nginx proxying /health" 10 curl -sf "http://127.0.0.1:$nginx_port/health"

prom_port=$(free_port)
targets=$(printf '"127.0.0.1:%s",' "${ports[@]}")
sed -e "s|@INTERVAL@|$interval|g" -e "s|@TARGETS@|${targets%,}|" "$here/prometheus.yml" >"$dir/prometheus.yml"
cp "$here/alerts.yml" "$dir/alerts.yml"
promtool check config "$dir/prometheus.yml" >/dev/null || fail "promtool check config"
prometheus --config.file="$dir/prometheus.yml" --storage.tsdb.path="$dir/data" \
  --web.listen-address="127.0.0.1:$prom_port" --log.level=warn >"$dir/prometheus.log" 2>&1 &
pids+=($!)

# A PromQL query's single value (empty when it has none).
promql() {
  curl -sf --get "http://127.0.0.1:$prom_port/api/v1/query" --data-urlencode "query=$1" |
    python3 -c 'import json, sys; r = json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else "")'
}
promql_is() { [ "$(promql "$1")" = "$2" ]; }
wait_for "Prometheus scraping all $instances instances" 30 promql_is 'sum(up{job="sse"})' "$instances"

say "redis ($shape) :$redis_port, instances :${ports[*]}, nginx :$nginx_port, prometheus :$prom_port"
urls=(--url "http://127.0.0.1:$nginx_port")
if $direct; then
  urls=()
  for port in "${ports[@]}"; do urls+=(--url "http://127.0.0.1:$port"); done
  say "loadtest: $streams streams straight to the $instances instances, $events events at $rate/s ($publish)"
else
  say "loadtest: $streams streams through nginx, $events events at $rate/s ($publish, through nginx)"
fi
loadtest_args=("${urls[@]}" --streams "$streams" --events "$events" --rate "$rate" --publish "$publish"
  --redis "redis://127.0.0.1:$redis_port" --sources "$sources" --reconnect --timeout 120 --quiet)
# The smoke publishes 4 events a second, one at a time: each stream must get them in order,
# once. On Sentinel with SSE_REDIS_MIN_REPLICAS, a publish no replica confirmed in time is
# published again from the outbox (at-least-once: measured under load, 11 of 40 came twice,
# one out of order), so there every event must arrive, and repeats are reported, not failed.
delivery_rule=(--ordered)
[ "$shape" = sentinel ] && delivery_rule=(--at-least-once)
if $smoke; then loadtest_args+=("${delivery_rule[@]}"); fi
read -ra extra <<<"${LOADTEST_ARGS:-}"
loadtest_args+=("${extra[@]}")
for pid in "${instance_pids[@]}"; do loadtest_args+=(--pid "$pid"); done
env "${redis_env[@]}" "$bin/loadtest" "${loadtest_args[@]}" >"$dir/loadtest.out" 2>&1 &
loadtest_pid=$!

# Whether instance 2 has delivered a few events to each of its streams.
delivered_some() {
  local m
  m=$(curl -sf "http://127.0.0.1:${ports[1]}/metrics") || return 1
  awk '/^sse_events_delivered_total / { d = $2 } /^sse_connections / { c = $2 } END { exit !(c > 0 && d >= 3 * c) }' <<<"$m"
}
if $smoke && [ "$shape" = sentinel ]; then
  # Once events flow, kill the Redis primary: the sentinels promote a replica, every instance
  # and the load tool follow it, and every event must still reach every stream.
  wait_for "instance 2 delivering events" 60 delivered_some
  say "killing the Redis primary (SIGKILL) mid-run"
  kill -KILL "${redis_pids[$redis_port]}"
  promoted() { [ "$(redis-cli -p "${sentinels[0]#*:}" sentinel get-master-addr-by-name main | tail -1)" != "$redis_port" ]; }
  wait_for "the sentinels promoting a replica" 30 promoted
  say "a replica was promoted: :$(redis-cli -p "${sentinels[0]#*:}" sentinel get-master-addr-by-name main | tail -1)"
elif $smoke; then
  # Once instance 2 has delivered events to its streams, stop it: its streams end, reconnect
  # through nginx to the others with their last event id, and must still get every event.
  wait_for "instance 2 delivering events" 60 delivered_some
  say "stopping instance 2 (SIGTERM) mid-run"
  kill -TERM "${instance_pids[1]}"
  wait "${instance_pids[1]}" || fail "instance 2 did not exit cleanly"
fi

status=0
wait "$loadtest_pid" || status=$?
cat "$dir/loadtest.out"
[ "$status" = 0 ] || fail "the load tool reports missing, repeated or reordered deliveries, or failures (exit $status)"

if $smoke; then
  # Events near SSE_MAX_MESSAGE_SIZE (60 KiB of data) through Redis and nginx: a frame counts
  # only when its data arrived whole.
  say "loadtest: 20 streams through nginx, 5 events of 60 KiB"
  env "${redis_env[@]}" "$bin/loadtest" --url "http://127.0.0.1:$nginx_port" --streams 20 --events 5 --rate 5 \
    --publish redis --redis "redis://127.0.0.1:$redis_port" --payload-kib 60 "${delivery_rule[@]}" --timeout 30 --quiet \
    >"$dir/loadtest-large.out" 2>&1 || { cat "$dir/loadtest-large.out"; fail "60 KiB events did not all arrive whole"; }
  grep -E '^events:' "$dir/loadtest-large.out"
fi

# The refetch wave: every viewer refetches the board after each change, as a page does (the
# cost of a change end to end: notification and refetches).
if ! $smoke || [ "$shape" = single ]; then
  if $smoke; then viewers=100 changes=20; else viewers=${REFETCH_VIEWERS:-1000} changes=${REFETCH_CHANGES:-100}; fi
  say "loadtest: refetch wave through nginx: $viewers viewers, $changes changes at 10/s (PUT /api/tasks/{id}), each viewer then GETs /api/tasks"
  refetch_args=(--url "http://127.0.0.1:$nginx_port" --streams "$viewers" --events "$changes" --rate 10
    --publish rest-update --board 100 --publishers 1 --event task:updated --refetch /api/tasks --timeout 60 --quiet)
  for pid in "${instance_pids[@]}"; do kill -0 "$pid" 2>/dev/null && refetch_args+=(--pid "$pid"); done
  "$bin/loadtest" "${refetch_args[@]}" >"$dir/loadtest-refetch.out" 2>&1 \
    || { cat "$dir/loadtest-refetch.out"; fail "the refetch wave did not bring every change to every viewer"; }
  grep -E '^(events|server CPU per change|refetches|publish to|bytes per)' "$dir/loadtest-refetch.out"
fi

say "Prometheus:"
if $smoke && [ "$shape" = single ]; then
  wait_for "Prometheus seeing instance 2 down" 30 promql_is 'sum(up{job="sse"})' 2
  wait_for "the SseInstanceDown alert pending or firing" 30 promql_is 'count(ALERTS{alertname="SseInstanceDown"})' 1
fi
echo "  instances up:                $(promql 'sum(up{job="sse"})')"
echo "  streams opened (all):        $(promql 'sum(sse_connections_opened_total)')"
echo "  events delivered (all):      $(promql 'sum(sse_events_delivered_total)')"
echo "  events replayed on resume:   $(promql 'sum(sse_events_replayed_total)')"
echo "  reads from the cache:        $(promql 'sum(sse_cache_requests_total{result=~"hit|not_modified"})')"
echo "  reads computed:              $(promql 'sum(sse_cache_requests_total{result=~"computed|passed"})')"
echo "  alerts pending or firing:    $(promql 'count(ALERTS)')"
say "done"
