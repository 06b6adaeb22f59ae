#!/usr/bin/env bash
# Brings up a real OpenStack (release 2026.2 from the pins in
# requirements.txt) on loopback only, for novaha's end-to-end tests:
#   MariaDB, RabbitMQ (+ its own epmd), keystone, placement, glance,
#   nova-api (these four under gunicorn), nova-conductor, nova-scheduler,
#   a Consul agent (the controller's), and four compute hosts, compute-1..3
#   plus the spare ha-1 (disabled in Nova: it is novaha's HA node), each
#   running nova-compute, its own Consul client agent (node name = host)
#   and an sshd stand-in on its own loopback address (127.0.0.11..14);
#   a Neutron stand-in, and one simulated BMC (ipmi_sim) per host whose
#   power-off kills the whole host.
#
# Usage: up.sh STATE_DIR [OWNER_PID]
#   Every port is picked free at run time; configs, data, pid files and logs
#   all live in STATE_DIR. Writes STATE_DIR/env (KEY=VALUE) and
#   STATE_DIR/clouds.yaml (cloud "novaha-test") last. Idempotent: with the
#   stack up it returns at once; a half-up or dead stack is stopped and
#   rebuilt. Concurrent calls serialise on STATE_DIR.lock.
#   OWNER_PID: also start a reaper that runs down.sh (and removes STATE_DIR)
#   once that process has exited (the test runner, for the Rust harness).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

[ $# -ge 1 ] || osdie "usage: up.sh STATE_DIR [OWNER_PID]"
S="$(realpath -m "$1")"
OWNER="${2:-}"
mkdir -p "$(dirname "$S")"
exec 9>"$S.lock"
flock 9

# The processes that must run for the stack to count as up.
# The computes are left out, and so are the rest of each host (its Consul
# agent and sshd stand-in): tests kill hosts on purpose (host.sh, the BMCs).
CORE=(mariadb epmd rabbitmq keystone placement glance nova-api nova-conductor
      nova-scheduler neutron-stub consul bmc-compute-1 bmc-compute-2 bmc-compute-3 bmc-ha-1)
stack_up() {
    [ -s "$S/env" ] || return 1
    local n
    for n in "${CORE[@]}"; do alive "$S/run/$n.pid" || return 1; done
}
if stack_up; then
    oslog "stack already up in $S"
    exit 0
fi

T0=$(date +%s)
if [ -d "$S" ]; then
    oslog "stale or half-built stack in $S: stopping it and starting afresh"
    bash "$OS_HARNESS/down.sh" "$S" --locked
fi
rm -rf "$S"
mkdir -p "$S"/{run,log,etc/keystone,etc/nova,etc/placement,etc/glance,keystone,nova/lock,glance/{images,staging,tasks,lock},mysql,rabbitmq,bmc}
VENV="$(os_venv)"
PY="$VENV/bin/python"
# A failed bring-up stops whatever it had started (logs stay in $S).
ok=
trap '[ -n "$ok" ] || { oslog "bring-up failed: stopping what was started"; bash "$OS_HARNESS/down.sh" "$S" --locked || true; }' EXIT

# The reaper starts first, so that even a bring-up killed half-way is
# stopped once its owner has gone.
if [ -n "$OWNER" ]; then
    start_bg "$S" reaper bash "$OS_HARNESS/reaper.sh" "$S" "$OWNER"
fi

# Free loopback ports, all distinct (bound together, then released).
read -r DB_PORT RABBIT_PORT EPMD_PORT DIST_PORT KEYSTONE_PORT PLACEMENT_PORT GLANCE_PORT \
    NOVA_PORT NEUTRON_PORT < <("$PY" - <<'PY'
import socket
socks = [socket.socket() for _ in range(9)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
)
read -r BMC_PORTS < <("$PY" - <<'PY'
import socket
socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(4)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
)
# The controller's Consul agent (a dev server on 127.0.0.1: HTTP, serf LAN
# and WAN, server RPC), each on a free port.
read -r CONSUL_HTTP_PORT CONSUL_SERF_PORT CONSUL_WAN_PORT CONSUL_SERVER_PORT < <("$PY" - <<'PY'
import socket
socks = []
while len(socks) < 4:
    t = socket.socket(); t.bind(("127.0.0.1", 0))
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.bind(("127.0.0.1", t.getsockname()[1]))  # serf needs TCP and UDP
    except OSError:
        continue
    socks.append((t, u))
print(" ".join(str(t.getsockname()[1]) for t, _ in socks))
PY
)
# Each host's own loopback address (127.0.0.11, .12, ...) with free ports
# there for its agent's HTTP API and its serf (TCP+UDP), and one sshd port
# free on every host's address (as port 22 is on real hosts: novaha's
# `[monitor.tcp] port` is one port for all).
HOST_PORTS="$("$PY" - compute-1 compute-2 compute-3 ha-1 <<'PY'
import socket, sys
hosts = sys.argv[1:]
ips = [f"127.0.0.{11 + i}" for i in range(len(hosts))]
held = []
def free(ip, port=0):
    t = socket.socket(); t.bind((ip, port))
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.bind((ip, t.getsockname()[1]))
    except OSError:
        t.close(); raise
    held.extend((t, u))
    return t.getsockname()[1]
while True:
    try:
        ssh = free(ips[0])
        for ip in ips[1:]:
            free(ip, ssh)
        break
    except OSError:
        continue
print(f"SSH_PORT={ssh}")
for ip, host in zip(ips, hosts):
    ports = []
    while len(ports) < 2:
        try:
            ports.append(free(ip))
        except OSError:
            continue
    key = host.upper().replace("-", "_")
    print(f"HOST_IP_{key}={ip}\nHOST_SSH_PORT_{key}={ssh}\n"
          f"HOST_CONSUL_HTTP_PORT_{key}={ports[0]}\nHOST_CONSUL_SERF_PORT_{key}={ports[1]}")
PY
)"
rand() { "$PY" -c 'import secrets; print(secrets.token_hex(12))'; }
ADMIN_PASSWORD="$(rand)"; SERVICE_PASSWORD="$(rand)"; DB_PASSWORD="$(rand)"; BMC_PASSWORD="$(rand | cut -c1-16)"  # IPMI passwords: 16 bytes at most
COMPUTE_HOSTS="compute-1 compute-2 compute-3"
HA_HOST="ha-1"
# Secrets stay in files readable by root only.
umask 077
cat > "$S/ports.env" <<ENV
STATE=$S
HARNESS=$OS_HARNESS
VENV=$VENV
DB_PORT=$DB_PORT
RABBIT_PORT=$RABBIT_PORT
EPMD_PORT=$EPMD_PORT
DIST_PORT=$DIST_PORT
KEYSTONE_PORT=$KEYSTONE_PORT
PLACEMENT_PORT=$PLACEMENT_PORT
GLANCE_PORT=$GLANCE_PORT
NOVA_PORT=$NOVA_PORT
NEUTRON_PORT=$NEUTRON_PORT
ADMIN_PASSWORD=$ADMIN_PASSWORD
SERVICE_PASSWORD=$SERVICE_PASSWORD
DB_PASSWORD=$DB_PASSWORD
BMC_USER=admin
BMC_PASSWORD=$BMC_PASSWORD
COMPUTE_HOSTS='$COMPUTE_HOSTS'
HA_HOST=$HA_HOST
CONSUL_HTTP_PORT=$CONSUL_HTTP_PORT
CONSUL_SERF_PORT=$CONSUL_SERF_PORT
CONSUL_WAN_PORT=$CONSUL_WAN_PORT
CONSUL_SERVER_PORT=$CONSUL_SERVER_PORT
$HOST_PORTS
ENV
# Nova's heartbeat timers: short by default (a dead compute reads down in
# 8-10 s); tests/openstack/timers.sh switches a running stack to others
# (Nova's production 10/60) and back.
echo "2 10" > "$S/timers"
set -a; source "$S/ports.env"; set +a

# render TEMPLATE OUT [KEY=VALUE...]: replaces @NAME@ from the environment.
render() {
    local tpl="$1" out="$2"; shift 2
    env "$@" "$PY" - "$OS_HARNESS/templates/$tpl" "$out" <<'PY'
import os, re, sys
text = open(sys.argv[1]).read()
def sub(m):
    if m.group(1) not in os.environ:
        sys.exit(f"render {sys.argv[1]}: no value for @{m.group(1)}@")
    return os.environ[m.group(1)]
open(sys.argv[2], "w").write(re.sub(r"@([A-Z_0-9]+)@", sub, text))
PY
}

# --- MariaDB and RabbitMQ first (everything else needs them) ---------------
oslog "mariadb: initialising $S/mysql"
mariadb-install-db --no-defaults --datadir="$S/mysql/data" --user=root --basedir=/usr \
    --auth-root-authentication-method=socket --skip-test-db >"$S/log/mariadb-install.log" 2>&1 \
    || osdie "mariadb-install-db failed (see $S/log/mariadb-install.log)"
start_bg "$S" mariadb /usr/sbin/mariadbd --no-defaults --user=root --datadir="$S/mysql/data" \
    --socket="$S/mysql/sock" --port="$DB_PORT" --bind-address=127.0.0.1 \
    --pid-file="$S/mysql/mariadbd.pid" --skip-name-resolve --skip-log-bin \
    --innodb-buffer-pool-size=64M --innodb-log-file-size=16M --max-connections=500 \
    --performance-schema=OFF

render rabbitmq.conf "$S/rabbitmq/rabbitmq.conf"
echo '[].' > "$S/rabbitmq/enabled_plugins"
: > "$S/rabbitmq/rabbitmq-env.conf"
start_bg "$S" epmd /usr/bin/epmd -address 127.0.0.1 -port "$EPMD_PORT"
RABBIT_ENV=(
    HOME="$S/rabbitmq"
    ERL_EPMD_ADDRESS=127.0.0.1 ERL_EPMD_PORT="$EPMD_PORT"
    RABBITMQ_CONF_ENV_FILE="$S/rabbitmq/rabbitmq-env.conf"
    RABBITMQ_NODENAME="novaha-$NOVA_PORT@localhost"
    RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODE_PORT="$RABBIT_PORT"
    RABBITMQ_DIST_PORT="$DIST_PORT"
    RABBITMQ_CONFIG_FILE="$S/rabbitmq/rabbitmq.conf"
    RABBITMQ_ENABLED_PLUGINS_FILE="$S/rabbitmq/enabled_plugins"
    RABBITMQ_MNESIA_BASE="$S/rabbitmq/mnesia" RABBITMQ_LOG_BASE="$S/log/rabbitmq"
    RABBITMQ_PID_FILE="$S/rabbitmq/rabbit.pid"
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-start_epmd false -kernel inet_dist_use_interface {127,0,0,1} -kernel inet_dist_listen_min $DIST_PORT -kernel inet_dist_listen_max $DIST_PORT"
)
start_bg "$S" rabbitmq env "${RABBIT_ENV[@]}" /usr/lib/rabbitmq/bin/rabbitmq-server

# --- configs ---------------------------------------------------------------
render keystone.conf "$S/etc/keystone/keystone.conf"
render placement.conf "$S/etc/placement/placement.conf"
render glance-api.conf "$S/etc/glance/glance-api.conf"
cp "$VENV/etc/glance/glance-api-paste.ini" "$S/etc/glance/"
render nova.conf "$S/etc/nova/nova.conf" REPORT_INTERVAL=2 SERVICE_DOWN_TIME=10
cp "$VENV/etc/nova/api-paste.ini" "$S/etc/nova/"
for h in $COMPUTE_HOSTS $HA_HOST; do
    render compute.conf "$S/etc/nova/compute-$h.conf" HOST="$h"
    mkdir -p "$S/nova/compute-$h/lock"
done

# Polls (no fixed sleeps) until CMD succeeds, or fails after SECS.
wait_for() {
    local what="$1" secs="$2"; shift 2
    local deadline=$(( $(date +%s) + secs ))
    until "$@" >/dev/null 2>&1; do
        [ "$(date +%s)" -lt "$deadline" ] || osdie "timed out after ${secs}s waiting for $what (logs: $S/log)"
        sleep 0.2
    done
}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for mariadb 60 mariadb-admin --no-defaults --socket="$S/mysql/sock" -uroot ping
mariadb --no-defaults --socket="$S/mysql/sock" -uroot <<SQL
CREATE USER 'os'@'127.0.0.1' IDENTIFIED BY '$DB_PASSWORD';
CREATE DATABASE keystone; CREATE DATABASE placement; CREATE DATABASE glance;
CREATE DATABASE nova_api; CREATE DATABASE nova; CREATE DATABASE nova_cell0;
GRANT ALL PRIVILEGES ON *.* TO 'os'@'127.0.0.1';
SQL
oslog "mariadb up on 127.0.0.1:$DB_PORT"

# --- keystone ----------------------------------------------------------------
KM=("$VENV/bin/keystone-manage" --config-file "$S/etc/keystone/keystone.conf")
"${KM[@]}" db_sync >"$S/log/keystone-manage.log" 2>&1 || osdie "keystone db_sync failed (see $S/log/keystone-manage.log)"
"${KM[@]}" fernet_setup --keystone-user root --keystone-group root >>"$S/log/keystone-manage.log" 2>&1
"${KM[@]}" credential_setup --keystone-user root --keystone-group root >>"$S/log/keystone-manage.log" 2>&1
# The bootstrap password comes from the environment, never the command line.
OS_BOOTSTRAP_PASSWORD="$ADMIN_PASSWORD" "${KM[@]}" bootstrap \
    --bootstrap-username admin --bootstrap-project-name admin \
    --bootstrap-admin-url "http://127.0.0.1:$KEYSTONE_PORT/v3" \
    --bootstrap-internal-url "http://127.0.0.1:$KEYSTONE_PORT/v3" \
    --bootstrap-public-url "http://127.0.0.1:$KEYSTONE_PORT/v3" \
    --bootstrap-region-id RegionOne >>"$S/log/keystone-manage.log" 2>&1 \
    || osdie "keystone bootstrap failed (see $S/log/keystone-manage.log)"

# wsgi NAME PORT MODULE ENVVAR=VALUE: one gunicorn (1 worker, 4 threads).
wsgi() { start_wsgi "$S" "$@"; }
wsgi keystone "$KEYSTONE_PORT" keystone.wsgi.api OS_KEYSTONE_CONFIG_DIR="$S/etc/keystone"
# Service users and catalog, beside the database syncs below.
"$PY" "$OS_HARNESS/bootstrap.py" "$S" identity 2>>"$S/log/bootstrap.log" &
identity=$!
oslog "keystone bootstrapped; syncing the placement, glance and nova databases"

# --- the other databases (placement and glance beside nova's chain) --------
"$VENV/bin/placement-manage" --config-file "$S/etc/placement/placement.conf" db sync \
    >"$S/log/placement-manage.log" 2>&1 &
p_sync=$!
"$VENV/bin/glance-manage" --config-file "$S/etc/glance/glance-api.conf" db_sync \
    >"$S/log/glance-manage.log" 2>&1 &
g_sync=$!
NM=("$VENV/bin/nova-manage" --config-file "$S/etc/nova/nova.conf")
{
    "${NM[@]}" api_db sync &&
    "${NM[@]}" cell_v2 map_cell0 \
        --database_connection "mysql+pymysql://os:$DB_PASSWORD@127.0.0.1:$DB_PORT/nova_cell0?charset=utf8" &&
    "${NM[@]}" cell_v2 create_cell --name cell1 &&
    "${NM[@]}" db sync
} >"$S/log/nova-manage.log" 2>&1 || osdie "nova db set-up failed (see $S/log/nova-manage.log)"
wait $p_sync || osdie "placement db sync failed (see $S/log/placement-manage.log)"
wait $g_sync || osdie "glance db sync failed (see $S/log/glance-manage.log)"
wait $identity || osdie "keystone users and catalog failed (see $S/log/bootstrap.log)"

wait_for rabbitmq 120 port_open "$RABBIT_PORT"
oslog "rabbitmq up on 127.0.0.1:$RABBIT_PORT"

# --- the API services, the control plane, the Neutron stand-in -------------
wsgi placement "$PLACEMENT_PORT" placement.wsgi.api OS_PLACEMENT_CONFIG_DIR="$S/etc/placement"
wsgi glance "$GLANCE_PORT" glance.wsgi.api OS_GLANCE_CONFIG_DIR="$S/etc/glance"
wsgi nova-api "$NOVA_PORT" nova.wsgi.osapi_compute OS_NOVA_CONFIG_DIR="$S/etc/nova"
start_bg "$S" neutron-stub "$PY" "$OS_HARNESS/neutron_stub.py" "$NEUTRON_PORT"
start_bg "$S" nova-conductor "$VENV/bin/nova-conductor" --config-file "$S/etc/nova/nova.conf"
start_bg "$S" nova-scheduler "$VENV/bin/nova-scheduler" --config-file "$S/etc/nova/nova.conf"
# The controller's Consul agent, then each host: nova-compute, its Consul
# client agent (joined to the controller's), its sshd stand-in.
mkdir -p "$S/consul"
start_bg "$S" consul "$(os_consul)" agent -dev -node novaha-controller \
    -bind 127.0.0.1 -client 127.0.0.1 -http-port "$CONSUL_HTTP_PORT" -dns-port -1 \
    -grpc-port -1 -serf-lan-port "$CONSUL_SERF_PORT" -serf-wan-port "$CONSUL_WAN_PORT" \
    -server-port "$CONSUL_SERVER_PORT" -log-level warn
for h in $COMPUTE_HOSTS $HA_HOST; do
    start_host "$S" "$h"
done

# --- one simulated BMC per compute -----------------------------------------
i=0
read -r -a bmc_ports <<<"$BMC_PORTS"
for h in $COMPUTE_HOSTS $HA_HOST; do
    d="$S/bmc/$h"
    mkdir -p "$d/state"
    echo 1 > "$d/power"
    printf '%s' "$BMC_PASSWORD" > "$d/password"
    render lan.conf "$d/lan.conf" HOST="$h" BMC_PORT="${bmc_ports[$i]}" HARNESS="$OS_HARNESS"
    cp "$OS_HARNESS/templates/bmc.emu" "$d/bmc.emu"
    start_bg "$S" "bmc-$h" /usr/bin/ipmi_sim -n -c "$d/lan.conf" -f "$d/bmc.emu" -s "$d/state"
    var="BMC_PORT_$(echo "$h" | tr 'a-z-' 'A-Z_')"
    printf '%s=%s\n' "$var" "${bmc_ports[$i]}" >> "$S/ports.env"
    i=$((i + 1))
done

# Every host's agent a passing member of the controller's Consul.
members_ok() {
    "$PY" - "http://127.0.0.1:$CONSUL_HTTP_PORT" $COMPUTE_HOSTS $HA_HOST <<'PY'
import json, sys, urllib.request
with urllib.request.urlopen(sys.argv[1] + "/v1/health/state/passing", timeout=5) as r:
    seen = {c["Node"] for c in json.load(r) if c["CheckID"] == "serfHealth"}
sys.exit(0 if set(sys.argv[2:]) <= seen else 1)
PY
}
wait_for "every host's consul agent" 60 members_ok
oslog "consul up on 127.0.0.1:$CONSUL_HTTP_PORT, one client agent per host"

# --- wait, discover, seed (image, flavor, the disabled HA node) ------------
"$PY" "$OS_HARNESS/bootstrap.py" "$S" seed > "$S/bootstrap.out" 2> >(tee -a "$S/log/bootstrap.log" >&2) \
    || osdie "bootstrap failed (see $S/log/bootstrap.log and the service logs in $S/log)"

{
    echo "# The novaha test OpenStack (tests/openstack/up.sh); source it."
    echo "OS_AUTH_URL=http://127.0.0.1:$KEYSTONE_PORT/v3"
    echo "OS_IDENTITY_API_VERSION=3"
    echo "OS_USERNAME=admin"
    echo "OS_PASSWORD=$ADMIN_PASSWORD"
    echo "OS_PROJECT_NAME=admin"
    echo "OS_USER_DOMAIN_NAME=Default"
    echo "OS_PROJECT_DOMAIN_NAME=Default"
    echo "OS_REGION_NAME=RegionOne"
    echo "OS_INTERFACE=public"
    echo "CLOUD_NAME=novaha-test"
    echo "OS_CLIENT_CONFIG_FILE=$S/clouds.yaml"
    echo "OS_COMPUTE_URL=http://127.0.0.1:$NOVA_PORT/v2.1"
    echo "OS_PLACEMENT_URL=http://127.0.0.1:$PLACEMENT_PORT"
    echo "OS_IMAGE_URL=http://127.0.0.1:$GLANCE_PORT"
    echo "OS_NETWORK_URL=http://127.0.0.1:$NEUTRON_PORT"
    echo "OS_COMPUTE_HOSTS='$COMPUTE_HOSTS'"
    echo "OS_HA_HOST=$HA_HOST"
    cat "$S/bootstrap.out"
    echo "BMC_USER=admin"
    echo "BMC_PASSWORD_FILE=$S/bmc/compute-1/password"
    grep '^BMC_PORT_' "$S/ports.env"
    echo "CONSUL_HTTP_ADDR=http://127.0.0.1:$CONSUL_HTTP_PORT"
    printf '%s\n' "$HOST_PORTS"
    echo "RABBIT_PORT=$RABBIT_PORT"
    echo "DB_PORT=$DB_PORT"
    echo "STATE_DIR=$S"
    echo "HARNESS_DIR=$OS_HARNESS"
    echo "VENV=$VENV"
} > "$S/env.tmp"
cat > "$S/clouds.yaml" <<YAML
clouds:
  novaha-test:
    auth:
      auth_url: http://127.0.0.1:$KEYSTONE_PORT/v3
      username: admin
      password: "$ADMIN_PASSWORD"
      project_name: admin
      user_domain_name: Default
      project_domain_name: Default
    region_name: RegionOne
    interface: public
    identity_api_version: 3
YAML
mv "$S/env.tmp" "$S/env"

ok=1
oslog "stack up in $(( $(date +%s) - T0 ))s: keystone http://127.0.0.1:$KEYSTONE_PORT/v3, env in $S/env"
