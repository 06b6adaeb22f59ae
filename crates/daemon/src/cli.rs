//! The command line (DESIGN.md section 9, fixed): `run`, `check-config`,
//! `status`, `node register|reset`, `ha-node register`.

use std::path::PathBuf;

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
    /// Validate the config file and Consul reachability; print every
    /// problem; exit non-zero on any.
    CheckConfig {
        /// The config file.
        #[command(flatten)]
        config: ConfigArg,
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
    /// The local demonstration, no config needed: a real Consul, the
    /// simulator, two daemons, one compute host killed and recovered.
    Demo {
        /// Leave everything running at the end (until Ctrl-C) to explore
        /// the Consul UI.
        #[arg(long)]
        keep: bool,
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
    fn there_is_no_password_flag() {
        let err = Cli::try_parse_from(["novaha", "node", "register", "n", "--bmc-password", "x"])
            .expect_err("no such flag");
        assert!(err.to_string().contains("--bmc-password"), "{err}");
    }
}
