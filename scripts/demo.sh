#!/usr/bin/env bash
# The README's first command: a whole novaha failover on this machine.
# Installs what the demo needs (a real Consul, via scripts/deps/consul.sh),
# builds the `novaha` and `novaha-demo` binaries (into the same target dir:
# the demo runs the `novaha` next to it), and runs `novaha-demo` (arguments
# are passed on, e.g. `scripts/demo.sh --keep` to explore the Consul UI
# afterwards).
set -euo pipefail
cd "$(dirname "$0")/.."
export NOVAHA_CACHE="${NOVAHA_CACHE:-$PWD/.cache}"
if ! command -v cargo >/dev/null 2>&1; then
    echo "demo: cargo not found; install Rust (https://rustup.rs) first" >&2
    exit 1
fi
echo "[demo] installing Consul if missing (scripts/deps/consul.sh)" >&2
bash scripts/deps/consul.sh
echo "[demo] building novaha and novaha-demo (cargo build --release -p novaha -p novaha-demo)" >&2
cargo build --release -p novaha -p novaha-demo
target_dir="${CARGO_TARGET_DIR:-target}"
NOVAHA_CONSUL_BIN="${NOVAHA_CONSUL_BIN:-$NOVAHA_CACHE/consul-1.8.7/usr/bin/consul}" \
    exec "$target_dir/release/novaha-demo" "$@"
