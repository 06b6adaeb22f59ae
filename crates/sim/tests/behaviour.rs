//! The sim's Keystone and Nova behaviours over real HTTP: microversions,
//! 409 while the source is up, down after service_down_time, landing after
//! the delay, 2.95 SHUTOFF, paging links, token expiry, faults, the call
//! log. Time-driven behaviour is checked by jumping the sim clock, never by
//! sleeping.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use novaha_sim::{FaultKind, FaultRule, Microversion, Sim, SimConfig, SimHandle};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

struct Env {
    sim: SimHandle,
    http: Client,
    token: String,
}

async fn start(cfg: SimConfig) -> Env {
    let sim = Sim::start("127.0.0.1:0", cfg).await.expect("start sim");
    let http = Client::new();
    let token = login(&sim, &http).await;
    Env { sim, http, token }
}

async fn login(sim: &SimHandle, http: &Client) -> String {
    let body = json!({"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": "admin", "domain": {"name": "Default"}, "password": "admin"}}},
        "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}});
    let r = http
        .post(format!("{}/auth/tokens", sim.keystone_url()))
        .json(&body)
        .send()
        .await
        .expect("auth");
    assert_eq!(r.status(), StatusCode::CREATED);
    r.headers()["x-subject-token"].to_str().unwrap().to_owned()
}

impl Env {
    async fn call(
        &self,
        method: &str,
        path: &str,
        mv: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let url = format!("{}{}", self.sim.nova_url(), path);
        let mut req = self
            .http
            .request(method.parse().unwrap(), url)
            .header("X-Auth-Token", &self.token);
        if !mv.is_empty() {
            req = req.header("OpenStack-API-Version", format!("compute {mv}"));
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.expect("request");
        let status = r.status();
        let text = r.text().await.expect("body");
        let v = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).expect("json body")
        };
        (status, v)
    }

    async fn service_id(&self, host: &str) -> String {
        let (_, v) = self
            .call(
                "GET",
                &format!("/os-services?host={host}&binary=nova-compute"),
                "2.53",
                None,
            )
            .await;
        v["services"][0]["id"].as_str().unwrap().to_owned()
    }

    async fn server_ids_on(&self, host: &str) -> Vec<String> {
        let (s, v) = self
            .call(
                "GET",
                &format!("/servers/detail?all_tenants=1&host={host}"),
                "2.53",
                None,
            )
            .await;
        assert_eq!(s, StatusCode::OK);
        v["servers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_owned())
            .collect()
    }

    async fn server(&self, id: &str, mv: &str) -> Value {
        let (s, v) = self.call("GET", &format!("/servers/{id}"), mv, None).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v["server"].clone()
    }
}

fn small() -> SimConfig {
    SimConfig {
        hosts: 2,
        instances_per_host: 3,
        ha_nodes: 1,
        ..SimConfig::default()
    }
}

#[tokio::test]
async fn os_services_is_dated_by_the_sim_clock_and_heartbeats_stop_when_killed() {
    let env = start(SimConfig {
        report_interval: Duration::from_secs(10),
        ..small()
    })
    .await;
    let list = |env: &Env| {
        let url = format!("{}/os-services?binary=nova-compute", env.sim.nova_url());
        let req = env
            .http
            .get(url)
            .header("X-Auth-Token", &env.token)
            .header("OpenStack-API-Version", "compute 2.53");
        async move {
            let r = req.send().await.expect("request");
            let date = r.headers()["date"].to_str().unwrap().to_owned();
            let v: Value = r.json().await.unwrap();
            (date, v)
        }
    };
    let beat_age = |date: &str, v: &Value, host: &str| {
        let date = chrono::DateTime::parse_from_rfc2822(date).unwrap();
        let s = v["services"]
            .as_array()
            .unwrap_or_else(|| panic!("no services in {v}"))
            .iter()
            .find(|s| s["host"] == host)
            .unwrap();
        let beat = chrono::NaiveDateTime::parse_from_str(
            s["updated_at"].as_str().unwrap(),
            "%Y-%m-%dT%H:%M:%S%.6f",
        )
        .unwrap()
        .and_utc();
        (date.with_timezone(&chrono::Utc) - beat).num_milliseconds()
    };
    // The Date header is the sim's clock, moved by advance_clock too.
    env.sim.advance_clock(Duration::from_secs(600));
    let (date, v) = list(&env).await;
    let sim_now = env.sim.now();
    let date_t = chrono::DateTime::parse_from_rfc2822(&date).unwrap();
    assert!(
        (sim_now - date_t.with_timezone(&chrono::Utc))
            .num_milliseconds()
            .abs()
            < 2_000,
        "{date} vs {sim_now}"
    );
    // A running host's heartbeat is at most report_interval old (the Date
    // has whole seconds: up to one second less).
    let age = beat_age(&date, &v, "compute-1");
    assert!((-1_000..10_000).contains(&age), "{age}");
    env.sim.kill("compute-1").unwrap();
    env.sim.advance_clock(Duration::from_secs(30));
    let (date, v) = list(&env).await;
    assert!(beat_age(&date, &v, "compute-1") >= 29_000);
    assert!((-1_000..10_000).contains(&beat_age(&date, &v, "compute-2")));
    // Other answers carry the sim's Date too.
    let r = env
        .http
        .get(env.sim.nova_url())
        .send()
        .await
        .expect("version document");
    assert!(chrono::DateTime::parse_from_rfc2822(r.headers()["date"].to_str().unwrap()).is_ok());
}

#[tokio::test]
async fn microversion_negotiation_and_version_documents() {
    let env = start(small()).await;
    let (s, v) = env.call("GET", "/os-services", "", None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(v["services"][0]["id"].is_u64(), "integer ids before 2.53");
    assert!(
        v["services"][0].get("forced_down").is_none(),
        "no forced_down before 2.11"
    );
    let r = env
        .http
        .get(format!("{}/os-services", env.sim.nova_url()))
        .header("X-Auth-Token", &env.token)
        .header("X-OpenStack-Nova-API-Version", "2.53")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["openstack-api-version"], "compute 2.53");
    assert_eq!(r.headers()["x-openstack-nova-api-version"], "2.53");
    let (s, v) = env.call("GET", "/os-services", "latest", None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(v["services"][0]["id"].is_string());
    let (s, v) = env.call("GET", "/os-services", "2.97", None).await;
    assert_eq!(s, StatusCode::NOT_ACCEPTABLE);
    assert_eq!(v["computeFault"]["code"], 406);
    let (s, _) = env.call("GET", "/os-services", "two", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // An old cloud without 2.53.
    env.sim.set_max_version(Microversion(2, 52));
    let doc: Value = env
        .http
        .get(format!("{}/compute/", env.sim.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["versions"][0]["version"], "2.52");
    assert_eq!(doc["versions"][0]["min_version"], "2.1");
    let doc: Value = env
        .http
        .get(format!("{}/", env.sim.nova_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["version"]["id"], "v2.1");
    let (s, _) = env.call("GET", "/os-services", "2.53", None).await;
    assert_eq!(s, StatusCode::NOT_ACCEPTABLE);
}

#[tokio::test]
async fn a_killed_host_reads_down_only_after_service_down_time() {
    let env = start(small()).await;
    let state = |v: &Value| v["services"][0]["state"].as_str().unwrap().to_owned();
    env.sim.kill("compute-1").unwrap();
    let (_, v) = env
        .call("GET", "/os-services?host=compute-1", "2.53", None)
        .await;
    assert_eq!(state(&v), "up");
    env.sim.advance_clock(Duration::from_secs(9));
    let (_, v) = env
        .call("GET", "/os-services?host=compute-1", "2.53", None)
        .await;
    assert_eq!(state(&v), "up", "9 s < service_down_time");
    env.sim.advance_clock(Duration::from_secs(2));
    let (_, v) = env
        .call("GET", "/os-services?host=compute-1", "2.53", None)
        .await;
    assert_eq!(state(&v), "down");
    // The control API revives it.
    let r = env
        .http
        .post(format!("{}/sim/hosts/compute-1/revive", env.sim.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let (_, v) = env
        .call("GET", "/os-services?host=compute-1", "2.53", None)
        .await;
    assert_eq!(state(&v), "up");
    let r = env
        .http
        .post(format!("{}/sim/hosts/nope/kill", env.sim.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn evacuate_is_409_while_the_source_is_up_then_lands_after_the_delay() {
    let env = start(small()).await;
    let ids = env.server_ids_on("compute-1").await;
    assert_eq!(ids.len(), 3);
    let evac = json!({"evacuate": {"host": "ha-1"}});
    let (s, v) = env
        .call(
            "POST",
            &format!("/servers/{}/action", ids[0]),
            "2.53",
            Some(evac.clone()),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert!(
        v["conflictingRequest"]["message"]
            .as_str()
            .unwrap()
            .contains("compute-1")
    );

    // Force-down by id (2.53) allows it at once; ha-1 must be enabled to land.
    let sid = env.service_id("compute-1").await;
    let (s, v) = env
        .call(
            "PUT",
            &format!("/os-services/{sid}"),
            "2.53",
            Some(json!({"forced_down": true})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["service"]["forced_down"], true);
    assert_eq!(v["service"]["state"], "down");
    let ha = env.service_id("ha-1").await;
    let (s, _) = env
        .call(
            "PUT",
            &format!("/os-services/{ha}"),
            "2.53",
            Some(json!({"status": "enabled"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);

    let (s, v) = env
        .call(
            "POST",
            &format!("/servers/{}/action", ids[0]),
            "2.53",
            Some(evac.clone()),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v, Value::Null, "no body from 2.14");
    let srv = env.server(&ids[0], "2.53").await;
    assert_eq!(srv["status"], "REBUILD");
    assert_eq!(srv["OS-EXT-STS:task_state"], "rebuilding");
    // A second evacuate while rebuilding is refused.
    let (s, _) = env
        .call(
            "POST",
            &format!("/servers/{}/action", ids[0]),
            "2.53",
            Some(evac),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (_, m) = env
        .call(
            "GET",
            &format!("/os-migrations?instance_uuid={}", ids[0]),
            "2.59",
            None,
        )
        .await;
    assert_eq!(m["migrations"][0]["status"], "accepted");
    assert_eq!(m["migrations"][0]["migration_type"], "evacuation");

    env.sim.advance_clock(Duration::from_millis(1100));
    let srv = env.server(&ids[0], "2.53").await;
    assert_eq!(srv["status"], "ACTIVE");
    assert_eq!(srv["OS-EXT-SRV-ATTR:host"], "ha-1");
    assert_eq!(srv["OS-EXT-STS:task_state"], Value::Null);
    let (_, m) = env
        .call(
            "GET",
            "/os-migrations?migration_type=evacuation&source_compute=compute-1",
            "2.59",
            None,
        )
        .await;
    assert_eq!(m["migrations"].as_array().unwrap().len(), 1);
    assert_eq!(m["migrations"][0]["status"], "done");
    assert_eq!(m["migrations"][0]["dest_compute"], "ha-1");

    // Errors as Nova: unknown host 404, same host 400, unknown server 404,
    // onSharedStorage not allowed from 2.14.
    let (s, v) = env
        .call(
            "POST",
            &format!("/servers/{}/action", ids[1]),
            "2.53",
            Some(json!({"evacuate": {"host": "nowhere"}})),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(v["itemNotFound"].is_object());
    let (s, _) = env
        .call(
            "POST",
            &format!("/servers/{}/action", ids[1]),
            "2.53",
            Some(json!({"evacuate": {"host": "compute-1"}})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = env
        .call(
            "POST",
            "/servers/00000000-0000-4000-8000-000000000000/action",
            "2.53",
            Some(json!({"evacuate": {}})),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, v) = env
        .call(
            "POST",
            &format!("/servers/{}/action", ids[1]),
            "2.53",
            Some(json!({"evacuate": {"onSharedStorage": false}})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        v["badRequest"]["message"]
            .as_str()
            .unwrap()
            .contains("onSharedStorage")
    );
}

#[tokio::test]
async fn evacuation_lands_shutoff_from_2_95_and_old_clients_get_admin_pass() {
    let env = start(small()).await;
    env.sim.kill("compute-1").unwrap();
    env.sim.advance_clock(Duration::from_secs(11));
    let ids = env.server_ids_on("compute-1").await;
    let (s, _) = env
        .call(
            "POST",
            &format!("/servers/{}/action", ids[0]),
            "2.95",
            Some(json!({"evacuate": {"host": "compute-2"}})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    // Before 2.14: onSharedStorage is required and adminPass comes back.
    let (s, _) = env
        .call(
            "POST",
            &format!("/servers/{}/action", ids[1]),
            "2.1",
            Some(json!({"evacuate": {"host": "compute-2"}})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, v) = env
        .call(
            "POST",
            &format!("/servers/{}/action", ids[1]),
            "2.1",
            Some(json!({"evacuate": {"host": "compute-2", "onSharedStorage": false}})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(v["adminPass"].is_string());
    // No host: the scheduler picks an enabled, up host (ha-1 is disabled).
    let (s, _) = env
        .call(
            "POST",
            &format!("/servers/{}/action", ids[2]),
            "2.53",
            Some(json!({"evacuate": {}})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    env.sim.advance_clock(Duration::from_secs(2));
    let a = env.server(&ids[0], "2.95").await;
    assert_eq!(
        (a["status"].as_str(), a["OS-EXT-STS:vm_state"].as_str()),
        (Some("SHUTOFF"), Some("stopped"))
    );
    assert_eq!(a["OS-EXT-SRV-ATTR:host"], "compute-2");
    let b = env.server(&ids[1], "2.1").await;
    assert_eq!(b["status"], "ACTIVE");
    let c = env.server(&ids[2], "2.53").await;
    assert_eq!(c["OS-EXT-SRV-ATTR:host"], "compute-2");
}

#[tokio::test]
async fn evacuation_to_a_disabled_or_dead_target_ends_in_error() {
    let env = start(small()).await;
    env.sim.kill("compute-1").unwrap();
    env.sim.advance_clock(Duration::from_secs(11));
    let ids = env.server_ids_on("compute-1").await;
    // ha-1 is still disabled: the migration errors, the server goes ERROR.
    let (s, _) = env
        .call(
            "POST",
            &format!("/servers/{}/action", ids[0]),
            "2.53",
            Some(json!({"evacuate": {"host": "ha-1"}})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    // An injected failure on a good target.
    env.sim.fail_next_evacuations(1);
    let (s, _) = env
        .call(
            "POST",
            &format!("/servers/{}/action", ids[1]),
            "2.53",
            Some(json!({"evacuate": {"host": "compute-2"}})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    env.sim.advance_clock(Duration::from_secs(2));
    for id in &ids[..2] {
        let s = env.server(id, "2.53").await;
        assert_eq!(s["status"], "ERROR");
        assert_eq!(s["OS-EXT-SRV-ATTR:host"], "compute-1");
    }
    let (_, m) = env.call("GET", "/os-migrations", "2.53", None).await;
    assert!(
        m["migrations"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["status"] == "error")
    );
}

#[tokio::test]
async fn servers_detail_pages_with_next_links() {
    let env = start(SimConfig {
        hosts: 3,
        instances_per_host: 4,
        ..small()
    })
    .await;
    let mut seen = Vec::new();
    let mut url = format!(
        "{}/servers/detail?all_tenants=1&limit=5",
        env.sim.nova_url()
    );
    let mut pages = 0;
    loop {
        pages += 1;
        let v: Value = env
            .http
            .get(&url)
            .header("X-Auth-Token", &env.token)
            .header("OpenStack-API-Version", "compute 2.53")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for s in v["servers"].as_array().unwrap() {
            seen.push(s["id"].as_str().unwrap().to_owned());
        }
        match v.get("servers_links") {
            Some(l) => {
                assert_eq!(l[0]["rel"], "next");
                url = l[0]["href"].as_str().unwrap().to_owned();
                assert!(
                    url.contains("all_tenants=1")
                        && url.contains("limit=5")
                        && url.contains("marker=")
                );
            }
            None => break,
        }
    }
    assert_eq!(seen.len(), 12);
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 12, "no server twice");
    assert_eq!(pages, 3, "5 + 5 + 2");
    // A full last page gets a next link that leads to an empty page (as Nova).
    let (_, v) = env
        .call(
            "GET",
            "/servers/detail?all_tenants=1&limit=12",
            "2.53",
            None,
        )
        .await;
    assert!(v["servers_links"].is_array());
    let (s, v) = env
        .call("GET", "/servers/detail?marker=not-a-server", "2.53", None)
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        v["badRequest"]["message"]
            .as_str()
            .unwrap()
            .contains("marker")
    );
    // Without all_tenants only the admin project's servers (none) show.
    let (_, v) = env.call("GET", "/servers/detail", "2.53", None).await;
    assert_eq!(v["servers"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn bad_and_expired_tokens_get_401_and_token_bodies_carry_a_catalog() {
    let env = start(small()).await;
    let r = env
        .http
        .post(format!("{}/auth/tokens", env.sim.keystone_url()))
        .json(
            &json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {
            "name": "admin", "domain": {"name": "Default"}, "password": "nope"}}}}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], 401);
    let creds = env.sim.credentials();
    let r = env
        .http
        .post(format!("{}/auth/tokens", env.sim.keystone_url()))
        .json(
            &json!({"auth": {"identity": {"methods": ["application_credential"],
            "application_credential": {"id": creds.application_credential_id,
                                       "secret": creds.application_credential_secret}}}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let v: Value = r.json().await.unwrap();
    let catalog = v["token"]["catalog"].as_array().unwrap();
    let compute = catalog.iter().find(|s| s["type"] == "compute").unwrap();
    assert_eq!(compute["endpoints"].as_array().unwrap().len(), 3);
    assert_eq!(compute["endpoints"][0]["region"], "RegionOne");
    assert!(v["token"]["expires_at"].as_str().unwrap().ends_with('Z'));
    assert!(
        v["token"]["roles"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "admin")
    );

    let (s, _) = env.call("GET", "/os-services", "2.53", None).await;
    assert_eq!(s, StatusCode::OK);
    let r = env
        .http
        .post(format!("{}/sim/tokens/expire", env.sim.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let (s, v) = env.call("GET", "/os-services", "2.53", None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(v["unauthorized"]["code"], 401);
    // A short TTL: the token dies when the clock passes it.
    env.sim.set_token_ttl(Duration::from_secs(5));
    let token = login(&env.sim, &env.http).await;
    let get = |t: String| {
        let http = env.http.clone();
        let url = format!("{}/os-services", env.sim.nova_url());
        async move {
            http.get(url)
                .header("X-Auth-Token", t)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(get(token.clone()).await, StatusCode::OK);
    env.sim.advance_clock(Duration::from_secs(6));
    assert_eq!(get(token).await, StatusCode::UNAUTHORIZED);
    assert_eq!(get("garbage".to_owned()).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn keystone_users_and_role_assignments() {
    let env = start(small()).await;
    let owner = env.sim.servers()[0].user_id.clone();
    let project = env.sim.servers()[0].tenant_id.clone();
    let get = |path: String| {
        let http = env.http.clone();
        let t = env.token.clone();
        let url = format!("{}{path}", env.sim.keystone_url());
        async move {
            let r = http
                .get(url)
                .header("X-Auth-Token", t)
                .send()
                .await
                .unwrap();
            (r.status(), r.json::<Value>().await.unwrap())
        }
    };
    let (s, v) = get(format!("/users/{owner}")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        v["user"]["email"]
            .as_str()
            .unwrap()
            .ends_with("@example.org")
    );
    let (s, v) = get("/users/nobody".to_owned()).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(v["error"]["code"], 404);
    let (_, v) = get(format!(
        "/role_assignments?scope.project.id={project}&effective&include_names"
    ))
    .await;
    let list = v["role_assignments"].as_array().unwrap();
    assert!(list.iter().any(|a| a["user"]["id"] == owner.as_str()));
    assert!(
        list.iter()
            .all(|a| a["role"]["name"].is_string()
                && a["scope"]["project"]["id"] == project.as_str())
    );
    // project-1 also has a member without an e-mail address.
    let users = env.sim.users();
    assert!(users.iter().any(|u| u.email.is_none()));
}

#[tokio::test]
async fn faults_status_counted_latency_malformed_and_hang() {
    let env = start(small()).await;
    // One-shot 503 on os-services, then normal again.
    env.sim
        .add_fault(FaultRule::new("/os-services", FaultKind::Status { status: 503 }).times(1));
    let (s, v) = env.call("GET", "/os-services", "2.53", None).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(v["serviceUnavailable"]["code"], 503);
    let (s, _) = env.call("GET", "/os-services", "2.53", None).await;
    assert_eq!(s, StatusCode::OK);
    // Through the control API: 500 twice, on GET only.
    let r = env.http.post(format!("{}/sim/faults", env.sim.base_url()))
        .json(&json!({"path": "/servers/detail", "method": "GET", "kind": "status", "status": 500, "count": 2}))
        .send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    for _ in 0..2 {
        let (s, v) = env
            .call("GET", "/servers/detail?all_tenants=1", "2.53", None)
            .await;
        assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(v["computeFault"]["code"], 500);
    }
    let (s, _) = env
        .call("GET", "/servers/detail?all_tenants=1", "2.53", None)
        .await;
    assert_eq!(s, StatusCode::OK);
    // Malformed body.
    env.sim
        .add_fault(FaultRule::new("/os-hypervisors", FaultKind::Malformed).times(1));
    let r = env
        .http
        .get(format!("{}/os-hypervisors", env.sim.nova_url()))
        .header("X-Auth-Token", &env.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.json::<Value>().await.is_err(), "malformed body parses");
    // Latency: the answer comes, late.
    env.sim
        .add_fault(FaultRule::new("/os-migrations", FaultKind::Latency { ms: 300 }).times(1));
    let t = std::time::Instant::now();
    let (s, _) = env.call("GET", "/os-migrations", "2.53", None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(t.elapsed() >= Duration::from_millis(300));
    // Hang: the client times out.
    env.sim
        .add_fault(FaultRule::new("/auth/tokens", FaultKind::Hang).method("POST"));
    let r = env
        .http
        .post(format!("{}/auth/tokens", env.sim.keystone_url()))
        .timeout(Duration::from_millis(300))
        .json(&json!({}))
        .send()
        .await;
    assert!(r.unwrap_err().is_timeout());
    // The rate draw is seeded: 0 never fires.
    env.sim.clear_faults();
    env.sim
        .add_fault(FaultRule::new("/os-services", FaultKind::Status { status: 500 }).rate(0.0));
    let (s, _) = env.call("GET", "/os-services", "2.53", None).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn the_call_log_lists_mutating_calls_without_secrets() {
    let env = start(small()).await;
    env.sim.clear_calls();
    let sid = env.service_id("compute-2").await;
    let (s, _) = env
        .call(
            "PUT",
            &format!("/os-services/{sid}"),
            "2.53",
            Some(json!({"status": "disabled", "disabled_reason": "novaha epoch 3"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let _ = login(&env.sim, &env.http).await;
    let calls: Value = env
        .http
        .get(format!("{}/sim/calls", env.sim.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let calls = calls.as_array().unwrap();
    assert_eq!(calls.len(), 2, "GETs are not recorded: {calls:?}");
    assert_eq!(calls[0]["method"], "PUT");
    assert_eq!(calls[0]["path"], format!("/compute/v2.1/os-services/{sid}"));
    assert_eq!(calls[0]["body"]["disabled_reason"], "novaha epoch 3");
    assert!(calls[0]["time"].is_string());
    assert_eq!(
        calls[1]["body"]["auth"]["identity"]["password"]["user"]["password"],
        "***"
    );
}

#[tokio::test]
async fn pre_2_53_service_forms_and_validation() {
    let env = start(small()).await;
    let body = json!({"host": "compute-1", "binary": "nova-compute"});
    let (s, v) = env
        .call("PUT", "/os-services/disable", "2.1", Some(body.clone()))
        .await;
    assert_eq!(
        (s, v["service"]["status"].as_str()),
        (StatusCode::OK, Some("disabled"))
    );
    let (s, v) = env
        .call(
            "PUT",
            "/os-services/disable-log-reason",
            "2.1",
            Some(json!({"host": "compute-1", "binary": "nova-compute", "disabled_reason": "r"})),
        )
        .await;
    assert_eq!(
        (s, v["service"]["disabled_reason"].as_str()),
        (StatusCode::OK, Some("r"))
    );
    let (s, _) = env
        .call(
            "PUT",
            "/os-services/force-down",
            "2.10",
            Some(json!({"host": "compute-1", "binary": "nova-compute", "forced_down": true})),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "force-down needs 2.11");
    let (s, v) = env
        .call(
            "PUT",
            "/os-services/force-down",
            "2.11",
            Some(json!({"host": "compute-1", "binary": "nova-compute", "forced_down": true})),
        )
        .await;
    assert_eq!(
        (s, v["service"]["forced_down"].as_bool()),
        (StatusCode::OK, Some(true))
    );
    let (s, v) = env
        .call("PUT", "/os-services/enable", "2.11", Some(body))
        .await;
    assert_eq!(
        (s, v["service"]["status"].as_str()),
        (StatusCode::OK, Some("enabled"))
    );
    let (_, v) = env
        .call("GET", "/os-services?host=compute-1", "2.11", None)
        .await;
    assert_eq!(v["services"][0]["forced_down"], true);
    assert_eq!(v["services"][0]["disabled_reason"], Value::Null);
    // 2.53 forms: bad uuid 400, unknown 404, reason without disabled 400,
    // non-compute 400.
    let (s, _) = env
        .call(
            "PUT",
            "/os-services/disable",
            "2.53",
            Some(json!({"status": "disabled"})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = env
        .call(
            "PUT",
            "/os-services/00000000-0000-4000-8000-000000000000",
            "2.53",
            Some(json!({"status": "disabled"})),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let sid = env.service_id("compute-1").await;
    let (s, _) = env
        .call(
            "PUT",
            &format!("/os-services/{sid}"),
            "2.53",
            Some(json!({"status": "enabled", "disabled_reason": "x"})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = env
        .call(
            "PUT",
            &format!("/os-services/{sid}"),
            "2.53",
            Some(json!({})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (_, v) = env
        .call("GET", "/os-services?binary=nova-scheduler", "2.53", None)
        .await;
    let sched = v["services"][0]["id"].as_str().unwrap().to_owned();
    let (s, _) = env
        .call(
            "PUT",
            &format!("/os-services/{sched}"),
            "2.53",
            Some(json!({"forced_down": true})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = env
        .call(
            "PUT",
            &format!("/os-services/{sid}"),
            "2.53",
            Some(json!({"bogus": 1})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn lock_unlock_start_stop_and_hypervisors() {
    let env = start(small()).await;
    let id = env.server_ids_on("compute-2").await[0].clone();
    let act = |b: Value, mv: &'static str| {
        let path = format!("/servers/{id}/action");
        let env = &env;
        async move { env.call("POST", &path, mv, Some(b)).await.0 }
    };
    assert_eq!(
        act(json!({"lock": {"locked_reason": "why"}}), "2.72").await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        act(json!({"lock": {"locked_reason": "why"}}), "2.73").await,
        StatusCode::ACCEPTED
    );
    let s = env.server(&id, "2.73").await;
    assert_eq!(
        (s["locked"].as_bool(), s["locked_reason"].as_str()),
        (Some(true), Some("why"))
    );
    assert_eq!(
        act(json!({"unlock": null}), "2.73").await,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        act(json!({"os-start": null}), "2.53").await,
        StatusCode::CONFLICT
    );
    assert_eq!(
        act(json!({"os-stop": null}), "2.53").await,
        StatusCode::ACCEPTED
    );
    assert_eq!(env.server(&id, "2.53").await["status"], "SHUTOFF");
    assert_eq!(
        act(json!({"os-start": null}), "2.53").await,
        StatusCode::ACCEPTED
    );
    assert_eq!(env.server(&id, "2.53").await["status"], "ACTIVE");
    assert_eq!(
        act(json!({"reboot": {"type": "HARD"}}), "2.53").await,
        StatusCode::BAD_REQUEST
    );
    let (s, v) = env
        .call("GET", "/os-hypervisors/detail", "2.53", None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let hv = v["hypervisors"].as_array().unwrap();
    assert_eq!(hv.len(), 3);
    assert!(
        hv.iter()
            .all(|h| h["id"].is_string() && h["service"]["host"].is_string())
    );
    let (_, v) = env.call("GET", "/os-hypervisors", "2.1", None).await;
    assert!(v["hypervisors"][0]["id"].is_u64());
}

#[tokio::test]
async fn large_cloud_lists_every_page() {
    let env = start(SimConfig {
        hosts: 1000,
        instances_per_host: 20,
        ha_nodes: 10,
        ..SimConfig::default()
    })
    .await;
    let (s, v) = env
        .call("GET", "/os-services?binary=nova-compute", "2.53", None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["services"].as_array().unwrap().len(), 1010);
    let ids = env.server_ids_on("compute-777").await;
    assert_eq!(ids.len(), 20);
    let mut total = 0;
    let mut url = format!("{}/servers/detail?all_tenants=1", env.sim.nova_url());
    loop {
        let v: Value = env
            .http
            .get(&url)
            .header("X-Auth-Token", &env.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let n = v["servers"].as_array().unwrap().len();
        total += n;
        match v["servers_links"][0]["href"].as_str() {
            Some(next) => url = next.to_owned(),
            None => break,
        }
    }
    // Speed is measured by `cargo bench -p novaha-sim`, not here.
    assert_eq!(total, 20_000);
}
