"""Checks novaha-sim with the real OpenStack Python clients.

Run by crates/sim/tests/fidelity.rs against a sim seeded with 3 computes x 4
servers, one HA host (ha-1), max_limit 5 (so listing pages), evacuate_delay
0.3 s, service_down_time 1 s. Environment: OS_AUTH_URL, SIM_URL.
If a real client rejects the sim, the sim is wrong.
"""

import json
import os
import sys
import time
import urllib.request
import uuid

import openstack
from keystoneauth1 import exceptions as ks_exc
from keystoneauth1 import session
from keystoneauth1.identity import v3
from novaclient import client as nova_client
from novaclient import exceptions as nova_exc

AUTH_URL = os.environ["OS_AUTH_URL"]
SIM = os.environ["SIM_URL"]


def step(msg):
    print("fidelity:", msg, flush=True)


def control(method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(SIM + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        raw = r.read()
        return json.loads(raw) if raw else None


def wait(what, check, timeout=15.0):
    deadline = time.monotonic() + timeout
    while True:
        v = check()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.1)


def password_session():
    auth = v3.Password(auth_url=AUTH_URL, username="admin", password="admin",
                       project_name="admin", user_domain_name="Default",
                       project_domain_name="Default")
    return session.Session(auth=auth)


# --- Keystone -------------------------------------------------------------
step("authenticate (password, project scoped by domain name)")
sess = password_session()
token = sess.get_token()
assert token, "no token"
compute_url = sess.get_endpoint(service_type="compute", interface="public",
                                region_name="RegionOne")
assert compute_url.endswith("/compute/v2.1"), compute_url
for iface in ("internal", "admin"):
    assert sess.get_endpoint(service_type="compute", interface=iface)
project_id = sess.get_project_id()
user_id = sess.get_user_id()
assert project_id and user_id

step("bad password is a 401")
bad = session.Session(auth=v3.Password(
    auth_url=AUTH_URL, username="admin", password="wrong", project_name="admin",
    user_domain_name="Default", project_domain_name="Default"))
try:
    bad.get_token()
    raise AssertionError("a wrong password was accepted")
except ks_exc.Unauthorized:
    pass

# --- Nova, python-novaclient at 2.53 ------------------------------------
nova = nova_client.Client("2.53", session=sess)

step("list nova-compute services")
services = {s.host: s for s in nova.services.list(binary="nova-compute")}
assert sorted(services) == ["compute-1", "compute-2", "compute-3", "ha-1"], sorted(services)
for s in services.values():
    uuid.UUID(s.id)  # ids are UUIDs from 2.53
    assert s.state == "up", (s.host, s.state)
    assert s.forced_down is False
assert services["ha-1"].status == "disabled" and services["ha-1"].disabled_reason
assert services["compute-1"].status == "enabled"
assert len(nova.services.list()) == 6  # + scheduler + conductor
assert [s.host for s in nova.services.list(host="compute-2")] == ["compute-2"]

step("heartbeats (updated_at) in Nova's format, answers dated by the sim's clock")
import datetime
import email.utils
for s in services.values():
    # Nova's format: no zone, microseconds (UTC by convention).
    beat = datetime.datetime.strptime(s.updated_at, "%Y-%m-%dT%H:%M:%S.%f")
resp = sess.get(compute_url + "/os-services?binary=nova-compute",
                headers={"OpenStack-API-Version": "compute 2.53"})
date = email.utils.parsedate_to_datetime(resp.headers["Date"])
assert date.tzinfo is not None, resp.headers["Date"]
for s in resp.json()["services"]:
    beat = datetime.datetime.strptime(s["updated_at"], "%Y-%m-%dT%H:%M:%S.%f").replace(
        tzinfo=datetime.timezone.utc)
    # A running service's last heartbeat is at most report_interval old
    # (whole-second Date: up to one second more), never in the future.
    age = (date - beat).total_seconds()
    assert -1.0 < age <= 3.0, (s["host"], age, resp.headers["Date"], s["updated_at"])

step("list servers by host, all tenants")
on_c1 = nova.servers.list(search_opts={"all_tenants": 1, "host": "compute-1"})
assert len(on_c1) == 4, len(on_c1)
for srv in on_c1:
    assert getattr(srv, "OS-EXT-SRV-ATTR:host") == "compute-1"
    assert srv.status == "ACTIVE"
    assert getattr(srv, "OS-EXT-STS:vm_state") == "active"
    assert getattr(srv, "OS-EXT-STS:task_state") is None
    assert srv.user_id and srv.tenant_id
    assert isinstance(srv.metadata, dict)

step("pagination: novaclient follows markers through every page")
everything = nova.servers.list(search_opts={"all_tenants": 1}, limit=-1)
assert len(everything) == 12, len(everything)
assert len({s.id for s in everything}) == 12
page = nova.servers.list(search_opts={"all_tenants": 1}, limit=5)
assert len(page) == 5

step("one server by id; a missing one is 404")
one = nova.servers.get(on_c1[0].id)
assert one.id == on_c1[0].id
try:
    nova.servers.get(str(uuid.uuid4()))
    raise AssertionError("missing server found")
except nova_exc.NotFound:
    pass

step("evacuate is refused (409) while the source service is up")
control("POST", "/sim/hosts/compute-1/kill")
try:
    nova.servers.evacuate(on_c1[0], host="ha-1")
    raise AssertionError("evacuate of a server on an up host was accepted")
except nova_exc.Conflict:
    pass

step("the killed host reads down after service_down_time")
wait("compute-1 down",
     lambda: nova.services.list(host="compute-1", binary="nova-compute")[0].state == "down")

step("force-down and disable by service id (2.53)")
c1 = services["compute-1"]
r = nova.services.force_down(c1.id, True)
assert r.forced_down is True, r.to_dict()
r = nova.services.disable_log_reason(c1.id, "novaha epoch 7")
assert r.status == "disabled" and r.disabled_reason == "novaha epoch 7"
c1_now = nova.services.list(host="compute-1", binary="nova-compute")[0]
assert c1_now.forced_down is True and c1_now.state == "down"
r = nova.services.enable(services["ha-1"].id)
assert r.status == "enabled"
try:
    nova.services.force_down(str(uuid.uuid4()), True)
    raise AssertionError("unknown service id accepted")
except nova_exc.NotFound:
    pass

step("evacuate to ha-1 (2.53) and to the scheduler (openstacksdk)")
for srv in on_c1[:3]:
    nova.servers.evacuate(srv, host="ha-1")
rebuilding = nova.servers.get(on_c1[0].id)
assert rebuilding.status in ("REBUILD", "ACTIVE"), rebuilding.status
try:
    nova.servers.evacuate(on_c1[0], host="compute-1")
    raise AssertionError("evacuate to the same host accepted")
except (nova_exc.BadRequest, nova_exc.Conflict):
    pass
try:
    nova.servers.evacuate(on_c1[3], host="no-such-host")
    raise AssertionError("evacuate to an unknown host accepted")
except (nova_exc.NotFound, nova_exc.BadRequest):
    pass

conn = openstack.connect(auth_url=AUTH_URL, username="admin", password="admin",
                         project_name="admin", user_domain_name="Default",
                         project_domain_name="Default", region_name="RegionOne")
conn.compute.evacuate_server(on_c1[3].id)


def landed():
    got = [nova.servers.get(s.id) for s in on_c1]
    if all(getattr(g, "OS-EXT-STS:task_state") is None and g.status in ("ACTIVE", "SHUTOFF")
           for g in got):
        return got
    return None


got = wait("evacuations to land", landed)
for g in got[:3]:
    assert getattr(g, "OS-EXT-SRV-ATTR:host") == "ha-1", getattr(g, "OS-EXT-SRV-ATTR:host")
    assert g.status == "ACTIVE", g.status  # lands ACTIVE before 2.95
assert getattr(got[3], "OS-EXT-SRV-ATTR:host") != "compute-1"
assert nova.servers.list(search_opts={"all_tenants": 1, "host": "compute-1"}) == []

step("list migrations (novaclient 2.53 and 2.59, openstacksdk)")
migs = nova.migrations.list(instance_uuid=on_c1[0].id)
assert len(migs) == 1, migs
m = migs[0]
assert m.migration_type == "evacuation" and m.status == "done", m.to_dict()
assert m.source_compute == "compute-1" and m.dest_compute == "ha-1"
evac = nova.migrations.list(migration_type="evacuation", source_compute="compute-1")
assert len(evac) == 4, len(evac)
nova59 = nova_client.Client("2.59", session=sess)
assert all(uuid.UUID(x.uuid) for x in nova59.migrations.list())
sdk_migs = list(conn.compute.migrations(migration_type="evacuation"))
assert len(sdk_migs) == 4 and all(x.status == "done" for x in sdk_migs), sdk_migs

step("evacuate with 2.95 lands SHUTOFF")
on_c2 = nova.servers.list(search_opts={"all_tenants": 1, "host": "compute-2"})
control("POST", "/sim/hosts/compute-2/kill")
nova95 = nova_client.Client("2.95", session=sess)
c2 = services["compute-2"]
nova95.services.force_down(c2.id, True)
nova95.servers.evacuate(on_c2[0], host="compute-3")
wait("2.95 evacuation", lambda: nova.servers.get(on_c2[0].id).status == "SHUTOFF")
assert getattr(nova.servers.get(on_c2[0].id), "OS-EXT-SRV-ATTR:host") == "compute-3"

step("lock with a reason (2.73), start, stop")
nova73 = nova_client.Client("2.73", session=sess)
nova73.servers.lock(on_c2[0].id, reason="novaha epoch 7")
locked = nova73.servers.get(on_c2[0].id)
assert locked.locked is True and locked.locked_reason == "novaha epoch 7"
nova73.servers.unlock(on_c2[0].id)
nova.servers.start(on_c2[0].id)
assert nova.servers.get(on_c2[0].id).status == "ACTIVE"
try:
    nova.servers.start(on_c2[0].id)
    raise AssertionError("start of an ACTIVE server accepted")
except nova_exc.Conflict:
    pass
nova.servers.stop(on_c2[0].id)
assert nova.servers.get(on_c2[0].id).status == "SHUTOFF"

step("openstacksdk: services, servers by host across pages, hypervisors")
sdk_services = {s.host: s for s in conn.compute.services(binary="nova-compute")}
assert sdk_services["compute-1"].is_forced_down is True
assert sdk_services["compute-1"].state == "down"
assert sdk_services["compute-3"].state == "up"
assert sdk_services["compute-3"].updated_at, "openstacksdk reads updated_at"
sdk_servers = list(conn.compute.servers(all_projects=True))
assert len(sdk_servers) == 12, len(sdk_servers)
assert sum(1 for s in sdk_servers if s.compute_host == "compute-1") == 0
assert sum(1 for s in sdk_servers if s.compute_host == "ha-1") >= 3
hyps = {h.name: h for h in conn.compute.hypervisors(details=True)}
assert sorted(hyps) == ["compute-1", "compute-2", "compute-3", "ha-1"], sorted(hyps)

step("old-style force-down at 2.11 (pre-2.53 form)")
nova211 = nova_client.Client("2.11", session=sess)
r = nova211.services.force_down("compute-2", "nova-compute", False)
assert r.forced_down is False
ids = [s.id for s in nova211.services.list(binary="nova-compute")]
assert all(isinstance(i, int) for i in ids), ids

step("an unsupported microversion is refused")
resp = sess.get(compute_url + "/os-services",
                headers={"OpenStack-API-Version": "compute 2.999"},
                raise_exc=False)
assert resp.status_code == 406, resp.status_code
resp = sess.get(compute_url + "/os-services",
                headers={"OpenStack-API-Version": "compute 2.60"})
assert resp.headers["OpenStack-API-Version"] == "compute 2.60"

step("Keystone: users with e-mail, role assignments (openstacksdk)")
owner = got[0].user_id
user = conn.identity.get_user(owner)
assert user.email and user.email.endswith("@example.org"), user
tenant = got[0].tenant_id
members = list(conn.identity.role_assignments(scope_project_id=tenant, effective=True,
                                              include_names=True))
assert members, "no role assignments"
member_ids = {a.user["id"] for a in members}
assert owner in member_ids
assert all(a.role.get("name") for a in members)

step("an expired token is refused (401) and keystoneauth re-authenticates")
old_token = sess.get_token()
control("POST", "/sim/tokens/expire")
raw = sess.get(compute_url + "/os-services", authenticated=False,
               headers={"X-Auth-Token": old_token}, raise_exc=False)
assert raw.status_code == 401, raw.status_code
assert "unauthorized" in raw.json() or "error" in raw.json(), raw.text
assert len(nova.services.list(binary="nova-compute")) == 4
assert sess.get_token() != old_token

step("application credential")
app = session.Session(auth=v3.ApplicationCredential(
    auth_url=AUTH_URL, application_credential_id=os.environ["OS_APP_CRED_ID"],
    application_credential_secret=os.environ["OS_APP_CRED_SECRET"]))
assert app.get_project_id() == project_id
assert len(nova_client.Client("2.53", session=app).services.list()) == 6
print("FIDELITY OK", flush=True)
sys.exit(0)
