"""Second half of up.sh: the OpenStack side of the novaha test stack.

Runs once every process is started. Creates the service users, the
catalog, waits (by polling) until every API answers and the four computes
are up, discovered into cell1 and known to placement, then uploads a tiny
image, creates a flavor, disables the spare (HA) compute in Nova and
prints the ids as KEY=VALUE lines for up.sh to put in STATE/env.

Usage: bootstrap.py STATE identity|seed
  identity: service users and catalog (before any nova service starts: they
            authenticate as the nova user at start-up);
  seed:     the waits, discovery, image, flavor and the disabled HA node.
The ports and passwords come from STATE/ports.env.
"""

import os
import subprocess
import sys
import time

from keystoneauth1 import session as ks_session
from keystoneauth1.identity import v3

HA_REASON = "novaha HA node: spare compute, enabled by novaha only to take a failed node's instances"
NOVA_MV = "2.94"


def log(msg):
    sys.stderr.write(f"[openstack {time.strftime('%H:%M:%S')}] {msg}\n")
    sys.stderr.flush()


def read_env(path):
    env = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                k, v = line.split("=", 1)
                env[k] = v.strip("'\"")
    return env


def dead_services(state):
    """The started processes (pid files in STATE/run) that no longer run."""
    dead = []
    run = os.path.join(state, "run")
    for name in sorted(os.listdir(run)):
        if not name.endswith(".pid") or name == "reaper.pid":
            continue
        pid, start = open(os.path.join(run, name)).read().split()
        try:
            stat = open(f"/proc/{pid}/stat").read()
            fields = stat.rsplit(") ", 1)[1].split()
            alive = fields[0] != "Z" and fields[19] == start
        except (OSError, IndexError):
            alive = False
        if not alive:
            dead.append(name[:-4])
    return dead


STATE = None


def wait(what, check, timeout=300.0, interval=0.5):
    """Polls check() until it returns a truthy value; fails after timeout,
    or at once when a process the stack started has died."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        dead = dead_services(STATE) if STATE else []
        if dead:
            sys.exit(f"bootstrap: waiting for {what}: {', '.join(dead)} died "
                     f"(see {STATE}/log/<name>.log and <name>-app.log)")
        try:
            result = check()
            if result:
                return result
        except Exception as e:  # peers not up yet: keep polling
            last = e
        if time.monotonic() > deadline:
            sys.exit(f"bootstrap: timed out after {timeout:.0f}s waiting for {what} (last error: {last})")
        time.sleep(interval)


def main():
    global STATE
    state, phase = sys.argv[1], sys.argv[2]
    STATE = state
    e = read_env(os.path.join(state, "ports.env"))
    venv = e["VENV"]
    ks = f"http://127.0.0.1:{e['KEYSTONE_PORT']}/v3"
    urls = {
        "compute": f"http://127.0.0.1:{e['NOVA_PORT']}/v2.1",
        "placement": f"http://127.0.0.1:{e['PLACEMENT_PORT']}",
        "image": f"http://127.0.0.1:{e['GLANCE_PORT']}",
        "network": f"http://127.0.0.1:{e['NEUTRON_PORT']}",
    }
    names = {"compute": "nova", "placement": "placement", "image": "glance", "network": "neutron"}
    import requests

    wait("keystone", lambda: requests.get(ks, timeout=5).status_code == 200)
    auth = v3.Password(auth_url=ks, username="admin", password=e["ADMIN_PASSWORD"],
                       project_name="admin", user_domain_name="Default",
                       project_domain_name="Default")
    s = ks_session.Session(auth=auth)
    kw = {"endpoint_override": ks, "raise_exc": True}

    def one(path, key, name, body):
        """Finds the named resource or creates it; returns its id."""
        found = s.get(f"{path}?name={name}", **kw).json()[key]
        if found:
            return found[0]["id"]
        return s.post(path, json={key[:-1]: body}, **kw).json()[key[:-1]]["id"]

    def identity():
        """Service users, roles and catalog; every step finds before it
        creates, so a try cut short by a busy keystone is simply run again."""
        default = "default"
        service_project = one("/projects", "projects", "service",
                              {"name": "service", "domain_id": default})
        roles = {r: one("/roles", "roles", r, {"name": r}) for r in ("admin", "service")}
        for user in ("nova", "placement", "glance"):
            uid = one("/users", "users", user, {"name": user, "domain_id": default,
                                                "password": e["SERVICE_PASSWORD"]})
            for rid in roles.values():
                s.put(f"/projects/{service_project}/users/{uid}/roles/{rid}", **kw)
        for stype, url in urls.items():
            sid = None
            for svc in s.get(f"/services?type={stype}", **kw).json()["services"]:
                sid = svc["id"]
            if sid is None:
                sid = s.post("/services", json={"service": {"type": stype, "name": names[stype]}},
                             **kw).json()["service"]["id"]
            have = {ep["interface"] for ep in
                    s.get(f"/endpoints?service_id={sid}", **kw).json()["endpoints"]}
            for iface in ("public", "internal", "admin"):
                if iface not in have:
                    s.post("/endpoints", json={"endpoint": {"service_id": sid, "interface": iface,
                                                            "url": url, "region_id": "RegionOne"}},
                           **kw)
        return True

    def identity_logged():
        try:
            return identity()
        except Exception as err:  # logged for the post-mortem, then retried
            log(f"keystone users and catalog: {type(err).__name__}: {err}; trying again")
            raise

    wait("keystone users and catalog", identity_logged, timeout=300.0, interval=2.0)
    log("keystone: service users and catalog ready")
    if phase == "identity":
        return

    # A fresh session so that the token's catalog holds the new endpoints.
    s = ks_session.Session(auth=v3.Password(
        auth_url=ks, username="admin", password=e["ADMIN_PASSWORD"], project_name="admin",
        user_domain_name="Default", project_domain_name="Default"))
    nova_h = {"OpenStack-API-Version": f"compute {NOVA_MV}"}

    def nova(method, path, **a):
        return s.request(urls["compute"] + path, method, headers=nova_h, raise_exc=True, **a)

    for name, url in urls.items():
        wait(name, lambda url=url: s.get(url, authenticated=False, raise_exc=False).status_code < 500)
    log("APIs answer: nova, placement, glance, neutron stub")

    hosts = e["COMPUTE_HOSTS"].split() + [e["HA_HOST"]]

    def computes_up():
        svcs = nova("GET", "/os-services?binary=nova-compute").json()["services"]
        up = {x["host"] for x in svcs if x["state"] == "up"}
        return all(h in up for h in hosts)

    wait("the four nova-compute services to report up", computes_up)
    log("nova-compute services up: " + " ".join(hosts))

    nm = [f"{venv}/bin/nova-manage", "--config-file", f"{state}/etc/nova/nova.conf"]

    def discovered():
        subprocess.run(nm + ["cell_v2", "discover_hosts"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        out = subprocess.run(nm + ["cell_v2", "list_hosts"], check=True,
                             capture_output=True, text=True).stdout
        return all(f" {h} " in out for h in hosts)

    wait("cell_v2 discover_hosts to map the four computes", discovered, interval=1.0)

    def in_placement():
        rps = s.get(urls["placement"] + "/resource_providers",
                    headers={"OpenStack-API-Version": "placement 1.14"}).json()
        names_ = {rp["name"] for rp in rps["resource_providers"]}
        return all(h in names_ for h in hosts)

    wait("the four computes in placement", in_placement)
    log("computes discovered and in placement")

    # A tiny image (the fake driver never reads it).
    img = None
    for i in s.get(urls["image"] + "/v2/images?name=novaha-tiny").json()["images"]:
        if i["status"] == "active":
            img = i["id"]
    if img is None:
        img = s.post(urls["image"] + "/v2/images", json={
            "name": "novaha-tiny", "disk_format": "raw", "container_format": "bare",
            "visibility": "public"}).json()["id"]
        s.put(urls["image"] + f"/v2/images/{img}/file", data=b"\0" * 1024,
              headers={"Content-Type": "application/octet-stream"})
        wait("image upload", lambda: s.get(urls["image"] + f"/v2/images/{img}").json()["status"]
             == "active")

    flavor = None
    for f in nova("GET", "/flavors").json()["flavors"]:
        if f["name"] == "novaha.tiny":
            flavor = f["id"]
    if flavor is None:
        flavor = nova("POST", "/flavors", json={"flavor": {
            "name": "novaha.tiny", "ram": 64, "vcpus": 1, "disk": 1}}).json()["flavor"]["id"]

    svcs = nova("GET", f"/os-services?binary=nova-compute&host={e['HA_HOST']}").json()["services"]
    nova("PUT", f"/os-services/{svcs[0]['id']}",
         json={"status": "disabled", "disabled_reason": HA_REASON})
    log(f"image {img}, flavor {flavor}, {e['HA_HOST']} disabled as the HA node")
    print(f"OS_IMAGE_ID={img}")
    print(f"OS_FLAVOR_ID={flavor}")
    print(f"OS_HA_SERVICE_ID={svcs[0]['id']}")


if __name__ == "__main__":
    main()
