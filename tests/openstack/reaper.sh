#!/usr/bin/env bash
# Stops the test stack once its owner (the test runner process that brought
# it up) has exited, then removes the state dir. Started by up.sh when it is
# given an OWNER_PID (the Rust harness does), so a test run never leaves
# OpenStack running behind it.
#
# Usage: reaper.sh STATE_DIR OWNER_PID
set -uo pipefail
here="$(dirname "$0")"
S="$1"; owner="$2"
while kill -0 "$owner" 2>/dev/null; do
    sleep 1
done
bash "$here/down.sh" "$S" --from-reaper
[ -n "${NOVAHA_OPENSTACK_KEEP:-}" ] || rm -rf "$S" "$S.lock" "$S.lease"
