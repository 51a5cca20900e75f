//! `cargo xtask bench`: the cross-process figures, which criterion's in-process model cannot
//! produce, printed as a table and written to `target/xtask-bench.json`.
//!
//! - `node_start_ms`, `node_idle_rss_mb`: four `mesh-node` validators (release) started from
//!   one genesis; the slowest from spawn to an answering API, and the largest resident set
//!   after 5 s idle in a formed mesh.
//! - `rr_msgs_per_s`, `rr_p99_ms`, `gossip_msgs_per_s`, `gossip_p99_ms`: mesh-transport's
//!   bench (`crates/mesh-transport/benches/transport.rs`): the sustained maximum, then the
//!   p99 latency at half of it, offered open loop.
//! - `consensus_*`: four validator processes on loopback with 512-byte requests
//!   (`crates/mesh-driver/benches/processes.rs`): the saturation rate, and end-to-end latency
//!   at 10,000 requests/s offered, for opaque and for signed requests.
//! - `fl_round_s`: the same four release validators run a federated run of 10 rounds (an
//!   MLP on the digits, each node on its own non-IID shard, every model committed through
//!   consensus); seconds per round, from the POST that starts the run (its commit included)
//!   to its last adopted model on node 0.
//!
//! Benches print `XTASK-BENCH key=value` lines; this command collects them.

use std::collections::BTreeMap;
use std::io::BufRead as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::mesh::Mesh;
use crate::util::{cargo, now, target_dir};

/// Targets from the issues (`>=` for rates, `<` for latencies and memory).
const TARGETS: &[(&str, &str)] = &[
    ("consensus_commits_per_s", ">= 100000"),
    ("consensus_p50_ms_at_10k", "< 20"),
    ("consensus_p99_ms_at_10k", "< 50"),
    ("consensus_signed_commits_per_s", ">= 25000"),
    ("node_idle_rss_mb", "< 100"),
    ("node_start_ms", "< 1000"),
];

pub(crate) fn run(args: &[String]) -> Result<()> {
    if let Some(arg) = args.first() {
        bail!(
            "`cargo xtask bench` takes no options (got {arg:?}); `cargo bench` runs the in-process benches"
        );
    }
    let target = target_dir();
    let mut figures: BTreeMap<String, f64> = BTreeMap::new();

    println!("\n==> node start time and idle memory (4 release validators)");
    let mut build = cargo();
    build.args(["build", "--release", "--quiet", "-p", "mesh-node"]);
    crate::util::step("building mesh-node (release)", build)?;
    let (start_ms, rss_mb, fl_round_s) = node_figures(&target)?;
    figures.insert("node_start_ms".into(), start_ms);
    figures.insert("node_idle_rss_mb".into(), rss_mb);
    figures.insert("fl_round_s".into(), fl_round_s);

    let mut transport = cargo();
    transport.args([
        "bench",
        "-p",
        "mesh-transport",
        "--bench",
        "transport",
        "--",
        "request_response|gossip",
    ]);
    collect(
        "transport: request/response and gossip, maximum and p99 at half of it",
        transport,
        &mut figures,
    )?;

    let mut processes = cargo();
    processes.args(["bench", "-p", "mesh-driver", "--bench", "processes"]);
    collect(
        "consensus over four validator processes (saturation, 10k/s offered; opaque, signed)",
        processes,
        &mut figures,
    )?;

    let mut json = serde_json::Map::new();
    for (k, v) in &figures {
        json.insert(k.clone(), serde_json::json!(v));
    }
    json.insert(
        "notes".into(),
        serde_json::json!({
            "fl_round_s": "4 release validators, MLP 64-64-10 on the digits, 10 rounds of 1 local epoch, each node on its own Dirichlet(0.5) shard; seconds per round from the run's commit to its last adopted model",
            "machine": format!("{} cores; load average before the run: {}", cores(), load()),
        }),
    );
    json.insert(
        "targets".into(),
        serde_json::Value::Object(
            TARGETS
                .iter()
                .map(|(k, t)| ((*k).to_owned(), serde_json::json!(t)))
                .collect(),
        ),
    );
    let path = target.join("xtask-bench.json");
    std::fs::write(&path, serde_json::to_string_pretty(&json)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;

    println!("\ncross-process figures ({})", path.display());
    println!("  {:<32} {:>12}  target", "figure", "value");
    for (k, v) in &figures {
        let t = TARGETS.iter().find(|(n, _)| n == k).map_or("", |(_, t)| t);
        // Seconds per federated round are a few hundredths: keep three decimals below 10.
        let shown = if v.abs() < 10.0 {
            format!("{v:.3}")
        } else {
            format!("{v:.1}")
        };
        println!("  {k:<32} {shown:>12}  {t}");
    }
    Ok(())
}

/// Runs a bench, echoing its output, and collects its `XTASK-BENCH key=value` lines.
fn collect(title: &str, mut cmd: Command, figures: &mut BTreeMap<String, f64>) -> Result<()> {
    println!("\n==> {title}");
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start: {title}"))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut found = 0;
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        if let Some((k, v)) = line
            .strip_prefix("XTASK-BENCH ")
            .and_then(|kv| kv.split_once('='))
        {
            let v: f64 = v
                .trim()
                .parse()
                .with_context(|| format!("figure {line:?}"))?;
            figures.insert(k.trim().to_owned(), v);
            found += 1;
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("{title}: {status}");
    }
    if found == 0 {
        bail!("{title}: printed no XTASK-BENCH figure");
    }
    Ok(())
}

/// Starts four validators; returns the slowest start (spawn to an answering API, ms) and the
/// largest resident set after 5 s idle (MB).
fn node_figures(target: &std::path::Path) -> Result<(f64, f64, f64)> {
    let root = target.join("xtask-bench-nodes");
    if root.exists() {
        std::fs::remove_dir_all(&root)?;
    }
    let bin = target.join("release").join("mesh-node");
    // The coordinator is created (it is in the genesis) but not started here.
    let mut mesh = Mesh::create(&bin, &bin, &root, 4)?;
    let digits = crate::data::ensure_digits().context("the digits data set (cargo xtask data)")?;
    mesh.datasets = digits.parent().map(std::path::Path::to_path_buf);
    let mut slowest: f64 = 0.0;
    for i in 0..4 {
        let t0 = now();
        mesh.start(i)?;
        let client = mesh.nodes[i]
            .client()
            .with_timeout(Duration::from_millis(500));
        loop {
            if client.status().is_ok() {
                break;
            }
            if t0.elapsed() > Duration::from_secs(30) {
                bail!(
                    "node {i}'s API did not answer within 30 s:\n{}",
                    mesh.log_tail(i, 20)
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        slowest = slowest.max(t0.elapsed().as_secs_f64() * 1e3);
    }
    std::thread::sleep(Duration::from_secs(5));
    let mut rss: f64 = 0.0;
    for node in &mesh.nodes {
        let pid = node.pid().context("a node without a process")?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let kb: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .context("no VmRSS in /proc/<pid>/status")?;
        rss = rss.max(kb / 1024.0);
    }
    println!("slowest start to an answering API: {slowest:.0} ms; largest idle RSS: {rss:.1} MB");
    let fl_round_s = federated_round_secs(&mesh)?;
    for i in 0..4 {
        mesh.stop(i)?;
    }
    Ok((slowest, rss, fl_round_s))
}

/// Seconds per round of a 10-round federated run over the mesh's four validators.
fn federated_round_secs(mesh: &Mesh) -> Result<f64> {
    const ROUNDS: u64 = 10;
    let client = mesh.nodes[0].client();
    // The mesh forms before consensus can commit the run.
    let t0 = now();
    // Timed from the POST that succeeds: the nodes start the run as soon as its block
    // executes, before the answer arrives, so timing from the answer would miss rounds.
    let (run, started) = loop {
        let posted = now();
        match client.start_run(&mesh_api::types::StartRun {
            model: Some("mlp".into()),
            rounds: Some(ROUNDS),
            seed: Some(1),
            ..Default::default()
        }) {
            Ok(run) => break (run, posted),
            Err(e) if t0.elapsed() < Duration::from_secs(60) => {
                println!("  waiting for the mesh to commit a run: {e}");
                std::thread::sleep(Duration::from_secs(1));
            }
            Err(e) => bail!("no federated run could start: {e}"),
        }
    };
    loop {
        let info = client.run(&run.id)?;
        if info.state == "finished" {
            let secs = started.elapsed().as_secs_f64() / ROUNDS as f64;
            let accuracy = info.finished_rounds.last().map_or(0.0, |r| r.accuracy);
            println!(
                "federated run: {ROUNDS} rounds in {:.2} s ({secs:.3} s per round), final held-out accuracy {accuracy:.3}",
                started.elapsed().as_secs_f64()
            );
            return Ok(secs);
        }
        if info.state == "failed" || started.elapsed() > Duration::from_secs(600) {
            bail!("the federated run did not finish: {info:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}
