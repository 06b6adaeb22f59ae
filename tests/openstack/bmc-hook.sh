#!/usr/bin/env bash
# The chassis_control program of one simulated BMC (ipmi_sim runs it).
# Keeps the node's power state in STATE_DIR/bmc/HOST/power and makes it
# real: power off cuts the whole host (host.sh kill: its nova-compute,
# Consul agent and sshd stand-in, KILL, no shutdown), power on starts them
# again. Every call is appended to STATE_DIR/bmc/HOST/calls.log
# with a timestamp, so a test can see which node was fenced when.
#
# Usage (by ipmi_sim): bmc-hook.sh STATE_DIR HOST get power
#                      bmc-hook.sh STATE_DIR HOST set power 0|1
#                      bmc-hook.sh STATE_DIR HOST set reset|shutdown|boot ...
set -euo pipefail
here="$(dirname "$0")"
source "$here/lib.sh"
S="$1"; host="$2"; shift 2
d="$S/bmc/$host"
printf '%s %s\n' "$(date +%s.%N)" "$*" >> "$d/calls.log"
power() { cat "$d/power" 2>/dev/null || echo 1; }
case "$*" in
    "get power") echo "power:$(power)" ;;
    "set power 0"|"set shutdown"*)
        echo 0 > "$d/power"
        bash "$here/host.sh" "$S" kill "$host" >>"$d/hook.log" 2>&1 ;;
    "set power 1")
        echo 1 > "$d/power"
        bash "$here/host.sh" "$S" start "$host" >>"$d/hook.log" 2>&1 ;;
    "set reset"*)
        if [ "$(power)" = 1 ]; then
            bash "$here/host.sh" "$S" kill "$host" >>"$d/hook.log" 2>&1
            bash "$here/host.sh" "$S" start "$host" >>"$d/hook.log" 2>&1
        fi ;;
    "set boot"*) ;;
    *) echo "bmc-hook: unsupported request: $*" >&2; exit 1 ;;
esac
