#!/usr/bin/env bash
# The README's test command: installs what the tests need, then runs every
# test of the workspace (unit, real-peer, end-to-end).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/test-deps.sh
export NOVAHA_CACHE="${NOVAHA_CACHE:-$PWD/.cache}"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast "$@"
else
    cargo test --workspace --no-fail-fast "$@"
fi
