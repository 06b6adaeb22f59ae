# Shared helpers of the real-OpenStack harness (up.sh, down.sh, compute.sh,
# bmc-hook.sh). Source it; do not run it.
#
# Every process the harness starts runs in its own session (setsid), so its
# pid is also its process group: stopping it signals the whole group, which
# takes any workers it forked along. Each pid file holds "PID STARTTIME"
# (field 22 of /proc/PID/stat) so that a recycled pid is never mistaken for
# ours.

set -euo pipefail
OS_HARNESS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OS_REPO="$(cd "$OS_HARNESS/../.." && pwd)"

oslog() { printf '[openstack %s] %s\n' "$(date +%T)" "$*" >&2; }
osdie() { oslog "error: $*"; exit 1; }

# The cached venv built by scripts/deps/openstack.sh (same key).
os_venv() {
    local cache="${NOVAHA_CACHE:-$OS_REPO/.cache}"
    local key
    key="$( { cat "$OS_HARNESS/requirements.txt"; /usr/bin/python3 --version; } | sha256sum | cut -c1-16)"
    local v="$cache/openstack-venv-$key"
    [ -e "$v/.complete" ] || osdie "OpenStack venv $v missing: run scripts/deps/openstack.sh (or scripts/test-deps.sh)"
    printf '%s' "$v"
}

# The cached Consul (scripts/deps/consul.sh): the stack's controller agent
# and each host's client agent.
os_consul() {
    local cache="${NOVAHA_CACHE:-$OS_REPO/.cache}"
    local c="$cache/consul-1.8.7/usr/bin/consul"
    [ -x "$c" ] || osdie "Consul $c missing: run scripts/deps/consul.sh (or scripts/test-deps.sh)"
    printf '%s' "$c"
}

# proc_start PID: the process's start time in clock ticks, empty if gone
# or a zombie (killed, not yet reaped: in a container nobody may reap it).
proc_start() {
    local stat
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 0
    # Field 2 (comm) may hold spaces: cut after the last ')'.
    stat="${stat##*) }"
    # Now field 3 (state) is the first word; starttime (22) is word 20.
    set -- $stat
    [ "$1" != Z ] || return 0
    printf '%s' "${20}"
}

# alive PIDFILE: true if the process recorded there still runs.
alive() {
    local f="$1" pid start
    [ -s "$f" ] || return 1
    read -r pid start < "$f" || return 1
    [ -n "$pid" ] && [ "$(proc_start "$pid")" = "$start" ]
}

# start_bg STATE NAME CMD...: runs CMD detached in its own session, output
# to STATE/log/NAME.log, pid to STATE/run/NAME.pid. Closes fd 9 (the lock
# up.sh holds) so no daemon inherits the harness lock.
start_bg() {
    local state="$1" name="$2"; shift 2
    mkdir -p "$state/run" "$state/log"
    setsid "$@" >>"$state/log/$name.log" 2>&1 </dev/null 9>&- &
    local pid=$!
    local start=""
    # The start time can be read as soon as the pid exists.
    start="$(proc_start "$pid")"
    [ -n "$start" ] || osdie "$name exited at once (see $state/log/$name.log)"
    printf '%s %s\n' "$pid" "$start" > "$state/run/$name.pid"
}

# stop_pidfiles GRACE PIDFILE...: TERM each recorded process group, wait up
# to GRACE seconds for all to go, then KILL what is left. Removes the pid
# files. Returns non-zero if something survived KILL.
stop_pidfiles() {
    local grace="$1"; shift
    local f pid start live=()
    for f in "$@"; do
        if alive "$f"; then
            read -r pid start < "$f"
            kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
            live+=("$f")
        else
            rm -f "$f"
        fi
    done
    [ ${#live[@]} -eq 0 ] && return 0
    local deadline=$(( $(date +%s) + grace ))
    while :; do
        local left=()
        for f in "${live[@]}"; do alive "$f" && left+=("$f"); done
        [ ${#left[@]} -eq 0 ] && break
        if [ "$(date +%s)" -ge "$deadline" ]; then
            for f in "${left[@]}"; do
                read -r pid start < "$f"
                oslog "$(basename "$f" .pid) (pid $pid) ignored TERM for ${grace}s: KILL"
                kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
            done
            # SIGKILL cannot be ignored, but the kernel takes a moment.
            local kdeadline=$(( $(date +%s) + 5 ))
            while [ "$(date +%s)" -lt "$kdeadline" ]; do
                local still=0
                for f in "${left[@]}"; do alive "$f" && still=1; done
                [ $still -eq 1 ] || break
                sleep 0.1
            done
            break
        fi
        sleep 0.1
    done
    local rc=0
    for f in "${live[@]}"; do
        if alive "$f"; then
            oslog "$(basename "$f" .pid) survived KILL"; rc=1
        else
            # Workers of a group whose leader died: KILL the rest of the group.
            read -r pid start < "$f"
            kill -KILL -- "-$pid" 2>/dev/null || true
            rm -f "$f"
        fi
    done
    return $rc
}

# kill_pidfiles PIDFILE...: SIGKILL to each recorded process group at once
# (no TERM first: a Consul agent given TERM leaves the cluster gracefully,
# which is a shutdown, not a crash), waits until they are gone, removes the
# pid files. Returns non-zero if something survived.
kill_pidfiles() {
    local f pid start rc=0
    for f in "$@"; do
        if alive "$f"; then
            read -r pid start < "$f"
            kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    local deadline=$(( $(date +%s) + 5 ))
    for f in "$@"; do
        while alive "$f" && [ "$(date +%s)" -lt "$deadline" ]; do sleep 0.05; done
        if alive "$f"; then
            oslog "$(basename "$f" .pid) survived KILL"; rc=1
        else
            rm -f "$f"
        fi
    done
    return $rc
}

# The nova-compute command line of HOST (also used by compute.sh and the
# BMC hook, so a powered-on node runs exactly what up.sh started).
compute_cmd() {
    local state="$1" host="$2"
    printf '%s\n' "$(os_venv)/bin/nova-compute" \
        --config-file "$state/etc/nova/nova.conf" \
        --config-file "$state/etc/nova/compute-$host.conf"
}

# start_compute STATE HOST: starts HOST's nova-compute unless it runs.
start_compute() {
    local state="$1" host="$2"
    alive "$state/run/nova-compute-$host.pid" && return 0
    local cmd=()
    mapfile -t cmd < <(compute_cmd "$state" "$host")
    start_bg "$state" "nova-compute-$host" "${cmd[@]}"
}

# start_wsgi STATE NAME PORT MODULE ENVVAR=VALUE...: one gunicorn (1 worker,
# 4 threads) serving MODULE's WSGI application on 127.0.0.1:PORT.
start_wsgi() {
    local state="$1" name="$2" port="$3" module="$4"; shift 4
    start_bg "$state" "$name" env NOVAHA_WSGI_MODULE="$module" "$@" \
        "$(os_venv)/bin/gunicorn" --bind "127.0.0.1:$port" --workers 1 --threads 4 \
        --timeout 300 --graceful-timeout 5 --chdir "$OS_HARNESS" --name "novaha-$name" \
        wsgi_app:application
}

# A compute host is more than its nova-compute: it also runs its own Consul
# client agent (node name = the Nova host) and an sshd stand-in, both on the
# host's own loopback address. `host_var HOST NAME` reads HOST's value of
# NAME (IP, SSH_PORT, CONSUL_HTTP_PORT, CONSUL_SERF_PORT) from ports.env.
host_var() {
    local state="$1" host="$2" name="$3" key
    key="HOST_${name}_$(echo "$host" | tr 'a-z-' 'A-Z_')"
    sed -n "s/^$key=//p" "$state/ports.env" | tail -n 1
}

# start_agent STATE HOST: HOST's Consul client agent, joined to the stack's
# controller agent, unless it runs.
start_agent() {
    local state="$1" host="$2"
    alive "$state/run/agent-$host.pid" && return 0
    local ip http serf join
    ip="$(host_var "$state" "$host" IP)"
    http="$(host_var "$state" "$host" CONSUL_HTTP_PORT)"
    serf="$(host_var "$state" "$host" CONSUL_SERF_PORT)"
    join="$(sed -n 's/^CONSUL_SERF_PORT=//p' "$state/ports.env" | tail -n 1)"
    mkdir -p "$state/consul/$host"
    start_bg "$state" "agent-$host" "$(os_consul)" agent -node "$host" \
        -bind "$ip" -client "$ip" -data-dir "$state/consul/$host" \
        -http-port "$http" -dns-port -1 -grpc-port -1 -serf-lan-port "$serf" \
        -retry-join "127.0.0.1:$join" -retry-interval 1s -disable-host-node-id \
        -log-level warn
}

# start_sshd STATE HOST: HOST's sshd stand-in (answers TCP with an SSH
# banner) on its own address, unless it runs.
start_sshd() {
    local state="$1" host="$2"
    alive "$state/run/sshd-$host.pid" && return 0
    start_bg "$state" "sshd-$host" "$(os_venv)/bin/python" "$OS_HARNESS/sshd_standin.py" \
        "$(host_var "$state" "$host" IP)" "$(host_var "$state" "$host" SSH_PORT)"
}

# start_host STATE HOST: everything of HOST that is not running (power on).
start_host() {
    start_compute "$1" "$2"
    start_agent "$1" "$2"
    start_sshd "$1" "$2"
}
