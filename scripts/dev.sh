#!/usr/bin/env bash
# Runs the demo task board at http://127.0.0.1:3000 with live reload.
# No REDIS_URL: the embedded broker. Set REDIS_URL=redis://127.0.0.1:6379 to use Redis.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec cargo leptos watch
