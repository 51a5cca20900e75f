//! Crash safety of the persistent memories on `DiskStore`: a writer process appends episodes
//! and grows a chain in the knowledge graph, and is killed with SIGKILL mid-stream, again and
//! again. After each kill, every episode and graph write the writer acknowledged must be
//! present, intact and findable through every index, and nothing present may be torn or
//! half-indexed.
//!
//! The writer is this same test binary re-run with `--exact crash_child_writer` and the store
//! directory in `MESH_MEMORY_CRASH_DIR`; every sixteenth step appends three episodes in one
//! `append_all`, which must land whole or not at all. It prints `ack episode <id>` / `ack graph <n>` after
//! each call returns `Ok`. Run without that variable, `crash_child_writer` checks a short
//! stream in-process.

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout
)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use mesh_memory::episodic::{Episodic, Kind, NewEpisode, Peer, Query};
use mesh_memory::graph::{Direction, Entity, Follow, Graph, Relation};
use mesh_store::DiskStore;
use mesh_types::Timestamp;

const DIR_VAR: &str = "MESH_MEMORY_CRASH_DIR";

/// Deterministic episode `i`: times out of order, a unique word `seqI`, and up to 3,000
/// bytes of filler so records straddle pages.
fn expected(i: u64) -> NewEpisode {
    let kind = match i % 3 {
        0 => Kind::MessageSent,
        1 => Kind::Observation,
        _ => Kind::Custom("alarm".into()),
    };
    let filler = "x".repeat((i.wrapping_mul(2654435761) % 3000) as usize);
    NewEpisode::new(
        Timestamp(1_000 + i.wrapping_mul(7919) % 500),
        Peer::new(format!("did:key:z6Mk{}", i % 5)).unwrap(),
        kind,
        format!("episode seq{i} group{} {filler}", i % 10),
    )
    .with("i", i.to_string())
}

fn node(n: u64) -> String {
    format!("n{n}")
}

fn write_stream(dir: &Path, max: u64, out: &mut impl Write) {
    let store = DiskStore::open(dir).unwrap();
    let mut episodes = Episodic::open(&store, "episodes").unwrap();
    let mut graph = Graph::open(&store, "graph").unwrap();
    let mut i = episodes.len();
    // The graph may lag the episodes by one step if the last run died between the two.
    let mut next_node = 0;
    while graph.contains(&node(next_node)).unwrap() {
        next_node += 1;
    }
    // ... or die between writing a node and its link.
    if next_node > 1 {
        let (a, b) = (node(next_node - 2), node(next_node - 1));
        graph.put_relation(&Relation::new(a, "next", b)).unwrap();
    }
    let end = i + max;
    while i < end {
        if i % 16 == 5 {
            // Three episodes in one atomic commit: indices 5, 6, 7 modulo 16.
            let batch = [expected(i), expected(i + 1), expected(i + 2)];
            assert_eq!(episodes.append_all(&batch).unwrap(), i);
            i += 2;
        } else {
            assert_eq!(episodes.append(&expected(i)).unwrap(), i);
        }
        writeln!(out, "ack episode {i}").unwrap();
        // Grow the chain n0 -> n1 -> ... by one node every third episode; node n is
        // written with its link from n - 1.
        while next_node <= i / 3 {
            let n = next_node;
            graph
                .put_entity(&Entity::new(node(n), "node").with("n", n.to_string()))
                .unwrap();
            if n > 0 {
                graph
                    .put_relation(&Relation::new(node(n - 1), "next", node(n)))
                    .unwrap();
            }
            writeln!(out, "ack graph {n}").unwrap();
            next_node += 1;
        }
        out.flush().unwrap();
        i += 1;
    }
}

fn verify(dir: &Path, acked_episode: Option<u64>, acked_graph: Option<u64>) -> u64 {
    let store = DiskStore::open(dir).unwrap();
    let episodes = Episodic::open(&store, "episodes").unwrap();
    let len = episodes.len();
    if let Some(a) = acked_episode {
        assert!(len > a, "{len} episodes but {a} was acknowledged");
    }
    assert!(
        !matches!(len % 16, 6 | 7),
        "{len} episodes: a three-episode batch was cut"
    );
    // Every episode present is exactly what was written, and reachable through every index.
    let mut from = 0;
    while from < len {
        let page = episodes.range(from, 500).unwrap();
        assert!(!page.is_empty(), "episodes missing from {from} below {len}");
        for e in &page {
            let want = expected(e.id);
            assert_eq!(
                (&e.at, &e.peer, &e.kind, &e.text, &e.metadata),
                (&want.at, &want.peer, &want.kind, &want.text, &want.metadata),
                "episode {} torn or wrong",
                e.id
            );
            let found = episodes
                .query(
                    &Query::newest(2)
                        .text(format!("seq{}", e.id))
                        .peer(want.peer.clone())
                        .kind(want.kind.clone())
                        .since(want.at)
                        .until(want.at),
                )
                .unwrap();
            assert_eq!(found.len(), 1, "episode {} not indexed", e.id);
            assert_eq!(found[0].id, e.id);
        }
        from = page.last().map_or(from, |e| e.id + 1);
    }
    assert!(episodes.get(len).unwrap().is_none());
    // The time list holds exactly the episodes.
    let all = episodes
        .query(&Query::newest(mesh_memory::episodic::MAX_LIMIT))
        .unwrap();
    if len <= mesh_memory::episodic::MAX_LIMIT as u64 {
        assert_eq!(all.len() as u64, len);
    }

    // The graph: a chain n0 -> n1 -> ... -> nK with consistent degrees.
    let graph = Graph::open(&store, "graph").unwrap();
    let mut n = 0;
    while graph.contains(&node(n)).unwrap() {
        let (out, inn) = graph.degree(&node(n)).unwrap();
        let outs = graph
            .neighbours(&node(n), Follow::direction(Direction::Out), 10)
            .unwrap();
        let ins = graph
            .neighbours(&node(n), Follow::direction(Direction::In), 10)
            .unwrap();
        assert_eq!((out, inn), (outs.len() as u64, ins.len() as u64), "n{n}");
        if inn == 0 && n > 0 {
            // Only the newest node may lack its link, and only if it was not acknowledged.
            assert!(
                !graph.contains(&node(n + 1)).unwrap(),
                "n{n} lacks its link"
            );
            assert!(acked_graph < Some(n), "acknowledged n{n} lacks its link");
        } else {
            assert_eq!(inn, u64::from(n > 0), "n{n}");
        }
        n += 1;
    }
    let nodes = graph.entities_of_type("node", None, 10_000).unwrap();
    assert_eq!(nodes.len() as u64, n, "an entity beyond the chain");
    if let Some(a) = acked_graph {
        assert!(n > a, "graph holds n0..n{n} but n{a} was acknowledged");
        if a > 0 {
            let path = graph
                .shortest_path(&node(0), &node(a.min(16)), 16, Follow::ALL)
                .unwrap()
                .unwrap();
            assert_eq!(path.edges.len() as u64, a.min(16));
        }
    }
    len
}

fn parse_acks<'a>(lines: impl Iterator<Item = &'a str>) -> (Option<u64>, Option<u64>) {
    let (mut episode, mut graph) = (None, None);
    for line in lines {
        let parts: Vec<&str> = line.split_whitespace().collect();
        match parts.as_slice() {
            ["ack", "episode", n] => episode = n.parse().ok().or(episode),
            ["ack", "graph", n] => graph = n.parse().ok().or(graph),
            _ => {}
        }
    }
    (episode, graph)
}

#[test]
fn crash_child_writer() {
    match std::env::var_os(DIR_VAR) {
        Some(dir) => write_stream(Path::new(&dir), 1_000_000, &mut std::io::stdout().lock()),
        None => {
            let dir = tempfile::tempdir().unwrap();
            let mut acks = Vec::new();
            write_stream(dir.path(), 40, &mut acks);
            let (e, g) = parse_acks(std::str::from_utf8(&acks).unwrap().lines());
            assert_eq!(
                (e, g),
                (Some(39), Some(13)),
                "{}",
                String::from_utf8_lossy(&acks)
            );
            assert_eq!(verify(dir.path(), e, g), 40);
        }
    }
}

#[test]
fn sigkill_mid_stream_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let (mut acked_episode, mut acked_graph) = (None::<u64>, None::<u64>);
    // Kill points vary from round to round, including right at start-up.
    for (round, kill_after) in [1usize, 600, 37, 1200, 3, 450, 64, 900, 250, 777]
        .into_iter()
        .enumerate()
    {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash_child_writer",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(DIR_VAR, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut reader = BufReader::new(stdout);
        let mut lines = Vec::new();
        let mut line = String::new();
        let mut acks = 0;
        while acks < kill_after {
            line.clear();
            if reader.read_line(&mut line).unwrap() == 0 {
                panic!("writer exited early in round {round}: {lines:?}");
            }
            if line.starts_with("ack") {
                acks += 1;
            }
            lines.push(line.clone());
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // Acks written before the kill are still in the pipe.
        for rest in reader.lines() {
            lines.push(rest.unwrap());
        }
        let (e, g) = parse_acks(lines.iter().map(String::as_str));
        acked_episode = acked_episode.max(e);
        acked_graph = acked_graph.max(g);
        verify(dir.path(), acked_episode, acked_graph);
    }
    assert!(
        acked_episode.unwrap_or(0) > 2000,
        "the writer made too little progress to test anything: {acked_episode:?}"
    );
}
