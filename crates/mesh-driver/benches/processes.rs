//! `cargo bench -p mesh-driver`: four validators, each its own OS process on loopback (libp2p
//! TCP + Noise + yamux, a `DiskStore` with fsync per step, BLS certificates), ordering
//! 512-byte requests submitted by a load generator inside each validator process, in both
//! request modes: opaque (connection-authenticated: named after the submitting node) and
//! signed (every replica batch-verifies every client's Ed25519 signature).
//!
//! Two runs: saturation (every node submits as fast as its window of 1,024 requests in flight
//! allows) for committed requests/s, and an offered 10,000 requests/s for end-to-end latency
//! (from the request's scheduled submission to its committed receipt).
//!
//! Knobs for experiments (environment): `MESH_BENCH_INFLIGHT` (pipeline depth),
//! `MESH_BENCH_FORWARD_MS` (how long a backup bundles requests before forwarding them),
//! `MESH_BENCH_MIN_PIPELINED` (the fewest waiting requests for which a primary opens a block
//! while another is open),
//! `MESH_BENCH_WINDOW` (client window: requests in flight per node), `MESH_BENCH_WORKERS`
//! (tokio worker threads per process, default 2) and `MESH_BENCH_ONLY`
//! (words among `opaque`, `signed`, `saturation`, `10k`: run only those). Measured with the
//! defaults, a window of 8,192 instead of 1,024 changed nothing (33.5k vs 37-40k requests/s):
//! the run is bound by CPU (BLS per block), not by requests in flight.
//!
//! A multi-process figure does not fit criterion's repeat-a-closure model, so this bench has
//! its own harness (`harness = false`) and prints its table. Each child is this same binary,
//! re-executed with `MESH_BENCH_CHILD` set.

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::disallowed_methods // a benchmark reads the clock
)]

use std::io::{BufRead as _, Write as _};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mesh_consensus::{Keys, RequestAuth, ValidatorSet};
use mesh_crypto::bls::BlsSecretKey;
use mesh_crypto::ed25519::SigningKey;
use mesh_driver::consensus::{self, Config, Driver};
use mesh_types::NodeId;

const N: usize = 4;
const ENV_CHILD: &str = "MESH_BENCH_CHILD";
const ENV_PORTS: &str = "MESH_BENCH_PORTS";
const ENV_DIR: &str = "MESH_BENCH_DIR";
const ENV_MODE: &str = "MESH_BENCH_MODE";

fn seed(i: usize) -> [u8; 32] {
    [i as u8 + 101; 32]
}

fn keys(i: usize) -> Keys {
    Keys {
        ed25519: SigningKey::from_seed(&seed(i)),
        bls: BlsSecretKey::from_ikm(&[i as u8 + 201; 32]).unwrap(),
    }
}

fn validator_set() -> ValidatorSet {
    let members = (0..N).map(|i| keys(i).member(1)).collect();
    ValidatorSet::new(0, members).unwrap()
}

fn addr(i: usize, port: u16) -> mesh_transport::Multiaddr {
    let node = NodeId(SigningKey::from_seed(&seed(i)).verifying_key().to_bytes());
    let peer = consensus::peer_id(&node).unwrap();
    format!("/ip4/127.0.0.1/tcp/{port}/p2p/{peer}")
        .parse()
        .unwrap()
}

/// CPU time this process has used (user + system), from `/proc/self/stat`, in clock ticks
/// (1/100 s on Linux); 0 where that file does not exist.
fn cpu_ticks() -> u64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0;
    };
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    fields
        .get(11..13)
        .map_or(0, |f| f.iter().filter_map(|x| x.parse::<u64>().ok()).sum())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

fn main() {
    if let Ok(i) = std::env::var(ENV_CHILD) {
        child(i.parse().unwrap());
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    parent();
}

// ----- a validator process ------------------------------------------------------------------

fn child(index: usize) {
    let ports: Vec<u16> = std::env::var(ENV_PORTS)
        .unwrap()
        .split(',')
        .map(|p| p.parse().unwrap())
        .collect();
    let dir = std::path::PathBuf::from(std::env::var(ENV_DIR).unwrap());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(
            std::env::var("MESH_BENCH_WORKERS")
                .ok()
                .and_then(|w| w.parse().ok())
                .unwrap_or(2),
        )
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut config = Config::new(dir, validator_set(), keys(index));
        let signed = std::env::var(ENV_MODE).is_ok_and(|m| m == "signed");
        config.consensus.request_auth = if signed {
            RequestAuth::Signed
        } else {
            RequestAuth::Connection
        };
        if let Ok(window) = std::env::var("MESH_BENCH_WINDOW") {
            config.consensus.client_window = window.parse().unwrap();
        }
        if let Ok(depth) = std::env::var("MESH_BENCH_INFLIGHT") {
            config.consensus.max_inflight = depth.parse().unwrap();
        }
        if let Ok(n) = std::env::var("MESH_BENCH_MIN_PIPELINED") {
            config.consensus.min_pipelined_batch = n.parse().unwrap();
        }
        if let Ok(ms) = std::env::var("MESH_BENCH_FORWARD_MS") {
            config.consensus.forward_delay =
                Duration::from_micros((ms.parse::<f64>().unwrap() * 1e3) as u64);
        }
        config.transport.listen = vec![
            format!("/ip4/127.0.0.1/tcp/{}", ports[index])
                .parse()
                .unwrap(),
        ];
        config.transport.mdns = false;
        config.peers = (0..N)
            .filter(|&j| j != index)
            .map(|j| addr(j, ports[j]))
            .collect();
        let (handle, _join) = Driver::start(config).unwrap();
        let mut next_id = 0u64;
        println!("READY");
        let mut lines = std::io::stdin().lock().lines();
        while let Some(Ok(line)) = lines.next() {
            let parts: Vec<&str> = line.split_whitespace().collect();
            if parts.first() != Some(&"GO") {
                continue;
            }
            let rate: f64 = parts[1].parse().unwrap();
            let count: usize = parts[2].parse().unwrap();
            // Signed mode: the clients (one per process here) sign before the clock starts,
            // as they would on their own machines.
            let mut signed_requests = Vec::new();
            if signed {
                let client = SigningKey::from_seed(&[index as u8 + 77; 32]);
                for _ in 0..count {
                    next_id += 1;
                    signed_requests.push(mesh_consensus::Request::signed(
                        &client,
                        next_id,
                        vec![next_id as u8; 512],
                    ));
                }
            }
            let mut signed_requests = signed_requests.into_iter();
            // At most a client window of signed requests in flight (the handle caps its own).
            let window = std::sync::Arc::new(tokio::sync::Semaphore::new(1024));
            let height_before = handle.status().executed;
            let cpu_before = cpu_ticks();
            let (tx, mut rx) = tokio::sync::mpsc::channel::<Option<Duration>>(count.max(1));
            let start = Instant::now();
            // Requests go out in 1 ms ticks (each at or after its due time, latency counted
            // from the due time): a timer per request would cost the load generator more CPU
            // than the validator it loads.
            let tick = Duration::from_millis(1);
            let mut next_tick = start;
            for i in 0..count {
                let due = start + Duration::from_secs_f64(i as f64 / rate);
                if due > next_tick {
                    next_tick = due.max(next_tick + tick);
                    tokio::time::sleep_until(next_tick.into()).await;
                }
                let h = handle.clone();
                let tx = tx.clone();
                let request = signed_requests.next();
                let window = window.clone();
                tokio::spawn(async move {
                    let ok = match request {
                        Some(r) => {
                            let _slot = window.acquire_owned().await;
                            h.submit_request(r).await.is_ok()
                        }
                        None => h.submit(vec![i as u8; 512]).await.is_ok(),
                    };
                    let _ = tx.send(ok.then(|| due.elapsed())).await;
                });
            }
            drop(tx);
            let mut lat = Vec::with_capacity(count);
            let mut failed = 0;
            while let Some(r) = rx.recv().await {
                match r {
                    Some(d) => lat.push(d),
                    None => failed += 1,
                }
            }
            let elapsed = start.elapsed();
            let blocks = handle.status().executed - height_before;
            let cpu = cpu_ticks() - cpu_before;
            lat.sort();
            println!(
                "DONE {} {} {} {} {} {blocks} {cpu}",
                lat.len(),
                failed,
                elapsed.as_micros(),
                percentile(&lat, 0.5).as_micros(),
                percentile(&lat, 0.99).as_micros()
            );
            std::io::stdout().flush().unwrap();
        }
    });
}

// ----- the harness ----------------------------------------------------------------------------

struct Child {
    proc: std::process::Child,
    stdin: std::process::ChildStdin,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.proc.kill();
        let _ = self.proc.wait();
    }
}

impl Child {
    fn expect(&self, prefix: &str, wait: Duration) -> String {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.starts_with(prefix) => return l,
                Ok(_) => {}
                Err(_) => panic!("no {prefix} from a validator within {wait:?}"),
            }
        }
    }
}

fn parent() {
    let only = std::env::var("MESH_BENCH_ONLY").unwrap_or_default();
    for mode in ["opaque", "signed"] {
        if only.is_empty() || only.contains(mode) {
            run_mode(mode, &only);
        }
    }
}

fn run_mode(mode: &str, only: &str) {
    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<u16> = (0..N)
        .map(|_| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        })
        .collect();
    let ports_env = ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let exe = std::env::current_exe().unwrap();
    let mut children: Vec<Child> = (0..N)
        .map(|i| {
            let data = dir.path().join(format!("v{i}"));
            let mut proc = Command::new(&exe)
                .env(ENV_CHILD, i.to_string())
                .env(ENV_PORTS, &ports_env)
                .env(ENV_DIR, &data)
                .env(ENV_MODE, mode)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap();
            let stdin = proc.stdin.take().unwrap();
            let stdout = proc.stdout.take().unwrap();
            let (tx, lines) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
            Child { proc, stdin, lines }
        })
        .collect();
    for c in &children {
        c.expect("READY", Duration::from_secs(30));
    }
    std::thread::sleep(Duration::from_secs(2)); // connections
    let runs = [
        ("saturation", 1.0e6, 20_000usize),
        ("10k/s offered", 2_500.0, 12_500usize),
    ];
    println!("consensus over 4 processes on loopback, 512-byte {mode} requests");
    for (name, rate_per_node, per_node) in runs {
        if only.contains("saturation") && rate_per_node < 1.0e6
            || only.contains("10k") && rate_per_node >= 1.0e6
        {
            continue;
        }
        for c in &mut children {
            writeln!(c.stdin, "GO {rate_per_node} {per_node}").unwrap();
        }
        let mut committed = 0u64;
        let mut failed = 0u64;
        let mut longest = 0u64;
        let mut p50s = Vec::new();
        let mut p99s = Vec::new();
        let mut blocks = 0u64;
        let mut cpu_ticks = 0u64;
        for c in &children {
            let done = c.expect("DONE", Duration::from_secs(300));
            let f: Vec<u64> = done
                .split_whitespace()
                .skip(1)
                .map(|x| x.parse().unwrap())
                .collect();
            committed += f[0];
            failed += f[1];
            longest = longest.max(f[2]);
            p50s.push(f[3]);
            p99s.push(f[4]);
            blocks = blocks.max(f[5]);
            cpu_ticks += f[6];
        }
        p50s.sort_unstable();
        let rate = committed as f64 / (longest as f64 / 1e6);
        println!(
            "{name:>14}: {committed} committed ({failed} failed) in {:.2} s = {:.0} requests/s; \
             latency p50 {:.1} ms (median of nodes), p99 {:.1} ms (worst node); \
             {blocks} blocks, {:.0} requests/block; CPU {:.1} us/request (4 processes)",
            longest as f64 / 1e6,
            rate,
            p50s[p50s.len() / 2] as f64 / 1e3,
            p99s.iter().max().copied().unwrap_or(0) as f64 / 1e3,
            committed as f64 / blocks.max(1) as f64,
            cpu_ticks as f64 * 1e4 / committed.max(1) as f64,
        );
        // Machine-readable figures for `cargo xtask bench` (target/xtask-bench.json).
        let key = if mode == "opaque" {
            "consensus"
        } else {
            "consensus_signed"
        };
        if rate_per_node >= 1.0e6 {
            println!("XTASK-BENCH {key}_commits_per_s={rate:.0}");
        } else {
            println!(
                "XTASK-BENCH {key}_p50_ms_at_10k={:.1}",
                p50s[p50s.len() / 2] as f64 / 1e3
            );
            println!(
                "XTASK-BENCH {key}_p99_ms_at_10k={:.1}",
                p99s.iter().max().copied().unwrap_or(0) as f64 / 1e3
            );
        }
    }
}
