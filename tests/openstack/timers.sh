#!/usr/bin/env bash
# Switches a running test stack's Nova heartbeat timers: rewrites
# report_interval and service_down_time in nova.conf and restarts every
# nova process (nova-api, nova-conductor, nova-scheduler, and each
# nova-compute that was running) so that all of them use the new values.
# Returns at once when the stack already runs with them. Call it while
# holding the stack's lease (the Rust harness does): it restarts Nova.
#
# Usage: timers.sh STATE_DIR REPORT_INTERVAL SERVICE_DOWN_TIME   (seconds)
#   2 10: the stack's default (a dead compute reads down in 8-10 s)
#   10 60: Nova's production defaults
set -euo pipefail
source "$(dirname "$0")/lib.sh"
[ $# -eq 3 ] || osdie "usage: timers.sh STATE_DIR REPORT_INTERVAL SERVICE_DOWN_TIME"
S="$(realpath -m "$1")"; report="$2"; down="$3"
[[ "$report" =~ ^[0-9]+$ && "$down" =~ ^[0-9]+$ && "$report" -ge 1 && "$down" -gt "$report" ]] \
    || osdie "timers.sh: want whole seconds with SERVICE_DOWN_TIME > REPORT_INTERVAL >= 1"
exec 9>"$S.lock"
flock 9
[ -s "$S/env" ] || osdie "no stack up in $S"
if [ "$(cat "$S/timers" 2>/dev/null)" = "$report $down" ]; then
    exit 0
fi
T0=$(date +%s)
set -a; source "$S/ports.env"; set +a
sed -i -e "s/^report_interval = .*/report_interval = $report/" \
       -e "s/^service_down_time = .*/service_down_time = $down/" "$S/etc/nova/nova.conf"
running=()
for h in $COMPUTE_HOSTS $HA_HOST; do
    alive "$S/run/nova-compute-$h.pid" && running+=("$h")
done
files=("$S/run/nova-api.pid" "$S/run/nova-conductor.pid" "$S/run/nova-scheduler.pid")
for h in "${running[@]}"; do files+=("$S/run/nova-compute-$h.pid"); done
stop_pidfiles "${NOVAHA_OPENSTACK_GRACE:-10}" "${files[@]}" || osdie "nova did not stop"
start_wsgi "$S" nova-api "$NOVA_PORT" nova.wsgi.osapi_compute OS_NOVA_CONFIG_DIR="$S/etc/nova"
start_bg "$S" nova-conductor "$VENV/bin/nova-conductor" --config-file "$S/etc/nova/nova.conf"
start_bg "$S" nova-scheduler "$VENV/bin/nova-scheduler" --config-file "$S/etc/nova/nova.conf"
for h in "${running[@]}"; do start_compute "$S" "$h"; done
deadline=$(( $(date +%s) + 120 ))
until (exec 3<>"/dev/tcp/127.0.0.1/$NOVA_PORT") 2>/dev/null; do
    [ "$(date +%s)" -lt "$deadline" ] || osdie "nova-api did not come back (see $S/log/nova-api.log)"
    sleep 0.2
done
echo "$report $down" > "$S/timers"
oslog "nova timers now report_interval=$report service_down_time=$down (restart took $(( $(date +%s) - T0 ))s)"
