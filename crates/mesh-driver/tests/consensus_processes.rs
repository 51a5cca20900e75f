//! Over real sockets: 4 replicas in separate processes on loopback commit a stream of
//! requests; killing the primary causes a view change and commits continue; a restarted
//! replica catches up by state transfer.
//!
//! Every validator is a separate OS process: the test re-executes this test binary, running
//! only [`consensus_child_process`] with environment variables naming the validator's index,
//! the key seeds of the whole set, the TCP ports and its data directory. That test does nothing
//! in a normal run. A child prints `MESH ...` lines on stdout and reads commands on stdin:
//!
//! - `SUBMIT <n> <tag>`: submits `n` requests at once through its own handle and prints
//!   `COMMITTED <seq> <view>` as each executes (`FAILED <error>` if one fails), then
//!   `DONE <tag> <committed>`;
//! - `STATUS`: prints `STATUS view=.. primary=<index> changing=.. executed=.. head=.. connected=..
//!   transferred=.. relayed=.. dropped_sends=.. failed_sends=.. refused=..`.
//!
//! It prints `READY <peer id>` once its driver runs and `VIEW <view>` when it enters a view;
//! it exits when stdin closes, and the test kills it on every path anyway (a guard's `Drop`).

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::print_stderr
)]

use std::io::{BufRead as _, Write as _};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, sync_channel};
use std::time::{Duration, Instant};

use mesh_consensus::{Keys, RequestAuth, ValidatorSet};
use mesh_crypto::bls::BlsSecretKey;
use mesh_crypto::ed25519::SigningKey;
use mesh_driver::consensus::{self, Config, Driver};
use mesh_types::NodeId;
use tokio::sync::mpsc;

/// This child's validator index; unset in a normal run.
const ENV_INDEX: &str = "AGENTMESH_DRIVER_INDEX";
/// The Ed25519/BLS key seeds of every validator, hex, comma-separated.
const ENV_SEEDS: &str = "AGENTMESH_DRIVER_SEEDS";
/// Every validator's loopback TCP port, comma-separated.
const ENV_PORTS: &str = "AGENTMESH_DRIVER_PORTS";
/// This child's data directory.
const ENV_DIR: &str = "AGENTMESH_DRIVER_DIR";
/// The name of the test a child process runs.
const CHILD_TEST: &str = "consensus_child_process";
/// Marks the machine-readable lines of a child's stdout.
const MARK: &str = "MESH ";
const VALIDATORS: usize = 4;
/// The longest any single wait of the test may take.
const WAIT: u64 = 30;

#[allow(clippy::disallowed_methods)] // a test's deadlines and timings
fn now() -> Instant {
    Instant::now()
}

// ---------------------------------------------------------------------------------------------
// The validator set, as every process derives it from the seeds.
// ---------------------------------------------------------------------------------------------

fn keys(seed: &[u8; 32]) -> Keys {
    let mut ikm = b"bls key of ".to_vec();
    ikm.extend_from_slice(seed);
    Keys {
        ed25519: SigningKey::from_seed(seed),
        bls: BlsSecretKey::from_ikm(&ikm).unwrap(),
    }
}

fn validator_set(seeds: &[[u8; 32]]) -> ValidatorSet {
    let members = seeds.iter().map(|s| keys(s).member(1)).collect();
    ValidatorSet::new(0, members).unwrap()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The child process: one validator.
// ---------------------------------------------------------------------------------------------

/// One validator of the process test when run as a child process (see the module docs); in a
/// normal test run, when `AGENTMESH_DRIVER_INDEX` is unset, it does nothing and passes.
#[test]
fn consensus_child_process() {
    let Ok(index) = std::env::var(ENV_INDEX) else {
        return;
    };
    let index: usize = index.parse().unwrap();
    let seeds: Vec<[u8; 32]> = std::env::var(ENV_SEEDS)
        .unwrap()
        .split(',')
        .map(unhex)
        .collect();
    let ports: Vec<u16> = std::env::var(ENV_PORTS)
        .unwrap()
        .split(',')
        .map(|p| p.parse().unwrap())
        .collect();
    let dir = PathBuf::from(std::env::var(ENV_DIR).unwrap());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(child(index, &seeds, &ports, dir));
}

/// Prints one machine-readable line (stdout is line-buffered, so it leaves at once).
fn say(line: impl AsRef<str>) {
    println!("{MARK}{}", line.as_ref().replace('\n', " "));
}

fn addr(port: u16, seed: &[u8; 32]) -> mesh_transport::Multiaddr {
    let node = NodeId(SigningKey::from_seed(seed).verifying_key().to_bytes());
    let peer = consensus::peer_id(&node).unwrap();
    format!("/ip4/127.0.0.1/tcp/{port}/p2p/{peer}")
        .parse()
        .unwrap()
}

async fn child(index: usize, seeds: &[[u8; 32]], ports: &[u16], dir: PathBuf) {
    let set = validator_set(seeds);
    let mut config = Config::new(dir, set.clone(), keys(&seeds[index]));
    config.consensus.request_auth = RequestAuth::Connection;
    config.consensus.request_timeout = Duration::from_secs(1);
    config.consensus.view_change_timeout = Duration::from_secs(1);
    config.consensus.retransmit_interval = Duration::from_millis(200);
    config.consensus.checkpoint_interval = 4;
    config.consensus.window = 16;
    config.transport.listen = vec![
        format!("/ip4/127.0.0.1/tcp/{}", ports[index])
            .parse()
            .unwrap(),
    ];
    config.transport.mdns = false;
    config.transport.request_timeout = Duration::from_secs(5);
    config.peers = (0..seeds.len())
        .filter(|&j| j != index)
        .map(|j| addr(ports[j], &seeds[j]))
        .collect();
    config.redial_interval = Duration::from_millis(500);
    config.relay_after = Duration::from_millis(500);
    let (handle, join) = Driver::start(config).unwrap();
    say(format!("READY {}", handle.peer_id()));

    // Commands arrive on stdin; a closed stdin (the test went away) ends the validator.
    let (tx, mut commands) = mpsc::channel::<String>(16);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    let mut status = handle.watch_status();
    let mut view = status.borrow().view;
    loop {
        tokio::select! {
            changed = status.changed() => {
                if changed.is_err() {
                    break;
                }
                let s = status.borrow_and_update().clone();
                if s.view != view && !s.changing_view {
                    view = s.view;
                    say(format!("VIEW {view}"));
                }
            }
            command = commands.recv() => match command {
                Some(line) => child_command(&handle, &set, &line),
                None => break,
            },
        }
    }
    handle.shutdown();
    let _ = join.await;
}

fn child_command(handle: &consensus::Handle, set: &ValidatorSet, line: &str) {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        ["SUBMIT", n, tag] => {
            let n: usize = n.parse().unwrap();
            let tag = (*tag).to_owned();
            let handle = handle.clone();
            tokio::spawn(async move {
                let tasks: Vec<_> = (0..n)
                    .map(|k| {
                        let h = handle.clone();
                        let payload = format!("{tag}-{k}").into_bytes();
                        tokio::spawn(async move { h.submit(payload).await })
                    })
                    .collect();
                let mut ok = 0;
                for t in tasks {
                    match t.await {
                        Ok(Ok(c)) => {
                            ok += 1;
                            say(format!("COMMITTED {} {}", c.seq, c.view));
                        }
                        Ok(Err(e)) => say(format!("FAILED {e}")),
                        Err(e) => say(format!("FAILED {e}")),
                    }
                }
                say(format!("DONE {tag} {ok}"));
            });
        }
        ["STATUS"] => {
            let s = handle.status();
            say(format!(
                "STATUS view={} primary={} changing={} executed={} head={} connected={} \
                 transferred={} relayed={} dropped_sends={} failed_sends={} refused={}",
                s.view,
                set.index_of(&s.primary).map_or(-1, |i| i as i64),
                u8::from(s.changing_view),
                s.executed,
                s.head,
                s.connected,
                s.consensus.transferred,
                s.driver.relayed,
                s.driver.dropped_sends,
                s.driver.failed_sends,
                s.driver.refused_messages,
            ));
        }
        _ => say(format!("BAD_COMMAND {line}")),
    }
}

// ---------------------------------------------------------------------------------------------
// The test: processes, and what they must show.
// ---------------------------------------------------------------------------------------------

/// A child process and what it printed. Dropping it kills the process and waits for it.
struct Proc {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    rx: Receiver<String>,
    /// Every machine-readable line so far, without the mark.
    lines: Vec<String>,
    /// When each line arrived.
    arrived: Vec<Instant>,
    exited: bool,
}

impl Proc {
    fn spawn(index: usize, seeds: &str, ports: &str, dir: &std::path::Path) -> Self {
        let name = format!("v{index}");
        let exe = std::env::current_exe().unwrap();
        let mut child = Command::new(exe)
            .args([
                CHILD_TEST,
                "--exact",
                "--nocapture",
                "--test-threads=1",
                "-q",
            ])
            .env(ENV_INDEX, index.to_string())
            .env(ENV_SEEDS, seeds)
            .env(ENV_PORTS, ports)
            .env(ENV_DIR, dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let stdout = child.stdout.take().unwrap();
        let stdin = child.stdin.take();
        let (tx, rx) = sync_channel(65_536);
        let tag = name.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let Some(at) = line.find(MARK) else {
                    continue;
                };
                let line = line[at + MARK.len()..].to_owned();
                if !line.starts_with("COMMITTED") {
                    eprintln!("[{tag}] {line}");
                }
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            name,
            child,
            stdin,
            rx,
            lines: Vec::new(),
            arrived: Vec::new(),
            exited: false,
        }
    }

    /// Receives lines for up to `wait` (returning early once something arrived).
    fn pump(&mut self, wait: Duration) {
        if self.exited {
            std::thread::sleep(wait);
            return;
        }
        match self.rx.recv_timeout(wait) {
            Ok(line) => {
                self.lines.push(line);
                self.arrived.push(now());
            }
            Err(RecvTimeoutError::Timeout) => return,
            Err(RecvTimeoutError::Disconnected) => {
                self.exited = true;
                return;
            }
        }
        while let Ok(line) = self.rx.try_recv() {
            self.lines.push(line);
            self.arrived.push(now());
        }
    }

    /// Waits up to `secs` for a line at or after index `from` matching `pred`; fails the test
    /// with this process's last lines if none comes.
    fn wait_from(
        &mut self,
        from: usize,
        secs: u64,
        what: &str,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = now() + Duration::from_secs(secs);
        let mut checked = from;
        loop {
            if let Some(l) = self
                .lines
                .get(checked..)
                .and_then(|ls| ls.iter().find(|l| pred(l)))
            {
                return l.clone();
            }
            checked = checked.max(self.lines.len());
            let left = deadline.saturating_duration_since(now());
            if left.is_zero() || self.exited {
                let why = if self.exited {
                    "it exited"
                } else {
                    "timed out"
                };
                let tail = self.lines.len().saturating_sub(30);
                panic!(
                    "{}: waited {secs}s for {what}, {why}; its last lines:\n  {}",
                    self.name,
                    self.lines[tail..].join("\n  ")
                );
            }
            self.pump(left.min(Duration::from_millis(100)));
        }
    }

    /// When the first line at or after index `from` matching `pred` arrived.
    fn arrival(&self, from: usize, pred: impl Fn(&str) -> bool) -> Option<Instant> {
        (from..self.lines.len())
            .find(|&i| pred(&self.lines[i]))
            .map(|i| self.arrived[i])
    }

    fn send(&mut self, command: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{command}")
            .unwrap_or_else(|e| panic!("{}: cannot send {command:?}: {e}", self.name));
    }

    fn status(&mut self) -> NodeStatus {
        let mark = self.lines.len();
        self.send("STATUS");
        let line = self.wait_from(mark, 10, "its status", |l| l.starts_with("STATUS "));
        NodeStatus::parse(&line)
    }

    /// Submits `n` requests and waits until they are all answered: their `(seq, view)`.
    fn submit(&mut self, n: usize, tag: &str) -> Vec<(u64, u64)> {
        let mark = self.lines.len();
        self.send(&format!("SUBMIT {n} {tag}"));
        let done_prefix = format!("DONE {tag} ");
        let done = self.wait_from(
            mark,
            WAIT,
            &format!("{n} requests {tag:?} to commit"),
            |l| l.starts_with(&done_prefix),
        );
        let failed: Vec<&String> = self.lines[mark..]
            .iter()
            .filter(|l| l.starts_with("FAILED"))
            .collect();
        assert!(
            failed.is_empty(),
            "{}: submissions failed: {failed:?}",
            self.name
        );
        assert_eq!(done, format!("DONE {tag} {n}"));
        self.lines[mark..]
            .iter()
            .filter_map(|l| l.strip_prefix("COMMITTED "))
            .map(|rest| {
                let (seq, view) = rest.split_once(' ').unwrap();
                (seq.parse().unwrap(), view.parse().unwrap())
            })
            .collect()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct NodeStatus {
    view: u64,
    primary: usize,
    changing: bool,
    executed: u64,
    head: String,
    connected: usize,
    transferred: u64,
    relayed: u64,
}

impl NodeStatus {
    fn parse(line: &str) -> Self {
        let field = |name: &str| -> &str {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name).and_then(|w| w.strip_prefix('=')))
                .unwrap_or_else(|| panic!("no {name} in {line:?}"))
        };
        Self {
            view: field("view").parse().unwrap(),
            primary: field("primary").parse().unwrap(),
            changing: field("changing") == "1",
            executed: field("executed").parse().unwrap(),
            head: field("head").to_owned(),
            connected: field("connected").parse().unwrap(),
            transferred: field("transferred").parse().unwrap(),
            relayed: field("relayed").parse().unwrap(),
        }
    }
}

/// Four validators' seeds, ports and data directories; at most one process each.
struct Cluster {
    seeds: String,
    ports: String,
    dirs: Vec<PathBuf>,
    procs: Vec<Option<Proc>>,
    _root: tempfile::TempDir,
}

impl Cluster {
    fn new() -> Self {
        let seeds: Vec<String> = (0..VALIDATORS)
            .map(|i| hex(&[0xa0 + i as u8; 32]))
            .collect();
        // Free loopback ports, held until all are chosen so they differ.
        let listeners: Vec<std::net::TcpListener> = (0..VALIDATORS)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let ports: Vec<String> = listeners
            .iter()
            .map(|l| l.local_addr().unwrap().port().to_string())
            .collect();
        drop(listeners);
        let root = tempfile::tempdir().unwrap();
        let dirs = (0..VALIDATORS)
            .map(|i| root.path().join(format!("v{i}")))
            .collect();
        Self {
            seeds: seeds.join(","),
            ports: ports.join(","),
            dirs,
            procs: (0..VALIDATORS).map(|_| None).collect(),
            _root: root,
        }
    }

    fn start(&mut self, i: usize) {
        let mut p = Proc::spawn(i, &self.seeds, &self.ports, &self.dirs[i]);
        p.wait_from(0, WAIT, "READY", |l| l.starts_with("READY "));
        self.procs[i] = Some(p);
    }

    fn node(&mut self, i: usize) -> &mut Proc {
        self.procs[i].as_mut().unwrap()
    }

    /// SIGKILLs validator `i`.
    fn kill(&mut self, i: usize) {
        drop(self.procs[i].take());
    }

    /// Polls the statuses of `nodes` until `done` holds for all of them together.
    fn wait_for(
        &mut self,
        nodes: &[usize],
        what: &str,
        done: impl Fn(&[NodeStatus]) -> bool,
    ) -> Vec<NodeStatus> {
        let deadline = now() + Duration::from_secs(WAIT);
        loop {
            let statuses: Vec<NodeStatus> = nodes.iter().map(|&i| self.node(i).status()).collect();
            if done(&statuses) {
                return statuses;
            }
            assert!(
                now() < deadline,
                "waited {WAIT}s for {what}; statuses of {nodes:?}: {statuses:#?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Every status at `height` or above, all with the same height and chain head.
fn agree(statuses: &[NodeStatus], height: u64) -> bool {
    statuses.iter().all(|s| {
        s.executed >= height && s.executed == statuses[0].executed && s.head == statuses[0].head
    })
}

#[test]
fn four_processes_commit_change_view_and_catch_up() {
    let started = now();
    let elapsed = || started.elapsed().as_secs_f64();
    let mut c = Cluster::new();
    for i in 0..VALIDATORS {
        c.start(i);
    }
    eprintln!("processes: 4 validators started in {:.1}s", elapsed());

    // ---- 200 requests through a validator that is not the primary (of view 0: v0). ----
    let t = now();
    let first = c.node(1).submit(200, "a");
    assert_eq!(first.len(), 200);
    let top = first.iter().map(|&(seq, _)| seq).max().unwrap();
    let all: Vec<usize> = (0..VALIDATORS).collect();
    let s = c.wait_for(&all, "every validator to execute the first requests", |s| {
        agree(s, top) && s.iter().all(|s| !s.changing)
    });
    let (old_view, primary, killed_height) = (s[0].view, s[0].primary, s[0].executed);
    assert!(
        s.iter().all(|s| (s.view, s.primary) == (old_view, primary)),
        "{s:#?}"
    );
    eprintln!(
        "processes: 200 requests committed in {top} blocks in {:.2}s; all 4 at height \
         {killed_height} in view {old_view} ({:.1}s)",
        t.elapsed().as_secs_f64(),
        elapsed()
    );

    // ---- The primary dies; the others change view and keep committing. ----
    let survivors: Vec<usize> = all.iter().copied().filter(|&i| i != primary).collect();
    let submitter = survivors[0];
    c.kill(primary);
    let killed = now();
    let mark = c.node(submitter).lines.len();
    let second = c.node(submitter).submit(50, "b");
    let resumed = killed.elapsed().as_secs_f64();
    let new_view = c
        .node(submitter)
        .arrival(mark, |l| l.starts_with("VIEW "))
        .expect("the submitter reports the new view")
        .duration_since(killed)
        .as_secs_f64();
    assert_eq!(second.len(), 50);
    assert!(second.iter().all(|&(_, v)| v > old_view), "{second:?}");
    // More blocks while it is down, so the restarted validator misses several checkpoints.
    let mut top = second.iter().map(|&(seq, _)| seq).max().unwrap();
    for wave in 0..6 {
        let more = c.node(survivors[wave % 3]).submit(5, &format!("w{wave}"));
        top = top.max(more.iter().map(|&(seq, _)| seq).max().unwrap());
    }
    let s = c.wait_for(&survivors, "the survivors to agree in a new view", |s| {
        agree(s, top) && s.iter().all(|s| s.view > old_view && !s.changing)
    });
    let (view, height, head) = (s[0].view, s[0].executed, s[0].head.clone());
    assert!(
        s.iter().any(|s| s.relayed > 0),
        "nothing was relayed: {s:?}"
    );
    eprintln!(
        "processes: primary v{primary} killed; view {view} entered {new_view:.2}s and the first \
         50 requests committed {resumed:.2}s after the kill; survivors at height {height} ({:.1}s)",
        elapsed()
    );

    // ---- The killed validator restarts over its data directory and catches up. ----
    let restart = now();
    c.start(primary);
    let s = c.wait_for(&[primary], "the restarted validator to catch up", |s| {
        s[0].executed >= height && !s[0].changing && s[0].view >= view
    });
    let caught_up = restart.elapsed().as_secs_f64();
    assert_eq!(s[0].executed, height, "{s:?}");
    assert_eq!(s[0].head, head, "the restarted validator's ledger differs");
    assert!(
        s[0].transferred >= height - killed_height,
        "the restarted validator caught up without state transfer: {s:?}"
    );
    eprintln!(
        "processes: restarted validator caught up from height {killed_height} to {height} \
         ({} blocks by state transfer, view {}) in {caught_up:.2}s ({:.1}s)",
        s[0].transferred,
        s[0].view,
        elapsed()
    );

    // ---- It takes part again: all four execute a last round. ----
    let third = c.node(survivors[1]).submit(20, "c");
    let top = third.iter().map(|&(seq, _)| seq).max().unwrap();
    c.wait_for(&all, "all four to execute the last requests", |s| {
        agree(s, top) && s.iter().all(|s| s.connected == 3)
    });
    eprintln!("processes: done in {:.1}s", elapsed());
}
