# Sourced by the benchmark scripts: the release build they run, a work directory removed on
# exit (every process listed in `pids` stopped first), free loopback ports, a redis-server,
# and a wait for a server's answer.
export RUSTFLAGS="--cfg erase_components" LEPTOS_OUTPUT_NAME=taskboard
cargo build --release -q -p server -p loadtest

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# A redis-server on a free loopback port, stopped on exit; sets `redis_port` and `redis_url`.
start_redis() {
  redis_port=$(free_port)
  redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" \
    --daemonize no >"$work/redis.log" 2>&1 &
  pids+=($!)
  redis_url="redis://127.0.0.1:$redis_port"
  for _ in $(seq 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "redis-server did not start: $(tail -3 "$work/redis.log")" >&2
  exit 1
}

# Waits until `url` answers, for up to `seconds` (default 10); stops the script otherwise.
wait_for() {
  for _ in $(seq $(( ${2:-10} * 10 ))); do curl -fs "$1" >/dev/null && return 0; sleep 0.1; done
  echo "no answer from $1" >&2
  exit 1
}
