#!/usr/bin/env bash
# Stops or starts one nova-compute of the test stack by its recorded pid,
# as a node's power-off / power-on would (the BMC hook calls it too).
#
# Usage: compute.sh STATE_DIR stop|kill|start|status HOST
#   stop: TERM, then KILL after a grace; kill: KILL at once, no TERM (a crash);
#   start: starts it if it is not running; status: prints running|stopped.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
[ $# -eq 3 ] || osdie "usage: compute.sh STATE_DIR stop|kill|start|status HOST"
S="$(realpath -m "$1")"; action="$2"; host="$3"
[ -f "$S/etc/nova/compute-$host.conf" ] || osdie "no compute $host in the stack at $S"
pidf="$S/run/nova-compute-$host.pid"
case "$action" in
    stop) stop_pidfiles "${NOVAHA_OPENSTACK_GRACE:-10}" "$pidf" ;;
    kill) kill_pidfiles "$pidf" ;;
    start) start_compute "$S" "$host" ;;
    status) if alive "$pidf"; then echo running; else echo stopped; fi ;;
    *) osdie "compute.sh: unknown action $action" ;;
esac
