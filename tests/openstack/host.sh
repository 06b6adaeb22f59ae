#!/usr/bin/env bash
# One compute host of the test stack as a whole: its nova-compute, its
# Consul client agent and its sshd stand-in (lib.sh). "The host died" is
# `kill`: all three at once (SIGKILL), while its BMC keeps answering and
# still reads power on until something powers it off (a crash, not a power
# cut). The BMC hook powers hosts off and on through here too.
#
# Usage: host.sh STATE_DIR ACTION HOST
#   kill: nova-compute, agent and sshd stand-in, SIGKILL at once
#   start: whatever of the three is not running (power on)
#   kill-agent: the Consul agent alone (SIGKILL)
#   kill-sshd: the sshd stand-in alone (SIGKILL)
#   status: one line per part, "<part> running|stopped"
set -euo pipefail
source "$(dirname "$0")/lib.sh"
[ $# -eq 3 ] || osdie "usage: host.sh STATE_DIR kill|start|kill-agent|kill-sshd|status HOST"
S="$(realpath -m "$1")"; action="$2"; host="$3"
[ -f "$S/etc/nova/compute-$host.conf" ] || osdie "no host $host in the stack at $S"
[ -n "$(host_var "$S" "$host" IP)" ] || osdie "host $host has no address in $S/ports.env"
run="$S/run"
case "$action" in
    kill) kill_pidfiles "$run/nova-compute-$host.pid" "$run/agent-$host.pid" "$run/sshd-$host.pid" ;;
    start) start_host "$S" "$host" ;;
    kill-agent) kill_pidfiles "$run/agent-$host.pid" ;;
    kill-sshd) kill_pidfiles "$run/sshd-$host.pid" ;;
    status)
        for part in nova-compute agent sshd; do
            if alive "$run/$part-$host.pid"; then echo "$part running"; else echo "$part stopped"; fi
        done ;;
    *) osdie "host.sh: unknown action $action" ;;
esac
