//! The command line (fixed: operators and scripts depend on it; docs/cli.md):
//! `run`, `check-config`, `status`, `pause`, `resume`, `incidents`,
//! `incident show`, `node register|reset|maintenance`, `ha-node register`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// novaha: high availability for OpenStack compute nodes. Two copies run;
/// the one holding the Consul lock fences failed nodes and evacuates them.
#[derive(Debug, Parser)]
#[command(name = "novaha", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The config file argument every subcommand takes.
#[derive(Debug, Args)]
pub struct ConfigArg {
    /// The TOML config file.
    #[arg(
        short = 'c',
        long = "config",
        value_name = "FILE",
        env = "NOVAHA_CONFIG",
        default_value = "/etc/novaha/novaha.toml"
    )]
    pub path: PathBuf,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: race for the leader lock, act while holding it.
    Run {
        /// The config file.
        #[command(flatten)]
        config: ConfigArg,
        /// Run one leader cycle under the lock and exit (fails naming the
        /// holder if another process holds the lock).
        #[arg(long)]
        once: bool,
    },
    /// Validate the config file, Consul (reachable, the token may write
    /// the prefix) and OpenStack (authenticates, catalog, microversion, the
    /// role may read services and list every project's servers); print
    /// every problem; exit non-zero on any.
    CheckConfig {
        /// The config file.
        #[command(flatten)]
        config: ConfigArg,
        /// Also read every compute node's power once through its BMC (read
        /// only, never switched).
        #[arg(long)]
        bmc: bool,
    },
    /// Show the leader, every compute node and every HA node.
    Status {
        /// The config file.
        #[command(flatten)]
        config: ConfigArg,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Pause the whole cluster: no new fence, force-down or evacuation
    /// starts anywhere (detection and the tracking of evacuations already
    /// in flight go on). Recorded with who, when, why and until when.
    Pause {
        /// The config file.
        #[command(flatten)]
        config: ConfigArg,
        /// Why (recorded, shown by `status`).
        #[arg(long)]
        reason: String,
        /// End the pause by itself after this long ("30m", "2h"); default:
        /// until `novaha resume`.
        #[arg(long = "for", value_name = "DURATION", value_parser = humantime::parse_duration)]
        for_: Option<Duration>,
        /// Who pauses (recorded); default: $SUDO_USER, $USER or the uid.
        #[arg(long)]
        by: Option<String>,
    },
    /// End a pause: recovery acts again.
    Resume {
        /// The config file.
        #[command(flatten)]
        config: ConfigArg,
        /// Who resumes (logged); default: $SUDO_USER, $USER or the uid.
        #[arg(long)]
        by: Option<String>,
    },
    /// List past incidents (finished recoveries) and the ones in progress,
    /// newest first.
    Incidents {
        /// Only this compute node's.
        node: Option<String>,
        /// The config file.
        #[command(flatten)]
        config: ConfigArg,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Read one incident.
    Incident {
        /// The incident subcommand.
        #[command(subcommand)]
        command: IncidentCommand,
    },
    /// Manage compute nodes in the K/V tree.
    Node {
        /// The node subcommand.
        #[command(subcommand)]
        command: NodeCommand,
    },
    /// Manage HA (spare) nodes in the K/V tree.
    HaNode {
        /// The HA node subcommand.
        #[command(subcommand)]
        command: HaNodeCommand,
    },
}

/// BMC drivers a node can be registered with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BmcDriver {
    /// IPMI LAN (ipmitool lanplus).
    Ipmi,
    /// Redfish.
    Redfish,
    /// libvirt (virsh).
    Libvirt,
}

impl BmcDriver {
    /// The name stored in `config/bmc/driver`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ipmi => "ipmi",
            Self::Redfish => "redfish",
            Self::Libvirt => "libvirt",
        }
    }
}

/// `novaha node ...`.
#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Seed a compute node: status flags where absent (never overwritten)
    /// and its BMC settings.
    Register {
        /// The node's host name as Nova spells it.
        node: String,
        /// The config file.
        #[command(flatten)]
        config: ConfigArg,
        /// The fence driver for this node (`config/bmc/driver`).
        #[arg(long, value_enum)]
        bmc_driver: Option<BmcDriver>,
        /// The BMC address (`config/bmc/ip`).
        #[arg(long)]
        bmc_ip: Option<String>,
        /// The BMC port (`config/bmc/port`).
        #[arg(long)]
        bmc_port: Option<u16>,
        /// The BMC user (`config/bmc/user`).
        #[arg(long)]
        bmc_user: Option<String>,
        /// A file whose first line is the BMC password (`config/bmc/password`);
        /// never given on the command line.
        #[arg(long, value_name = "FILE")]
        bmc_password_file: Option<PathBuf>,
    },
    /// The administrator's reset after repair: failed=False and
    /// recovered=False, recorded with who and when.
    Reset {
        /// The node's host name.
        node: String,
        /// The config file.
        #[command(flatten)]
        config: ConfigArg,
        /// Who resets (recorded); default: $SUDO_USER, $USER or the uid.
        #[arg(long)]
        by: Option<String>,
    },
    /// Put a node in maintenance (novaha never claims, fences, forces
    /// down or evacuates it; detection skips it) or take it out.
    Maintenance {
        /// The node's host name.
        node: String,
        /// on: in maintenance; off: back under novaha's care.
        #[arg(value_enum)]
        state: Switch,
        /// The config file.
        #[command(flatten)]
        config: ConfigArg,
        /// Why (recorded in `config/maintenance_reason`); required for on.
        #[arg(long, required_if_eq("state", "on"))]
        reason: Option<String>,
        /// End the maintenance by itself after this long ("4h"); default:
        /// until `off`.
        #[arg(long = "for", value_name = "DURATION", value_parser = humantime::parse_duration)]
        for_: Option<Duration>,
        /// Who (recorded); default: $SUDO_USER, $USER or the uid.
        #[arg(long)]
        by: Option<String>,
    },
}

/// `on` or `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    /// Switch it on.
    On,
    /// Switch it off.
    Off,
}

/// `novaha incident ...`.
#[derive(Debug, Subcommand)]
pub enum IncidentCommand {
    /// Print an incident's timeline: detected, fenced, forced down, each
    /// instance's outcome and target, notified.
    Show {
        /// The incident id (as `novaha incidents` lists it).
        id: String,
        /// The config file.
        #[command(flatten)]
        config: ConfigArg,
        /// Print the stored record as JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// `novaha ha-node ...`.
#[derive(Debug, Subcommand)]
pub enum HaNodeCommand {
    /// Register a spare host: in_use=False where absent.
    Register {
        /// The spare host's name as Nova spells it.
        node: String,
        /// The config file.
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn maintenance_on_needs_a_reason_off_does_not() {
        let on = Cli::try_parse_from(["novaha", "node", "maintenance", "c1", "on"]);
        assert!(on.expect_err("no reason").to_string().contains("--reason"));
        let off = Cli::try_parse_from(["novaha", "node", "maintenance", "c1", "off"]);
        assert!(off.is_ok(), "{off:?}");
        let pause = Cli::try_parse_from(["novaha", "pause", "--reason", "x", "--for", "90m"])
            .expect("parses");
        match pause.command {
            Command::Pause { for_, .. } => assert_eq!(for_, Some(Duration::from_secs(5400))),
            other => panic!("{other:?}"),
        }
        assert!(
            Cli::try_parse_from(["novaha", "pause", "--reason", "x", "--for", "soon"]).is_err()
        );
        assert!(
            Cli::try_parse_from(["novaha", "pause"]).is_err(),
            "a reason is required"
        );
    }

    #[test]
    fn there_is_no_password_flag() {
        let err = Cli::try_parse_from(["novaha", "node", "register", "n", "--bmc-password", "x"])
            .expect_err("no such flag");
        assert!(err.to_string().contains("--bmc-password"), "{err}");
    }
}
