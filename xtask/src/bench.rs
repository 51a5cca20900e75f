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
//! - `fl_round_s`: `null` until federated rounds run over the network (issue #7); the JSON's
//!   `notes` say so.
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
    let (start_ms, rss_mb) = node_figures(&target)?;
    figures.insert("node_start_ms".into(), start_ms);
    figures.insert("node_idle_rss_mb".into(), rss_mb);

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
    json.insert("fl_round_s".into(), serde_json::Value::Null);
    json.insert(
        "notes".into(),
        serde_json::json!({
            "fl_round_s": "not measured: federated rounds do not run over the network yet (issue #7)",
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
        println!("  {k:<32} {v:>12.1}  {t}");
    }
    println!("  {:<32} {:>12}  (not measured yet)", "fl_round_s", "-");
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
fn node_figures(target: &std::path::Path) -> Result<(f64, f64)> {
    let root = target.join("xtask-bench-nodes");
    if root.exists() {
        std::fs::remove_dir_all(&root)?;
    }
    let bin = target.join("release").join("mesh-node");
    // The coordinator is created (it is in the genesis) but not started here.
    let mut mesh = Mesh::create(&bin, &bin, &root, 4)?;
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
    for i in 0..4 {
        mesh.stop(i)?;
    }
    Ok((slowest, rss))
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}
