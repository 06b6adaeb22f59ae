//! A cloud for tests that only need one to exist (`check-config`, a daemon
//! that must not be blind): the Keystone + Nova simulator on its own
//! runtime, shut down when dropped.

use novaha_sim::{Sim, SimConfig, SimHandle};

use crate::daemon::OpenStackAuth;

/// The simulator serving on a free loopback port.
pub struct SimCloud {
    sim: Option<SimHandle>,
    rt: tokio::runtime::Runtime,
}

impl SimCloud {
    /// Starts the sim with its default seed (3 compute hosts, 1 spare).
    pub fn start() -> Self {
        Self::start_with(SimConfig::default())
    }

    /// Starts the sim with `config` (hosts, spares, timers, delays).
    pub fn start_with(config: SimConfig) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a tokio runtime for the sim");
        let sim = rt
            .block_on(Sim::start("127.0.0.1:0", config))
            .expect("start the sim");
        Self { sim: Some(sim), rt }
    }

    /// The running sim.
    pub fn sim(&self) -> &SimHandle {
        self.sim.as_ref().expect("the sim runs until dropped")
    }

    /// `[openstack]` for `user` / `password` in `project` (domain Default).
    pub fn section(&self, user: &str, password: &str, project: &str) -> String {
        let creds = self.sim().credentials();
        OpenStackAuth {
            auth_url: creds.auth_url,
            username: user.to_owned(),
            password: password.to_owned(),
            project_name: project.to_owned(),
        }
        .section()
    }

    /// `[openstack]` for the sim's admin.
    pub fn admin(&self) -> String {
        let creds = self.sim().credentials();
        OpenStackAuth {
            auth_url: creds.auth_url,
            username: creds.username,
            password: creds.password,
            project_name: creds.project_name,
        }
        .section()
    }

    /// The `OS_*` variables for the sim's admin (for a config with no
    /// `[openstack]`, such as the packaged one).
    pub fn os_env(&self) -> Vec<(&'static str, String)> {
        let c = self.sim().credentials();
        vec![
            ("OS_AUTH_URL", c.auth_url),
            ("OS_USERNAME", c.username),
            ("OS_PASSWORD", c.password),
            ("OS_PROJECT_NAME", c.project_name),
            ("OS_USER_DOMAIN_NAME", c.user_domain_name),
            ("OS_PROJECT_DOMAIN_NAME", c.project_domain_name),
        ]
    }
}

impl Drop for SimCloud {
    fn drop(&mut self) {
        if let Some(sim) = self.sim.take() {
            self.rt.block_on(sim.shutdown());
        }
    }
}
