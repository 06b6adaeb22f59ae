#!/usr/bin/env bash
# Stops everything tests/openstack/up.sh started in STATE_DIR, by the pids
# it recorded: TERM to each process group, KILL after a grace period, and
# checks that nothing is left. Leaves STATE_DIR (logs) in place.
#
# Usage: down.sh STATE_DIR [--locked] [--from-reaper]
#   --locked: the caller already holds STATE_DIR.lock (up.sh does).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
[ $# -ge 1 ] || osdie "usage: down.sh STATE_DIR [--locked]"
S="$(realpath -m "$1")"; shift
locked=; from_reaper=
for a in "$@"; do
    case "$a" in
        --locked) locked=1 ;;
        --from-reaper) from_reaper=1 ;;
        *) osdie "down.sh: unknown option $a" ;;
    esac
done
if [ -z "$locked" ]; then
    exec 9>"$S.lock"
    flock 9
fi
[ -d "$S/run" ] || exit 0
GRACE="${NOVAHA_OPENSTACK_GRACE:-10}"

pidfiles() {
    local f n
    for f in "$S"/run/*.pid; do
        [ -e "$f" ] || continue
        n="$(basename "$f" .pid)"
        case "$n" in
            reaper) [ -n "$from_reaper" ] || echo "$f" ;;
            mariadb|rabbitmq|epmd) ;;
            *) echo "$f" ;;
        esac
    done
}
rc=0
mapfile -t first < <(pidfiles)
# The OpenStack services and the BMCs first, so none of them logs a storm
# of connection errors while the database and the broker go away...
[ ${#first[@]} -eq 0 ] || stop_pidfiles "$GRACE" "${first[@]}" || rc=1
# ...then the broker and the database, then epmd.
back=()
for n in rabbitmq mariadb; do [ -e "$S/run/$n.pid" ] && back+=("$S/run/$n.pid"); done
[ ${#back[@]} -eq 0 ] || stop_pidfiles "$((GRACE * 3))" "${back[@]}" || rc=1
[ ! -e "$S/run/epmd.pid" ] || stop_pidfiles "$GRACE" "$S/run/epmd.pid" || rc=1
rm -f "$S/env"
[ $rc -eq 0 ] || osdie "some processes of $S survived KILL"
oslog "stack in $S stopped"
