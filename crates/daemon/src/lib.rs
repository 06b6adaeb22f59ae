//! novaha: the daemon (library half of the `novaha` binary). It owns the command line, config loading,
//! logging, the leader loop (race for the Consul lock, act while holding
//! it, fall back to standby the moment it is lost) and graceful shutdown.
//!
//! It must never act without a live [`LeaderLease`](novaha_core::store::LeaderLease):
//! every state write as leader goes through the lease-checked store, and
//! losing the lock cancels all leader work at once. Operator commands
//! (`node register`, `node reset`, ...) write only through CAS transactions
//! and never overwrite a flag they did not mean to set.

pub mod admin;
pub mod check;
pub mod cli;
pub mod clock;
pub mod config;
pub mod connect;
pub mod credentials;
pub mod fence_health;
pub mod http;
pub mod incidents;
pub mod leader;
pub mod logging;
pub mod metrics;
pub mod recovery;
pub mod run;
pub mod stages;
pub mod status;
pub mod systemd;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command, HaNodeCommand, IncidentCommand, NodeCommand};
use crate::config::Config;

/// Exit code for a config that cannot be used (also: another live daemon
/// uses this `[election] id` on the same agent). systemd does not restart it.
pub(crate) const EXIT_CONFIG: u8 = 2;

/// The binary's entry point: parses the command line and runs it.
pub fn main_entry() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("novaha: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(dispatch(cli))
}

/// Loads the config, printing every problem on failure (every command's
/// and `check-config`'s one way to say so); the error is the exit code.
pub(crate) fn load(path: &std::path::Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        eprintln!(
            "novaha: config {} is invalid ({} problem(s)):",
            e.path,
            e.problems.len()
        );
        for p in &e.problems {
            eprintln!("  - {p}");
        }
        ExitCode::from(EXIT_CONFIG)
    })
}

async fn dispatch(cli: Cli) -> ExitCode {
    macro_rules! config {
        ($arg:expr) => {
            match load(&$arg.path) {
                Ok(c) => c,
                Err(code) => return code,
            }
        };
    }
    let result = match cli.command {
        Command::CheckConfig { config, bmc } => {
            logging::init_default();
            return check::check_config(&config.path, bmc).await;
        }
        Command::Run { config, once } => {
            let cfg = config!(config);
            logging::init(&cfg.log);
            run::run(cfg, once).await
        }
        Command::Status { config, json } => {
            let cfg = config!(config);
            logging::init_default();
            status::status(&cfg, json).await
        }
        Command::Node {
            command:
                NodeCommand::Register {
                    node,
                    config,
                    bmc_driver,
                    bmc_ip,
                    bmc_port,
                    bmc_user,
                    bmc_password_file,
                },
        } => {
            let cfg = config!(config);
            logging::init_default();
            let bmc = admin::BmcArgs {
                driver: bmc_driver,
                ip: bmc_ip,
                port: bmc_port,
                user: bmc_user,
                password_file: bmc_password_file,
            };
            admin::register_node(&cfg, &node, bmc).await
        }
        Command::Node {
            command: NodeCommand::Reset { node, config, by },
        } => {
            let cfg = config!(config);
            logging::init_default();
            admin::reset_node(&cfg, &node, by).await
        }
        Command::Node {
            command:
                NodeCommand::Maintenance {
                    node,
                    state,
                    config,
                    reason,
                    for_,
                    by,
                },
        } => {
            let cfg = config!(config);
            logging::init_default();
            admin::maintenance(&cfg, &node, state, reason.as_deref(), for_, by).await
        }
        Command::Pause {
            config,
            reason,
            for_,
            by,
        } => {
            let cfg = config!(config);
            logging::init_default();
            admin::pause(&cfg, &reason, for_, by).await
        }
        Command::Resume { config, by } => {
            let cfg = config!(config);
            logging::init_default();
            admin::resume(&cfg, by).await
        }
        Command::Incidents { node, config, json } => {
            let cfg = config!(config);
            logging::init_default();
            incidents::list(&cfg, node.as_deref(), json).await
        }
        Command::Incident {
            command: IncidentCommand::Show { id, config, json },
        } => {
            let cfg = config!(config);
            logging::init_default();
            incidents::show(&cfg, &id, json).await
        }
        Command::HaNode {
            command: HaNodeCommand::Register { node, config },
        } => {
            let cfg = config!(config);
            logging::init_default();
            admin::register_ha_node(&cfg, &node).await
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("novaha: {e:#}");
            ExitCode::FAILURE
        }
    }
}
