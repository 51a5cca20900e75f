//! Real node processes on loopback for `cargo xtask testnet`: data directories, a genesis,
//! starting, killing and restarting `mesh-node`, and talking to each through its HTTP API.
//!
//! Every process started here is stopped when the [`Mesh`] is dropped (on success and on
//! every error path), unless it was told to keep them.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use mesh_api::client::Client;

/// One node: its directory, ports and process.
pub(crate) struct Node {
    pub(crate) index: usize,
    pub(crate) dir: PathBuf,
    pub(crate) api_port: u16,
    child: Option<Child>,
}

impl Node {
    /// A client of its API.
    pub(crate) fn client(&self) -> Client {
        Client::new(format!("127.0.0.1:{}", self.api_port)).with_timeout(Duration::from_secs(30))
    }

    /// Whether its process runs.
    pub(crate) fn running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops the process with SIGINT and waits (at most 30 s) for it to exit.
    pub(crate) fn stop(&mut self, what: &str) -> Result<ExitStatus> {
        let Some(mut c) = self.child.take() else {
            bail!("{what} is not running");
        };
        let _ = Command::new("kill")
            .args(["-INT", &c.id().to_string()])
            .status();
        for _ in 0..300 {
            if let Some(s) = c.try_wait()? {
                return Ok(s);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = c.kill();
        let _ = c.wait();
        bail!("{what} did not stop within 30 s of SIGINT (killed)")
    }

    /// Starts `c` with its stderr appended to `log` in its directory.
    fn spawn(&mut self, mut c: Command, log: &str, what: &str) -> Result<()> {
        let log_path = self.dir.join(log);
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        c.env("MESH_LOG", "info").stdout(Stdio::null()).stderr(file);
        self.child = Some(c.spawn().with_context(|| format!("starting {what}"))?);
        Ok(())
    }

    /// The last lines of its log file `log`, for error messages.
    pub(crate) fn log_tail(&self, log: &str, lines: usize) -> String {
        let text = fs::read_to_string(self.dir.join(log)).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Kills the process with SIGKILL and reaps it.
    pub(crate) fn kill9(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            c.kill().context("sending SIGKILL")?;
            c.wait().context("reaping")?;
        }
        Ok(())
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A mesh of node processes.
pub(crate) struct Mesh {
    bin: PathBuf,
    genesis: PathBuf,
    pub(crate) nodes: Vec<Node>,
    /// The `mesh-coordinator` binary and process (an observer of the genesis).
    coordinator_bin: PathBuf,
    pub(crate) coordinator: Node,
    /// `MESH_ALERT_WEBHOOK` given to every node started from now on.
    pub(crate) alert_webhook: Option<String>,
    /// `MESH_DATASETS` given to every node started from now on.
    pub(crate) datasets: Option<PathBuf>,
    keep: bool,
}

/// Free loopback TCP ports (bound, then released).
fn free_ports(n: usize) -> Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .context("finding free loopback ports")?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

/// `mesh-node` with none of the caller's `MESH_*` variables.
fn command(bin: &Path) -> Command {
    let mut c = Command::new(bin);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("MESH_") {
            c.env_remove(k);
        }
    }
    c.stdin(Stdio::null());
    c
}

fn run_quiet(mut c: Command, what: &str) -> Result<()> {
    let out = c.output().with_context(|| format!("starting {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Mesh {
    /// Creates `n` validator data directories and a coordinator's under `root` (initialized
    /// identities listening on loopback ports, each with a fixed API port) and their genesis
    /// (the coordinator in it with weight 0).
    pub(crate) fn create(
        bin: &Path,
        coordinator_bin: &Path,
        root: &Path,
        n: usize,
    ) -> Result<Self> {
        let p2p = free_ports(n + 1)?;
        let api = free_ports(n + 1)?;
        let mut nodes = Vec::with_capacity(n);
        for i in 0..n {
            let dir = root.join(format!("node{i}"));
            let mut c = command(bin);
            c.arg("init")
                .arg("--data-dir")
                .arg(&dir)
                .args(["--no-mdns", "--listen"])
                .arg(format!("/ip4/127.0.0.1/tcp/{}", p2p[i]))
                .arg("--api")
                .arg(format!("127.0.0.1:{}", api[i]));
            run_quiet(c, &format!("mesh-node init (node {i})"))?;
            nodes.push(Node {
                index: i,
                dir,
                api_port: api[i],
                child: None,
            });
        }
        let coordinator = Node {
            index: n,
            dir: root.join("coordinator"),
            api_port: api[n],
            child: None,
        };
        let mut c = command(coordinator_bin);
        c.arg("init")
            .arg("--data-dir")
            .arg(&coordinator.dir)
            .args(["--no-mdns", "--listen"])
            .arg(format!("/ip4/127.0.0.1/tcp/{}", p2p[n]))
            .arg("--api")
            .arg(format!("127.0.0.1:{}", api[n]));
        run_quiet(c, "mesh-coordinator init")?;
        let genesis = root.join("genesis.json");
        let mut c = command(bin);
        c.arg("genesis").arg("--out").arg(&genesis);
        c.arg("--observer").arg(&coordinator.dir);
        for node in &nodes {
            c.arg(&node.dir);
        }
        run_quiet(c, "mesh-node genesis")?;
        Ok(Self {
            bin: bin.to_owned(),
            genesis,
            nodes,
            coordinator_bin: coordinator_bin.to_owned(),
            coordinator,
            alert_webhook: None,
            datasets: None,
            keep: false,
        })
    }

    /// Starts node `i` (its log goes to `node.log` in its directory, appended).
    pub(crate) fn start(&mut self, i: usize) -> Result<()> {
        let node = &mut self.nodes[i];
        let mut c = command(&self.bin);
        c.arg("run")
            .arg("--data-dir")
            .arg(&node.dir)
            .arg("--genesis")
            .arg(&self.genesis);
        if let Some(w) = &self.alert_webhook {
            c.env("MESH_ALERT_WEBHOOK", w);
        }
        if let Some(d) = &self.datasets {
            c.env("MESH_DATASETS", d);
        }
        node.spawn(c, "node.log", &format!("node {i}"))
    }

    /// Starts the coordinator (its log goes to `node.log` in its directory).
    pub(crate) fn start_coordinator(&mut self) -> Result<()> {
        let mut c = command(&self.coordinator_bin);
        c.arg("run")
            .arg("--data-dir")
            .arg(&self.coordinator.dir)
            .arg("--genesis")
            .arg(&self.genesis);
        self.coordinator.spawn(c, "node.log", "the coordinator")
    }

    /// Kills node `i` with SIGKILL (no chance to clean up) and reaps it.
    pub(crate) fn kill9(&mut self, i: usize) -> Result<()> {
        self.nodes[i]
            .kill9()
            .with_context(|| format!("killing node {i}"))
    }

    /// Stops node `i` with SIGINT and waits (at most 30 s) for it to exit.
    pub(crate) fn stop(&mut self, i: usize) -> Result<ExitStatus> {
        self.nodes[i].stop(&format!("node {i}"))
    }

    /// Leaves the processes running when the mesh is dropped.
    pub(crate) fn keep(&mut self) {
        self.keep = true;
    }

    /// The last lines of node `i`'s log, for error messages.
    pub(crate) fn log_tail(&self, i: usize, lines: usize) -> String {
        self.nodes[i].log_tail("node.log", lines)
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        if !self.keep {
            self.nodes.iter_mut().for_each(Node::kill);
            self.coordinator.kill();
        }
    }
}

/// Agent processes (`mesh-agent`), each joined through a node of the mesh.
pub(crate) struct Agents {
    bin: PathBuf,
    pub(crate) agents: Vec<Node>,
    /// The node multiaddress each agent joins through.
    homes: Vec<String>,
    pub(crate) names: Vec<String>,
    keep: bool,
}

impl Agents {
    /// Creates a data directory under `root` per name (an identity listening on a fixed
    /// loopback port, a fixed API port), to join through the node at `homes[i]`.
    pub(crate) fn create(
        bin: &Path,
        root: &Path,
        names: &[&str],
        homes: Vec<String>,
    ) -> Result<Self> {
        let p2p = free_ports(names.len())?;
        let api = free_ports(names.len())?;
        let mut agents = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let dir = root.join(name);
            let mut c = command(bin);
            c.arg("init")
                .arg("--data-dir")
                .arg(&dir)
                .arg("--listen")
                .arg(format!("/ip4/127.0.0.1/tcp/{}", p2p[i]))
                .arg("--api")
                .arg(format!("127.0.0.1:{}", api[i]));
            run_quiet(c, &format!("mesh-agent init ({name})"))?;
            agents.push(Node {
                index: i,
                dir,
                api_port: api[i],
                child: None,
            });
        }
        Ok(Self {
            bin: bin.to_owned(),
            agents,
            homes,
            names: names.iter().map(|n| (*n).to_owned()).collect(),
            keep: false,
        })
    }

    /// Starts agent `i` (its log goes to `agent.log` in its directory).
    pub(crate) fn start(&mut self, i: usize) -> Result<()> {
        let mut c = command(&self.bin);
        c.arg("run")
            .arg("--data-dir")
            .arg(&self.agents[i].dir)
            .arg("--bootstrap")
            .arg(&self.homes[i])
            .arg("--name")
            .arg(&self.names[i]);
        let what = format!("agent {}", self.names[i]);
        self.agents[i].spawn(c, "agent.log", &what)
    }

    /// Stops agent `i` with SIGINT.
    pub(crate) fn stop(&mut self, i: usize) -> Result<ExitStatus> {
        let what = format!("agent {}", self.names[i]);
        self.agents[i].stop(&what)
    }

    /// Leaves the processes running when dropped.
    pub(crate) fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for Agents {
    fn drop(&mut self) {
        if !self.keep {
            self.agents.iter_mut().for_each(Node::kill);
        }
    }
}
