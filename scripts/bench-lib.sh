# Sourced by the benchmark scripts: the release build they run, a work directory removed on
# exit (every process listed in `pids` stopped first), and free loopback ports.
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
