//! `cargo xtask testnet`: a mesh of real `mesh-node` processes on loopback, driven through
//! their HTTP APIs, then the examples.
//!
//! Scenarios:
//! - `demo` (default): N validators (default 4) from one genesis commit a stream of
//!   decisions submitted to every node; one node's WebSocket event stream is watched.
//! - `chaos`: the same, while the primary is killed with SIGKILL mid-stream (a view change
//!   follows and commits go on through the others) and restarted (it catches up by state
//!   transfer and takes submissions again).
//!
//! A `mesh-coordinator` process follows the ledger as an observer of the genesis; two
//! `mesh-agent` processes (see `agents.rs`) join through it, register through consensus, and exchange end-to-end encrypted messages (in chaos, the recipient is killed
//! and restarted halfway). Then the validators train a model together (see `federated.rs`:
//! a run committed through consensus, every global model too; in chaos a trainer is killed
//! and restarted mid-run).
//!
//! Both end by checking that every node holds the same ledger, that every acknowledged
//! decision is in it at the height its receipt named, that every node stops cleanly on
//! SIGINT, and that `mesh-ledger verify` accepts each node's ledger from the genesis on.

use std::collections::HashMap;
use std::fs;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use mesh_api::client::Client;
use mesh_api::types::{Event, Receipt};

use crate::mesh::Mesh;
use crate::util::{build_bins, cargo, now, step, target_dir};

const HELP: &str = "\
usage: cargo xtask testnet [--nodes N] [--scenario demo|chaos] [--requests R] [--messages M]
                           [--rounds F] [--keep] [--debug] [--no-examples]

Builds mesh-node, mesh-coordinator and mesh-agent, starts N validator processes on
loopback (default 4) and a coordinator (an observer of the genesis), waits for the mesh to
form, starts two agents (alice and bob, joining through the coordinator) that register
through consensus, and drives the scenario through the HTTP
APIs:
  demo   a stream of R decisions (default 1000) committed by consensus, then M end-to-end
         encrypted messages each way between the agents (default 100), then a federated run
         of F rounds (default 8; 0 skips it) of an MLP on the digits over the validators,
         every global model committed through consensus, accuracy printed per round
  chaos  the same while the primary is killed (SIGKILL) and restarted, bob is killed
         (SIGKILL) halfway through the messages and restarted, and a trainer is killed
         after the second round and restarted two rounds later
then checks the ledgers and that every message arrived exactly once, stops every process
(SIGINT), verifies each ledger with mesh-ledger, and runs the examples (in one process:
the store, agent messaging, FedAvg against centralized training on the digits).
--keep leaves the mesh running and prints its API addresses.
--debug builds the binaries in the dev profile (what `cargo xtask test` uses: no release
build); --no-examples skips the examples.";

struct Options {
    nodes: usize,
    chaos: bool,
    requests: usize,
    keep: bool,
    debug: bool,
    examples: bool,
    messages: usize,
    rounds: u64,
}

fn parse(args: &[String]) -> Result<Option<Options>> {
    let mut o = Options {
        nodes: 4,
        chaos: false,
        requests: 1000,
        keep: false,
        debug: false,
        examples: true,
        messages: 100,
        rounds: 8,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .with_context(|| format!("{name} needs a value (see --help)"))
        };
        match arg.as_str() {
            "--help" | "-h" => {
                println!("{HELP}");
                return Ok(None);
            }
            "--nodes" => {
                o.nodes = value("--nodes")?
                    .parse()
                    .context("--nodes takes a number")?;
                if !(4..=16).contains(&o.nodes) {
                    bail!("--nodes must be between 4 and 16 (PBFT needs 3f+1 >= 4)");
                }
            }
            "--requests" => {
                o.requests = value("--requests")?
                    .parse()
                    .context("--requests takes a number")?;
                if o.requests < 10 {
                    bail!("--requests must be at least 10");
                }
            }
            "--scenario" => match value("--scenario")?.as_str() {
                "demo" => o.chaos = false,
                "chaos" => o.chaos = true,
                other => bail!("unknown scenario {other:?}: demo or chaos"),
            },
            "--messages" => {
                o.messages = value("--messages")?
                    .parse()
                    .context("--messages takes a number")?;
                if o.messages < 2 {
                    bail!("--messages must be at least 2");
                }
            }
            "--rounds" => {
                o.rounds = value("--rounds")?
                    .parse()
                    .context("--rounds takes a number")?;
                if o.rounds > 1000 {
                    bail!("--rounds must be at most 1000");
                }
            }
            "--keep" => o.keep = true,
            "--debug" => o.debug = true,
            "--no-examples" => o.examples = false,
            other => bail!("unknown option {other:?} (see --help)"),
        }
    }
    Ok(Some(o))
}

/// Runs the testnet.
pub(crate) fn run(args: &[String]) -> Result<()> {
    let Some(o) = parse(args)? else {
        return Ok(());
    };
    let data = target_dir().join("testnet");
    if data.exists() {
        fs::remove_dir_all(&data).with_context(|| format!("clearing {}", data.display()))?;
    }
    fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;

    let bins = build_bins(
        &["mesh-node", "mesh-coordinator", "mesh-agent", "mesh-ledger"],
        !o.debug,
    )?;
    let bin_path = |name: &str| {
        bins.get(name)
            .cloned()
            .with_context(|| format!("cargo built no {name} executable"))
    };
    let bin = bin_path("mesh-node")?;

    println!(
        "\n==> {} validators on loopback (data in {})",
        o.nodes,
        data.display()
    );
    let mut mesh = Mesh::create(
        &bin,
        &bin_path("mesh-coordinator")?,
        &data.join("mesh"),
        o.nodes,
    )?;
    let webhook = Webhook::start()?;
    mesh.alert_webhook = Some(webhook.url.clone());
    if o.rounds > 0 {
        let digits = crate::data::ensure_digits().context(
            "fetching the digits data set the federated run trains on (cargo xtask data)",
        )?;
        mesh.datasets = digits.parent().map(std::path::Path::to_path_buf);
    }
    let started = now();
    for i in 0..o.nodes {
        mesh.start(i)?;
    }
    mesh.start_coordinator()?;
    wait_formed(&mut mesh, &(0..o.nodes).collect::<Vec<_>>())?;
    println!(
        "mesh formed in {:.1}s: every validator connected to the {} others; a coordinator \
         follows the ledger",
        started.elapsed().as_secs_f64(),
        o.nodes - 1
    );

    let (mut agents, dids) =
        crate::agents::start(&bin_path("mesh-agent")?, &data.join("agents"), &mesh)?;

    // One node's event stream, counted while the scenario runs.
    let watching = AtomicBool::new(true);
    let events = AtomicUsize::new(0);
    let alerts = Mutex::new(Vec::new());
    let watched = o.nodes - 1;
    let watch_client = mesh.nodes[watched].client();
    let mut phases = Vec::new();
    let mut receipts = Vec::new();
    let mut killed = None;
    let mut detection: Option<Detection> = None;
    std::thread::scope(|s| -> Result<()> {
        let watcher = s.spawn(|| count_blocks(&watch_client, &watching, &events, &alerts));
        let result = (|| -> Result<()> {
            let all: Vec<usize> = (0..o.nodes).collect();
            if !o.chaos {
                let load = drive(&mesh, &all, o.requests, 0, "decisions")?;
                phases.push(("all nodes up", load.summary()));
                receipts.extend(load.receipts);
                return Ok(());
            }
            let third = o.requests / 3;
            let load = drive(&mesh, &all, third, 0, "before the kill")?;
            phases.push(("all nodes up", load.summary()));
            receipts.extend(load.receipts);

            let primary = find_primary(&mesh)?;
            let victim = mesh.nodes[primary].client().status()?.peer_id;
            let others: Vec<usize> = all.iter().copied().filter(|&i| i != primary).collect();
            let observer = mesh.nodes[others[0]].client();
            println!("\n==> killing the primary, node {primary}, with SIGKILL");
            let killed_at = now();
            mesh.kill9(primary)?;
            killed = Some(primary);
            let detector = {
                let victim = victim.clone();
                s.spawn(move || watch_member(&observer, &victim, "dead"))
            };
            let load = drive(&mesh, &others, third, third, "primary down")?;
            let new_view = mesh.nodes[others[0]]
                .client()
                .status()?
                .consensus
                .map_or(0, |c| c.view);
            println!(
                "commits went on without node {primary}: view is now {new_view} ({:.1}s after the kill)",
                killed_at.elapsed().as_secs_f64()
            );
            phases.push(("primary killed", load.summary()));
            receipts.extend(load.receipts);

            let (suspected, dead) = match detector.join() {
                Ok(d) => d,
                Err(_) => bail!("the membership watcher panicked"),
            };
            println!(
                "membership on node {}: node {primary} suspected after {}, declared dead after {}",
                others[0],
                secs(suspected),
                secs(dead)
            );
            // The death spreads by gossip; restarting the node before every survivor heard
            // it would let some of them see only a refuted suspicion (and raise no alert).
            for &i in &others {
                let (_, seen) = watch_member(&mesh.nodes[i].client(), &victim, "dead");
                if seen.is_none() {
                    bail!(
                        "node {i} did not declare the killed node {primary} dead within 30 s; its log ends:\n{}",
                        mesh.log_tail(i, 20)
                    );
                }
            }
            println!(
                "every survivor holds node {primary} dead {:.1}s after the kill",
                killed_at.elapsed().as_secs_f64()
            );

            println!("\n==> restarting node {primary}");
            let restarted = now();
            mesh.start(primary)?;
            let target = max_height(&mesh, &others)?;
            wait_height(&mesh, primary, target)?;
            println!(
                "node {primary} caught up to height {target} in {:.1}s",
                restarted.elapsed().as_secs_f64()
            );
            wait_formed(&mut mesh, &all)?;
            let victim = mesh.nodes[primary].client().status()?.peer_id;
            let (_, alive) = watch_member(&mesh.nodes[others[0]].client(), &victim, "alive");
            let alive = alive.map(|_| restarted.elapsed().as_secs_f64());
            detection = Some(Detection {
                observer: others[0],
                suspected,
                dead,
                alive,
            });
            let rest = o.requests - 2 * third;
            let load = drive(&mesh, &all, rest, 2 * third, "after the restart")?;
            phases.push(("node restarted", load.summary()));
            receipts.extend(load.receipts);
            Ok(())
        })();
        watching.store(false, Ordering::Relaxed);
        let watched_ok = watcher.join();
        result?;
        match watched_ok {
            Ok(r) => r,
            Err(_) => bail!("the event watcher panicked"),
        }
    })?;

    let messaging = crate::agents::exchange(&mut agents, &dids, o.messages, o.chaos)?;
    let federated = if o.rounds > 0 {
        Some(crate::federated::run(&mut mesh, o.rounds, o.chaos)?)
    } else {
        None
    };
    let (height, agreed) = check_ledgers(&mesh, &receipts)?;
    let view = mesh.nodes[0]
        .client()
        .status()?
        .consensus
        .map_or(0, |c| c.view);

    if o.keep {
        mesh.keep();
        println!("\nthe mesh keeps running (--keep):");
        for node in &mesh.nodes {
            println!(
                "  node {}: API http://127.0.0.1:{}  metrics http://127.0.0.1:{}/metrics  pid {}  data {}",
                node.index,
                node.api_port,
                node.api_port,
                node.pid().map_or("-".into(), |p| p.to_string()),
                node.dir.display()
            );
        }
        agents.keep();
        for (a, name) in agents.agents.iter().zip(&agents.names) {
            println!(
                "  agent {name}: API http://127.0.0.1:{}  pid {}  data {}",
                a.api_port,
                a.pid().map_or("-".into(), |p| p.to_string()),
                a.dir.display()
            );
        }
        println!(
            "  coordinator: API http://127.0.0.1:{}  pid {}  data {}",
            mesh.coordinator.api_port,
            mesh.coordinator.pid().map_or("-".into(), |p| p.to_string()),
            mesh.coordinator.dir.display()
        );
        let pids: Vec<String> = mesh
            .nodes
            .iter()
            .chain(std::iter::once(&mesh.coordinator))
            .chain(&agents.agents)
            .filter_map(|n| n.pid().map(|p| p.to_string()))
            .collect();
        println!("  stop it with: kill -INT {}", pids.join(" "));
    } else {
        println!("\n==> stopping the agents and every node with SIGINT");
        for i in 0..agents.agents.len() {
            let status = agents.stop(i)?;
            if !status.success() {
                bail!(
                    "agent {} exited with {status}; its log ends:\n{}",
                    agents.names[i],
                    agents.agents[i].log_tail("agent.log", 20)
                );
            }
        }
        for i in 0..o.nodes {
            let status = mesh.stop(i)?;
            if !status.success() {
                bail!(
                    "node {i} exited with {status}; its log ends:\n{}",
                    mesh.log_tail(i, 20)
                );
            }
        }
        let status = mesh.coordinator.stop("the coordinator")?;
        if !status.success() {
            bail!(
                "the coordinator exited with {status}; its log ends:\n{}",
                mesh.coordinator.log_tail("node.log", 20)
            );
        }
        println!("every agent, node and the coordinator exited 0");
        for node in &mesh.nodes {
            let mut cmd = std::process::Command::new(bin_path("mesh-ledger")?);
            cmd.arg("verify").arg(node.dir.join("consensus"));
            step(&format!("mesh-ledger verify (node {})", node.index), cmd)?;
        }
    }

    let ran_examples = if o.examples {
        run_examples(&data)?
    } else {
        vec!["examples: skipped (--no-examples)".to_owned()]
    };

    println!(
        "\ntestnet summary ({} scenario)",
        if o.chaos { "chaos" } else { "demo" }
    );
    println!(
        "  {:<16} {:>9} {:>10} {:>8} {:>8} {:>8} {:>7}",
        "phase", "decisions", "commits/s", "p50 ms", "p90 ms", "p99 ms", "failed"
    );
    for (name, p) in &phases {
        println!(
            "  {:<16} {:>9} {:>10.0} {:>8.1} {:>8.1} {:>8.1} {:>7}",
            name, p.committed, p.rate, p.p50, p.p90, p.p99, p.failed
        );
    }
    println!(
        "  ledger: height {height} on all {} nodes, identical; {agreed} acknowledged decisions found at their heights",
        o.nodes
    );
    println!(
        "  final view: {view}{}",
        match killed {
            Some(k) => format!(" (node {k}, the primary, was killed and restarted, and caught up)"),
            None => String::new(),
        }
    );
    let alerts = alerts.into_inner().unwrap_or_else(|p| p.into_inner());
    println!(
        "  events: node {watched}'s WebSocket stream reported {} committed blocks{}",
        events.load(Ordering::Relaxed),
        if alerts.is_empty() {
            String::new()
        } else {
            format!(" and the alerts: {}", alerts.join(", "))
        }
    );
    if killed.is_some() && !alerts.iter().any(|a| a == "peer-down fired") {
        bail!("node {watched} raised no peer-down alert although a node was killed");
    }
    let posted = webhook.received();
    println!(
        "  alert webhook: {} alerts posted by the nodes",
        posted.len()
    );
    if killed.is_some() && !posted.iter().any(|b| b.contains("\"peer-down\"")) {
        bail!("no node posted a peer-down alert to the webhook although a node was killed");
    }
    if let (Some(d), Some(k)) = (&detection, killed) {
        println!(
            "  membership (SWIM): node {} suspected the killed node {k} after {}, declared it dead after {}, saw it alive again {} after its restart",
            d.observer,
            secs(d.suspected),
            secs(d.dead),
            secs(d.alive)
        );
    }
    for line in &ran_examples {
        println!("  {line}");
    }
    println!(
        "  agents: alice and bob (joined through the coordinator, registered through consensus) sent {} end-to-end encrypted \
         messages; {} delivered exactly once, decrypted and verified ({:.0} messages/s{})",
        messaging.sent,
        messaging.delivered,
        messaging.delivered as f64 / messaging.secs.max(1e-9),
        if messaging.restarted {
            "; bob was killed with SIGKILL mid-exchange and restarted"
        } else {
            ""
        }
    );
    match &federated {
        Some(f) => println!(
            "  federated learning: {} rounds of an MLP over {} validator processes, each on its own \
             non-IID shard of the digits; final held-out accuracy {:.3}; {:.1}s per round; every \
             global model committed through consensus and adopted by every validator{}",
            f.rounds,
            o.nodes,
            f.accuracy,
            f.secs_per_round,
            match f.killed {
                Some(k) => format!(" (trainer node {k} killed with SIGKILL mid-run and restarted)"),
                None => String::new(),
            }
        ),
        None => println!("  federated learning: skipped (--rounds 0)"),
    }
    Ok(())
}

/// A minimal HTTP endpoint on loopback that records the bodies the nodes post to
/// `MESH_ALERT_WEBHOOK` and answers 204.
struct Webhook {
    url: String,
    bodies: std::sync::Arc<Mutex<Vec<String>>>,
}

impl Webhook {
    fn start() -> Result<Self> {
        use std::io::{BufRead as _, Read as _, Write as _};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").context("webhook listener")?;
        let url = format!("http://{}/alerts", listener.local_addr()?);
        let bodies = std::sync::Arc::new(Mutex::new(Vec::new()));
        let sink = bodies.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut reader = std::io::BufReader::new(&stream);
                let mut length = 0usize;
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                    if line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0).min(64 * 1024);
                    }
                    line.clear();
                }
                let mut body = vec![0; length];
                if reader.read_exact(&mut body).is_ok() {
                    sink.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(String::from_utf8_lossy(&body).into_owned());
                }
                let _ =
                    (&stream).write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
            }
        });
        Ok(Self { url, bodies })
    }

    fn received(&self) -> Vec<String> {
        self.bodies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// When one node's membership view noticed the killed primary (seconds after the kill, and
/// after its restart).
struct Detection {
    observer: usize,
    suspected: Option<f64>,
    dead: Option<f64>,
    alive: Option<f64>,
}

fn secs(t: Option<f64>) -> String {
    t.map_or_else(
        || "(not seen within 30 s)".to_owned(),
        |t| format!("{t:.1}s"),
    )
}

/// Polls `client`'s membership view (at most 30 s) until `peer` is in state `until`; returns
/// when it was first seen suspected and when in `until`, in seconds from the call.
fn watch_member(client: &Client, peer: &str, until: &str) -> (Option<f64>, Option<f64>) {
    let started = now();
    let mut suspected = None;
    while started.elapsed() < Duration::from_secs(30) {
        let state = client
            .members()
            .ok()
            .and_then(|m| m.into_iter().find(|m| m.peer_id == peer))
            .map(|m| m.state);
        let t = started.elapsed().as_secs_f64();
        match state.as_deref() {
            Some(s) if s == until => return (suspected, Some(t)),
            Some("suspected") if suspected.is_none() => suspected = Some(t),
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    (suspected, None)
}

/// Waits (at most 60 s) until every node in `which` answers and sees all the others.
fn wait_formed(mesh: &mut Mesh, which: &[usize]) -> Result<()> {
    let deadline = now() + Duration::from_secs(60);
    let want = mesh.nodes.len() - 1;
    let mut last_print = now();
    loop {
        let mut ready = 0;
        for &i in which {
            if !mesh.nodes[i].running() {
                bail!(
                    "node {i} exited while the mesh formed; its log ends:\n{}",
                    mesh.log_tail(i, 20)
                );
            }
            let connected = mesh.nodes[i]
                .client()
                .with_timeout(Duration::from_secs(2))
                .status()
                .ok()
                .and_then(|s| s.consensus)
                .map(|c| c.connected);
            if connected.is_some_and(|c| c >= want) {
                ready += 1;
            }
        }
        if ready == which.len() {
            return Ok(());
        }
        if now() > deadline {
            bail!(
                "the mesh did not form within 60 s ({ready} of {} nodes connected to all); node {} log ends:\n{}",
                which.len(),
                which[0],
                mesh.log_tail(which[0], 20)
            );
        }
        if last_print.elapsed() > Duration::from_secs(2) {
            println!(
                "  waiting for the mesh: {ready} of {} nodes connected to all others",
                which.len()
            );
            last_print = now();
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Counts `block_committed` events on `client`'s stream, and records its alerts (`name
/// state`), until `watching` turns false.
fn count_blocks(
    client: &Client,
    watching: &AtomicBool,
    count: &AtomicUsize,
    alerts: &Mutex<Vec<String>>,
) -> Result<()> {
    let mut stream = client.events().context("opening the event stream")?;
    stream.set_timeout(Duration::from_millis(500))?;
    while watching.load(Ordering::Relaxed) {
        match stream.next_event() {
            Ok(Some(Event::BlockCommitted { .. })) => {
                count.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Some(Event::Alert { name, state, .. })) => {
                println!("  alert on the watched node: {name} {state}");
                alerts
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(format!("{name} {state}"));
            }
            Ok(Some(_)) => {}
            Ok(None) => bail!("the event stream closed early"),
            // A read timeout: check whether to stop, then wait again.
            Err(mesh_api::client::ClientError::Io { source, .. })
                if matches!(
                    source.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// What a load phase measured.
struct Load {
    receipts: Vec<Receipt>,
    latencies_ms: Vec<f64>,
    failed: usize,
    secs: f64,
}

struct PhaseSummary {
    committed: usize,
    rate: f64,
    p50: f64,
    p90: f64,
    p99: f64,
    failed: usize,
}

impl Load {
    fn summary(&self) -> PhaseSummary {
        let mut l = self.latencies_ms.clone();
        l.sort_by(f64::total_cmp);
        let pct = |p: f64| {
            if l.is_empty() {
                0.0
            } else {
                l[((l.len() - 1) as f64 * p).round() as usize]
            }
        };
        PhaseSummary {
            committed: self.receipts.len(),
            rate: self.receipts.len() as f64 / self.secs.max(1e-9),
            p50: pct(0.5),
            p90: pct(0.9),
            p99: pct(0.99),
            failed: self.failed,
        }
    }
}

/// Submits `count` decisions numbered from `first`, spread over the nodes in `targets`, from
/// 16 concurrent clients; a failed submission is retried (up to 3 times) at the next node.
fn drive(mesh: &Mesh, targets: &[usize], count: usize, first: usize, what: &str) -> Result<Load> {
    const WORKERS: usize = 16;
    println!("\n==> submitting {count} decisions ({what}) to nodes {targets:?}");
    let clients: Vec<Client> = targets.iter().map(|&i| mesh.nodes[i].client()).collect();
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let results = Mutex::new((Vec::new(), Vec::new(), 0usize));
    let started = now();
    std::thread::scope(|s| {
        for _ in 0..WORKERS {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        break;
                    }
                    let text = format!("decision #{}", first + i);
                    let t0 = now();
                    let mut outcome = None;
                    for attempt in 0..3 {
                        let c = &clients[(i + attempt) % clients.len()];
                        if let Ok(r) = c.submit_text(&text) {
                            outcome = Some(r);
                            break;
                        }
                    }
                    let ms = t0.elapsed().as_secs_f64() * 1e3;
                    if let Ok(mut r) = results.lock() {
                        match outcome {
                            Some(receipt) => {
                                r.0.push(receipt);
                                r.1.push(ms);
                            }
                            None => r.2 += 1,
                        }
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        let mut last = now();
        while done.load(Ordering::Relaxed) < count {
            std::thread::sleep(Duration::from_millis(50));
            if last.elapsed() > Duration::from_secs(1) {
                println!(
                    "  {}/{count} answered ({:.1}s)",
                    done.load(Ordering::Relaxed),
                    started.elapsed().as_secs_f64()
                );
                last = now();
            }
        }
    });
    let secs = started.elapsed().as_secs_f64();
    let (receipts, latencies_ms, failed) = results
        .into_inner()
        .map_err(|_| anyhow::anyhow!("a submitting thread panicked"))?;
    println!(
        "  {} committed, {failed} failed, in {secs:.1}s ({:.0}/s)",
        receipts.len(),
        receipts.len() as f64 / secs.max(1e-9)
    );
    if failed * 10 > count {
        bail!("{failed} of {count} submissions failed");
    }
    Ok(Load {
        receipts,
        latencies_ms,
        failed,
        secs,
    })
}

/// The node that is the primary now, by node 0's (or the first answering node's) status.
fn find_primary(mesh: &Mesh) -> Result<usize> {
    let mut ids = HashMap::new();
    let mut primary = None;
    for node in &mesh.nodes {
        let c = node
            .client()
            .status()?
            .consensus
            .context("a node without consensus")?;
        ids.insert(c.node.clone(), node.index);
        primary.get_or_insert(c.primary);
    }
    let primary = primary.context("no node answered")?;
    ids.get(&primary)
        .copied()
        .with_context(|| format!("the primary {primary} is none of the nodes"))
}

fn max_height(mesh: &Mesh, which: &[usize]) -> Result<u64> {
    let mut max = 0;
    for &i in which {
        let h = mesh.nodes[i]
            .client()
            .status()?
            .consensus
            .map_or(0, |c| c.height);
        max = max.max(h);
    }
    Ok(max)
}

/// Waits (at most 60 s) until node `i` has executed `height`.
fn wait_height(mesh: &Mesh, i: usize, height: u64) -> Result<()> {
    let deadline = now() + Duration::from_secs(60);
    loop {
        let h = mesh.nodes[i]
            .client()
            .with_timeout(Duration::from_secs(2))
            .status()
            .ok()
            .and_then(|s| s.consensus)
            .map(|c| c.height);
        if h.is_some_and(|h| h >= height) {
            return Ok(());
        }
        if now() > deadline {
            bail!(
                "node {i} is at height {h:?}, not {height}, after 60 s; its log ends:\n{}",
                mesh.log_tail(i, 20)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until every node reports the same height, reads every ledger through the API,
/// checks they are identical, and that each receipt's request is in its block. Returns the
/// height and the receipts found.
fn check_ledgers(mesh: &Mesh, receipts: &[Receipt]) -> Result<(u64, usize)> {
    println!("\n==> checking the ledgers");
    let all: Vec<usize> = (0..mesh.nodes.len()).collect();
    let height = max_height(mesh, &all)?;
    for &i in &all {
        wait_height(mesh, i, height)?;
    }
    let mut reference: Option<Vec<(u64, String, String)>> = None;
    let mut found = 0;
    for node in &mesh.nodes {
        let client = node.client();
        let mut blocks = Vec::new();
        let mut from = 1;
        while from <= height {
            let page = client.ledger(from, 256)?;
            if page.blocks.is_empty() {
                bail!("node {}'s ledger ends before height {from}", node.index);
            }
            from += page.blocks.len() as u64;
            blocks.extend(page.blocks);
        }
        blocks.truncate(height as usize);
        for (h, b) in blocks.iter().enumerate() {
            if b.height != h as u64 + 1 {
                bail!(
                    "node {}'s ledger skips from {h} to {}",
                    node.index,
                    b.height
                );
            }
        }
        let chain: Vec<(u64, String, String)> = blocks
            .iter()
            .map(|b| (b.height, b.digest.clone(), b.prev.clone()))
            .collect();
        match &reference {
            None => {
                let index: HashMap<(String, u64), u64> = blocks
                    .iter()
                    .flat_map(|b| {
                        b.requests
                            .iter()
                            .map(|r| ((r.client.clone(), r.id), b.height))
                    })
                    .collect();
                for r in receipts {
                    match index.get(&(r.client.clone(), r.id)) {
                        Some(&h) if h == r.height => found += 1,
                        Some(&h) => bail!(
                            "decision {}#{} was acknowledged at height {} but is at {h}",
                            r.client,
                            r.id,
                            r.height
                        ),
                        None => bail!(
                            "decision {}#{} was acknowledged at height {} and is not in the ledger",
                            r.client,
                            r.id,
                            r.height
                        ),
                    }
                }
                reference = Some(chain);
            }
            Some(first) => {
                if let Some(h) = first.iter().zip(&chain).position(|(a, b)| a != b) {
                    bail!(
                        "node {}'s ledger differs from node 0's at height {}",
                        node.index,
                        h + 1
                    );
                }
            }
        }
    }
    println!(
        "all {} ledgers identical up to height {height}; all {found} acknowledged decisions present",
        mesh.nodes.len()
    );
    Ok((height, found))
}

/// The parts that are not in the binaries yet, as examples with data directories.
fn run_examples(data: &std::path::Path) -> Result<Vec<String>> {
    let mut ran = Vec::new();
    for example in ["store_quickstart", "secure_messaging"] {
        let dir = data.join(example);
        let mut cmd = release_run(&["-p", "mesh-examples", "--example", example]);
        cmd.arg(&dir);
        step(
            &format!("example {example} (data in {})", dir.display()),
            cmd,
        )?;
        ran.push(format!("example {example}: passed (in one process)"));
    }
    // Federated learning on the real digits: 10 non-IID clients, FedAvg against centralized
    // training on the same model and epochs, accuracy printed per round.
    crate::data::ensure_digits().context("fetching the digits data set (cargo xtask data)")?;
    let mut cmd = release_run(&["-p", "mesh-learning", "--example", "federated_digits"]);
    cmd.args(["mlp64", "80", "1", "0.5", "1", "0.1"]);
    step(
        "federated learning on the digits (10 non-IID clients, FedAvg vs centralized)",
        cmd,
    )?;
    ran.push("federated_digits: FedAvg over 10 non-IID clients, in one process".to_owned());
    Ok(ran)
}

/// `cargo run --quiet --release <what> --`: the caller appends the program's arguments.
fn release_run(what: &[&str]) -> std::process::Command {
    let mut cmd = cargo();
    cmd.args(["run", "--quiet", "--release"])
        .args(what)
        .arg("--");
    cmd
}
