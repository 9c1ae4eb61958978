#!/usr/bin/env bash
# The refetch wave, end to end: VIEWERS streams on a board of BOARD tasks, each refetching
# `GET /api/tasks` after every change (as a page does), CHANGES changes made one at a time at
# RATE per second through `PUT /api/tasks/{id}`. Runs (MODES, in order):
#   notify  no refetch: what the notification alone costs
#   naive   a page that fetches once per event (the seed's JavaScript examples), no response cache
#   off     a Leptos page (a Resource runs one fetch at a time: events during it cause one more
#           after it), no response cache (READ_CACHE=off): what a change cost before the cache
#   on      the same page, response cache on (the default)
#   item    the same, item by item (`use_live_list`): each event refetches GET /api/tasks/{id}
# Prints the load tool's figures for each run.
#
#   scripts/bench-refetch.sh                 one instance, embedded broker
#   REDIS=1 scripts/bench-refetch.sh         two instances on one redis-server (viewers split)
#   VIEWERS=1000 BOARD=100 CHANGES=300 RATE=10 MODES="notify naive off on item" PUBLISHERS=1 \
#     LOADTEST_ARGS=--conditional
#   REDIS=1 PUBLISH=redis MODES=on LOADTEST_ARGS=--conditional   events that change nothing,
#     published straight into Redis: each refetch revalidates with If-None-Match (304)
#   SERVER=/tmp/old/server REDIS=1 MODES=on     another build of the server (before and after)
#
# Release builds; everything on loopback ports chosen free at start, stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
viewers=${VIEWERS:-1000} board=${BOARD:-100} changes=${CHANGES:-300} rate=${RATE:-10}
modes=${MODES:-notify naive off on}
say() { printf '\033[1m[bench-refetch]\033[0m %s\n' "$*" >&2; }

. scripts/bench-lib.sh

redis_url=""
if [ "${REDIS:-0}" = 1 ]; then
  start_redis
fi
instances=$([ -n "$redis_url" ] && echo 2 || echo 1)

for mode in $modes; do
  cache=$([ "$mode" = on ] || [ "$mode" = item ] && echo on || echo off)
  urls=() server_pids=()
  if [ -n "$redis_url" ]; then redis-cli -u "$redis_url" flushall >/dev/null; fi
  for i in $(seq "$instances"); do
    port=$(free_port)
    env READ_CACHE="$cache" LEPTOS_SITE_ADDR="127.0.0.1:$port" SSE_MAX_STREAMS_PER_CLIENT=1000000 \
      ${redis_url:+REDIS_URL=$redis_url} RUST_LOG=warn "${SERVER:-target/release/server}" >"$work/server-$mode-$i.log" 2>&1 &
    pids+=($!) server_pids+=($!)
    urls+=(--url "http://127.0.0.1:$port")
    wait_for "http://127.0.0.1:$port/health"
  done
  refetch=(--refetch /api/tasks)
  [ "$mode" = notify ] && refetch=()
  [ "$mode" = item ] && refetch=(--refetch '/api/tasks/{id}')
  [ "$mode" = naive ] && refetch+=(--refetch-each)
  say "$mode: $viewers viewers, board of $board, $changes changes at $rate/s, $instances instance(s)$([ -n "$redis_url" ] && echo ' on Redis')"
  publish=(--publish rest-update --board "$board" --publishers "${PUBLISHERS:-1}")
  if [ "${PUBLISH:-rest-update}" = redis ]; then
    # Events straight into Redis that change nothing: every refetch finds the same answer.
    publish=(--publish redis --redis "$redis_url" --publishers "${PUBLISHERS:-1}")
  fi
  # shellcheck disable=SC2086
  target/release/loadtest "${urls[@]}" --streams "$viewers" --events "$changes" --rate "$rate" \
    "${publish[@]}" --event task:updated "${refetch[@]}" \
    $(printf -- '--pid %s ' "${server_pids[@]}") --quiet ${LOADTEST_ARGS:-}
  for p in "${server_pids[@]}"; do kill "$p"; done
  wait "${server_pids[@]}" 2>/dev/null || true
done
