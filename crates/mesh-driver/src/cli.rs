//! The command line of `mesh-node` and `mesh-coordinator` (feature `cli`): both binaries are
//! one call to [`main`] with their [`Role`].
//!
//! `mesh-coordinator` is a node in the coordinator role: the same commands, and its node
//! serves as a circuit relay and announces its addresses, so agents and nodes join through
//! it; listed in a genesis with weight 0 (`mesh-node genesis --observer`), it follows the
//! ledger as a learner and keeps the agent registry, forwarding registrations to the
//! primary.
//!
//! - `mesh-node init`: a data directory with a new identity, `node.json` and `mesh.toml`;
//! - `mesh-node [run]`: runs the node until Ctrl-C (SIGINT) or SIGTERM (a missing or empty
//!   data directory is initialized first, so `mesh-node` alone starts a peer on defaults);
//! - `mesh-node genesis --out genesis.json <data-dir|node.json>...`: a genesis of those nodes;
//! - `mesh-node status` and `mesh-node submit TEXT`: ask a running node through its HTTP API
//!   (found in the data directory's `api.addr`, or given with `--api-url`).
//!
//! Settings: defaults < `mesh.toml` (or `--config`) < `MESH_*` environment < flags (given
//! before or after `init`/`run`; after wins). Errors print as one line on stderr, with exit
//! code 1 (2 for bad usage).

#![allow(clippy::print_stdout, clippy::print_stderr)] // a command-line tool reports on stdout

use std::path::PathBuf;
use std::process::ExitCode;

use crate::node::{self, Multiaddr, Overrides, genesis};
use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Which binary runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `mesh-node`: a peer (a validator when its genesis lists it).
    Node,
    /// `mesh-coordinator`: a node in the coordinator role.
    Coordinator,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Self::Node => "mesh-node",
            Self::Coordinator => "mesh-coordinator",
        }
    }
}

/// An agentmesh peer (`mesh-node`), or a node in the coordinator role (`mesh-coordinator`):
/// bootstrap point and relay, agent registry, API gateway.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Settings of `run`, the default command.
    #[command(flatten)]
    node: NodeArgs,
}

/// The node's settings on the command line (they override `MESH_*` and the file).
#[derive(Args, Default)]
struct NodeArgs {
    /// The data directory [env: MESH_DATA_DIR] [default: ./mesh-data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The configuration file, instead of mesh.toml in the data directory [env: MESH_CONFIG].
    #[arg(long)]
    config: Option<PathBuf>,
    /// A multiaddress to listen on (repeatable) [env: MESH_LISTEN, comma-separated].
    #[arg(long)]
    listen: Vec<Multiaddr>,
    /// A peer to join through, /…/p2p/PEER-ID (repeatable) [env: MESH_BOOTSTRAP].
    #[arg(long)]
    bootstrap: Vec<Multiaddr>,
    /// Do not discover peers by mDNS [env: MESH_MDNS=false].
    #[arg(long)]
    no_mdns: bool,
    /// The genesis file [env: MESH_GENESIS].
    #[arg(long)]
    genesis: Option<PathBuf>,
    /// The log filter, e.g. `info` or `warn,mesh_driver=debug` [env: MESH_LOG].
    #[arg(long)]
    log: Option<String>,
    /// The HTTP API's address, `ip:port` or `off` [env: MESH_API] [default: 127.0.0.1:0].
    #[arg(long)]
    api: Option<String>,
}

impl NodeArgs {
    /// Whether any setting was given.
    fn any(&self) -> bool {
        self.data_dir.is_some()
            || self.config.is_some()
            || !self.listen.is_empty()
            || !self.bootstrap.is_empty()
            || self.no_mdns
            || self.genesis.is_some()
            || self.log.is_some()
            || self.api.is_some()
    }

    /// These settings, with `more` (given after the subcommand) taking precedence.
    fn merge(self, more: Self) -> Overrides {
        let list = |a: Vec<Multiaddr>, b: Vec<Multiaddr>| if b.is_empty() { a } else { b };
        Overrides {
            data_dir: more.data_dir.or(self.data_dir),
            config: more.config.or(self.config),
            listen: list(self.listen, more.listen),
            bootstrap: list(self.bootstrap, more.bootstrap),
            mdns: (self.no_mdns || more.no_mdns).then_some(false),
            genesis: more.genesis.or(self.genesis),
            log: more.log.or(self.log),
            api: more.api.or(self.api),
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Creates the data directory: identity.json (sealed by MESH_PASSPHRASE, or else by a
    /// generated passphrase in the key file `passphrase`), node.json and mesh.toml.
    Init(NodeArgs),
    /// Runs the node until Ctrl-C or SIGTERM (the default command).
    Run(NodeArgs),
    /// Writes a genesis of the given nodes (data directories or node.json files).
    Genesis {
        /// Where to write it (an existing file is not replaced).
        #[arg(long)]
        out: PathBuf,
        /// A node that follows the ledger without voting (weight 0), such as a coordinator
        /// (repeatable; listed after the validators).
        #[arg(long = "observer")]
        observers: Vec<PathBuf>,
        /// The validators, in order.
        #[arg(required = true)]
        nodes: Vec<PathBuf>,
    },
    /// Prints a running node's status (JSON) from its HTTP API.
    Status(ClientArgs),
    /// Submits TEXT to consensus through a running node's HTTP API and prints the receipt
    /// once it has executed.
    Submit {
        #[command(flatten)]
        client: ClientArgs,
        /// The request's payload.
        text: String,
    },
}

/// Which node to ask.
#[derive(Args)]
struct ClientArgs {
    /// The data directory of the running node (its `api.addr` names the API) [env:
    /// MESH_DATA_DIR] [default: ./mesh-data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The API's address instead, `host:port` (the token comes from MESH_API_TOKEN).
    #[arg(long)]
    api_url: Option<String>,
}

impl ClientArgs {
    fn client(self) -> anyhow::Result<mesh_api::client::Client> {
        Ok(node::api_client(
            self.data_dir,
            self.api_url,
            node::config::DEFAULT_DATA_DIR,
        )?)
    }
}

/// Parses the command line and runs the command; the whole `main` of `mesh-node` and
/// `mesh-coordinator`. Errors print as one line on stderr, exit code 1 (2 for bad usage).
pub fn main(role: Role) -> ExitCode {
    use clap::{CommandFactory as _, FromArgMatches as _};
    let matches = Cli::command()
        .name(role.name())
        .bin_name(role.name())
        .get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    match main_result(cli, role) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}: {e:#}", role.name());
            ExitCode::FAILURE
        }
    }
}

fn main_result(cli: Cli, role: Role) -> anyhow::Result<()> {
    let (init, args) = match cli.command {
        Some(Command::Genesis {
            out,
            observers,
            nodes,
        }) => {
            if cli.node.any() {
                anyhow::bail!("node settings go with `init` or `run`, not `genesis`");
            }
            return write_genesis(&out, &nodes, &observers);
        }
        Some(Command::Status(mut c)) => {
            c.data_dir = c.data_dir.or(cli.node.data_dir);
            let status = c.client()?.status()?;
            println!("{}", serde_json::to_string_pretty(&status)?);
            return Ok(());
        }
        Some(Command::Submit { mut client, text }) => {
            client.data_dir = client.data_dir.or(cli.node.data_dir);
            let receipt = client.client()?.submit_text(&text)?;
            println!("{}", serde_json::to_string_pretty(&receipt)?);
            return Ok(());
        }
        Some(Command::Init(args)) => (true, args),
        Some(Command::Run(args)) => (false, args),
        None => (false, NodeArgs::default()),
    };
    let flags = cli.node.merge(args);
    let mut config = node::Config::from_process(&flags).context("reading the configuration")?;
    config.coordinator = role == Role::Coordinator;
    if init {
        let done = node::init(&config)
            .with_context(|| format!("initializing {}", config.data_dir.display()))?;
        println!("initialized {}", config.data_dir.display());
        println!("did      {}", done.public.did);
        println!("peer id  {}", done.public.peer_id);
        if done.key_file {
            println!(
                "the identity is sealed by a generated passphrase in {}",
                config.key_file_path().display()
            );
        }
        return Ok(());
    }
    if node::is_fresh(&config) {
        // A node starts on defaults alone: a fresh data directory gets its identity now.
        let done = node::init(&config)
            .with_context(|| format!("initializing {}", config.data_dir.display()))?;
        eprintln!(
            "{}: new identity {} in {}",
            role.name(),
            done.public.did,
            config.data_dir.display()
        );
    }
    let filter: tracing_subscriber::filter::Targets =
        config.log.parse().context("parsing the log filter")?;
    tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .try_init()
        .context("installing the logger")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building the runtime")?;
    let dir = config.data_dir.clone();
    runtime
        .block_on(node::run(config, shutdown_signal()))
        .with_context(|| format!("node in {}", dir.display()))
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

fn write_genesis(
    out: &std::path::Path,
    nodes: &[PathBuf],
    observers: &[PathBuf],
) -> anyhow::Result<()> {
    let load = |list: &[PathBuf]| {
        list.iter()
            .map(|n| {
                genesis::PublicInfo::load(n).with_context(|| format!("reading {}", n.display()))
            })
            .collect::<anyhow::Result<Vec<_>>>()
    };
    let file = genesis::build_with(
        &load(nodes)?,
        &load(observers)?,
        genesis::Settings::default(),
    )?;
    file.save(out)?;
    println!(
        "genesis of {} validators{} written to {}",
        nodes.len(),
        if observers.is_empty() {
            String::new()
        } else {
            format!(" and {} observers", observers.len())
        },
        out.display()
    );
    Ok(())
}
