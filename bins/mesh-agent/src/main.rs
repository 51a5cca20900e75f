//! `mesh-agent`: an agentmesh agent. A thin main over [`mesh_driver::agent`]:
//!
//! - `mesh-agent init`: a data directory with a new identity (as `mesh-node init`);
//! - `mesh-agent [run] --bootstrap /…/p2p/<node>`: joins the mesh through that node,
//!   registers (committed through consensus) and serves its HTTP API until Ctrl-C or SIGTERM
//!   (a missing or empty data directory is initialized first);
//! - `mesh-agent send DID TEXT`: sends an end-to-end encrypted message through the running
//!   agent's API; `mesh-agent inbox`: prints the messages it received; `mesh-agent status`.
//!
//! Settings as for `mesh-node` (defaults < `mesh.toml` < `MESH_*` < flags), except that the
//! data directory defaults to `./agent-data`.

#![allow(clippy::print_stdout, clippy::print_stderr)] // a command-line tool reports on stdout

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use mesh_api::types::MessageBox;
use mesh_driver::agent::{self, AgentOptions};
use mesh_driver::node::{self, Multiaddr, Overrides};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// The agent's name when none is given.
const DEFAULT_NAME: &str = "agent";
/// The data directory when none is given.
const DEFAULT_DATA_DIR: &str = "agent-data";

/// An agentmesh agent.
#[derive(Parser)]
#[command(name = "mesh-agent", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    agent: AgentArgs,
}

/// The agent's settings on the command line.
#[derive(Args, Default)]
struct AgentArgs {
    /// The data directory [env: MESH_DATA_DIR] [default: ./agent-data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The configuration file [env: MESH_CONFIG].
    #[arg(long)]
    config: Option<PathBuf>,
    /// A multiaddress to listen on (repeatable) [env: MESH_LISTEN].
    #[arg(long)]
    listen: Vec<Multiaddr>,
    /// The node to join through, /…/p2p/PEER-ID [env: MESH_BOOTSTRAP].
    #[arg(long)]
    bootstrap: Vec<Multiaddr>,
    /// The log filter [env: MESH_LOG].
    #[arg(long)]
    log: Option<String>,
    /// The HTTP API's address, `ip:port` or `off` [env: MESH_API] [default: 127.0.0.1:0].
    #[arg(long)]
    api: Option<String>,
    /// The agent's name in its registration.
    #[arg(long, default_value = DEFAULT_NAME)]
    name: String,
    /// A capability it announces (repeatable) [default: chat].
    #[arg(long = "capability")]
    capabilities: Vec<String>,
}

impl AgentArgs {
    /// These settings, with `more` (given after the subcommand) taking precedence.
    fn merge(self, more: Self) -> Self {
        let list = |a: Vec<Multiaddr>, b: Vec<Multiaddr>| if b.is_empty() { a } else { b };
        Self {
            data_dir: more.data_dir.or(self.data_dir),
            config: more.config.or(self.config),
            listen: list(self.listen, more.listen),
            bootstrap: list(self.bootstrap, more.bootstrap),
            log: more.log.or(self.log),
            api: more.api.or(self.api),
            name: if more.name == DEFAULT_NAME {
                self.name
            } else {
                more.name
            },
            capabilities: if more.capabilities.is_empty() {
                self.capabilities
            } else {
                more.capabilities
            },
        }
    }

    fn overrides(&self) -> Overrides {
        let data_dir = self.data_dir.clone().or_else(|| {
            std::env::var_os(node::config::env::DATA_DIR)
                .is_none()
                .then(|| PathBuf::from(DEFAULT_DATA_DIR))
        });
        Overrides {
            data_dir,
            config: self.config.clone(),
            listen: self.listen.clone(),
            bootstrap: self.bootstrap.clone(),
            mdns: Some(false),
            genesis: None,
            log: self.log.clone(),
            api: self.api.clone(),
        }
    }

    fn options(&self) -> AgentOptions {
        AgentOptions {
            name: self.name.clone(),
            capabilities: if self.capabilities.is_empty() {
                vec!["chat".into()]
            } else {
                self.capabilities.clone()
            },
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Creates the data directory with a new identity.
    Init(AgentArgs),
    /// Runs the agent until Ctrl-C or SIGTERM (the default command).
    Run(AgentArgs),
    /// Sends TEXT to the agent DID through the running agent.
    Send {
        #[command(flatten)]
        client: ClientArgs,
        /// The recipient's DID.
        to: String,
        /// The message.
        text: String,
    },
    /// Prints the messages the running agent received (JSON).
    Inbox {
        #[command(flatten)]
        client: ClientArgs,
        /// From this inbox position on.
        #[arg(long, default_value_t = 0)]
        from: u64,
    },
    /// Prints the running agent's status (JSON).
    Status(ClientArgs),
}

/// Which agent to ask.
#[derive(Args)]
struct ClientArgs {
    /// The running agent's data directory [default: ./agent-data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The API's address instead, `host:port`.
    #[arg(long)]
    api_url: Option<String>,
}

impl ClientArgs {
    fn client(self, fallback: Option<PathBuf>) -> anyhow::Result<mesh_api::client::Client> {
        Ok(node::api_client(
            self.data_dir.or(fallback),
            self.api_url,
            DEFAULT_DATA_DIR,
        )?)
    }
}

fn main() -> ExitCode {
    match main_result(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mesh-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn main_result(cli: Cli) -> anyhow::Result<()> {
    let fallback = cli.agent.data_dir.clone();
    let (init, args) = match cli.command {
        Some(Command::Send { client, to, text }) => {
            let receipt = client.client(fallback)?.send_message(&to, &text)?;
            println!("{}", serde_json::to_string_pretty(&receipt)?);
            return Ok(());
        }
        Some(Command::Inbox { client, from }) => {
            let got = client
                .client(fallback)?
                .messages(MessageBox::Inbox, from, 1000)?;
            println!("{}", serde_json::to_string_pretty(&got)?);
            return Ok(());
        }
        Some(Command::Status(client)) => {
            let status = client.client(fallback)?.status()?;
            println!("{}", serde_json::to_string_pretty(&status)?);
            return Ok(());
        }
        Some(Command::Init(args)) => (true, cli.agent.merge(args)),
        Some(Command::Run(args)) => (false, cli.agent.merge(args)),
        None => (false, cli.agent),
    };
    let config =
        node::Config::from_process(&args.overrides()).context("reading the configuration")?;
    if init || node::is_fresh(&config) {
        let done = node::init(&config)
            .with_context(|| format!("initializing {}", config.data_dir.display()))?;
        eprintln!(
            "mesh-agent: identity {} in {}",
            done.public.did,
            config.data_dir.display()
        );
        if init {
            return Ok(());
        }
    }
    let filter: tracing_subscriber::filter::Targets =
        config.log.parse().context("parsing the log filter")?;
    tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .try_init()
        .context("installing the logger")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("building the runtime")?;
    let dir = config.data_dir.clone();
    runtime
        .block_on(agent::run(
            config,
            args.options(),
            mesh_driver::cli::shutdown_signal(),
        ))
        .with_context(|| format!("agent in {}", dir.display()))
}
