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
}

/// A mesh of node processes.
pub(crate) struct Mesh {
    bin: PathBuf,
    genesis: PathBuf,
    pub(crate) nodes: Vec<Node>,
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
    /// Creates `n` data directories under `root` (initialized identities listening on
    /// loopback ports, each with a fixed API port) and their genesis.
    pub(crate) fn create(bin: &Path, root: &Path, n: usize) -> Result<Self> {
        let p2p = free_ports(n)?;
        let api = free_ports(n)?;
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
        let genesis = root.join("genesis.json");
        let mut c = command(bin);
        c.arg("genesis").arg("--out").arg(&genesis);
        for node in &nodes {
            c.arg(&node.dir);
        }
        run_quiet(c, "mesh-node genesis")?;
        Ok(Self {
            bin: bin.to_owned(),
            genesis,
            nodes,
            keep: false,
        })
    }

    /// Starts node `i` (its log goes to `node.log` in its directory, appended).
    pub(crate) fn start(&mut self, i: usize) -> Result<()> {
        let node = &mut self.nodes[i];
        let log_path = node.dir.join("node.log");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let mut c = command(&self.bin);
        c.arg("run")
            .arg("--data-dir")
            .arg(&node.dir)
            .arg("--genesis")
            .arg(&self.genesis)
            .env("MESH_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log);
        node.child = Some(c.spawn().with_context(|| format!("starting node {i}"))?);
        Ok(())
    }

    /// Kills node `i` with SIGKILL (no chance to clean up) and reaps it.
    pub(crate) fn kill9(&mut self, i: usize) -> Result<()> {
        if let Some(mut c) = self.nodes[i].child.take() {
            c.kill().with_context(|| format!("killing node {i}"))?;
            c.wait().with_context(|| format!("reaping node {i}"))?;
        }
        Ok(())
    }

    /// Stops node `i` with SIGINT and waits (at most 30 s) for it to exit.
    pub(crate) fn stop(&mut self, i: usize) -> Result<ExitStatus> {
        let Some(mut c) = self.nodes[i].child.take() else {
            bail!("node {i} is not running");
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
        bail!("node {i} did not stop within 30 s of SIGINT (killed)")
    }

    /// Leaves the processes running when the mesh is dropped.
    pub(crate) fn keep(&mut self) {
        self.keep = true;
    }

    /// The last lines of node `i`'s log, for error messages.
    pub(crate) fn log_tail(&self, i: usize, lines: usize) -> String {
        let text = fs::read_to_string(self.nodes[i].dir.join("node.log")).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        for node in &mut self.nodes {
            if let Some(mut c) = node.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}
