#!/usr/bin/env bash
# Installs everything novaha's tests need: runs every scripts/deps/*.sh.
# Idempotent and cached; safe to run again.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
NOVAHA_APT_MARK="$(mktemp)"; rm -f "$NOVAHA_APT_MARK"
export NOVAHA_APT_MARK
trap 'rm -f "$NOVAHA_APT_MARK"' EXIT
for s in "$here"/deps/*.sh; do
    bash "$s"
done
