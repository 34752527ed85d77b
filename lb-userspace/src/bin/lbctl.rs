//! `lbctl`: the command-line tool of the XDP load balancer.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "lbctl",
    version,
    about = "Drive and debug the XDP load balancer"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run every packet of a pcap through the XDP program with the maps a config describes
    /// (root; nothing is attached to any interface).
    Replay {
        /// Balancer config (TOML) whose VIPs and backends fill the maps. Backends without a
        /// `mac` get 02:00 followed by the last four bytes of their address.
        #[arg(long)]
        config: PathBuf,
        /// Input capture (classic pcap, Ethernet).
        #[arg(long)]
        pcap: PathBuf,
        /// Where to write the packets the program transmitted or passed.
        #[arg(long)]
        out: Option<PathBuf>,
        /// One JSON object per packet instead of the table.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Replay {
            config,
            pcap,
            out,
            json,
        } => lb_userspace::replay::replay_file(&config, &pcap, out.as_deref(), json),
    }
}
