//! Model-based tests: random sequences of operations on episodic memory and on the knowledge
//! graph, with reopens in between, must agree with a plain in-memory model at every step; on
//! `DiskStore` (a few cases: every write is an fsync, every reopen reopens the database) and
//! on `MemStore` (many cases).

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use mesh_memory::Error;
use mesh_memory::episodic::{Episode, Episodic, Kind, NewEpisode, Peer, Query, tokens};
use mesh_memory::graph::{Direction, Entity, Follow, Graph, Relation};
use mesh_store::{DiskStore, MemStore, Store};
use mesh_types::Timestamp;
use proptest::prelude::*;

const WORDS: [&str; 8] = [
    "alpha", "Beta", "gamma", "delta", "ALPHA", "zeta", "eta", "théta",
];

fn peer(n: u8) -> Peer {
    Peer::new(format!("did:key:z{n}")).unwrap()
}

fn kind(n: u8) -> Kind {
    match n {
        0 => Kind::MessageSent,
        1 => Kind::ToolCall,
        _ => Kind::Custom(format!("k{n}")),
    }
}

#[derive(Debug, Clone)]
enum EpOp {
    Append {
        at: u64,
        peer: u8,
        kind: u8,
        words: Vec<usize>,
    },
    Query {
        since: Option<u64>,
        until: Option<u64>,
        peer: Option<u8>,
        kind: Option<u8>,
        words: Option<Vec<usize>>,
        limit: usize,
    },
    Get(u64),
    /// Several appends in one `append_all`.
    AppendAll(Vec<(u64, u8, u8, Vec<usize>)>),
    Reopen,
}

fn ep_op() -> impl Strategy<Value = EpOp> {
    prop_oneof![
        4 => (0..20u64, 0..3u8, 0..3u8, prop::collection::vec(0..WORDS.len(), 1..5))
            .prop_map(|(at, peer, kind, words)| EpOp::Append { at, peer, kind, words }),
        4 => (
            prop::option::of(0..20u64),
            prop::option::of(0..20u64),
            prop::option::of(0..3u8),
            prop::option::of(0..3u8),
            prop::option::of(prop::collection::vec(0..WORDS.len(), 1..3)),
            0..8usize,
        )
            .prop_map(|(since, until, peer, kind, words, limit)| EpOp::Query {
                since,
                until,
                peer,
                kind,
                words,
                limit,
            }),
        1 => (0..30u64).prop_map(EpOp::Get),
        1 => prop::collection::vec(
            (0..20u64, 0..3u8, 0..3u8, prop::collection::vec(0..WORDS.len(), 1..5)),
            0..5,
        )
        .prop_map(EpOp::AppendAll),
        1 => Just(EpOp::Reopen),
    ]
}

fn text(words: &[usize]) -> String {
    words
        .iter()
        .map(|&w| WORDS[w])
        .collect::<Vec<_>>()
        .join(", ")
}

fn as_episode(id: u64, e: &NewEpisode) -> Episode {
    Episode {
        id,
        at: e.at,
        peer: e.peer.clone(),
        kind: e.kind.clone(),
        text: e.text.clone(),
        metadata: e.metadata.clone(),
    }
}

fn model_query(model: &[NewEpisode], q: &Query) -> Vec<Episode> {
    let want: BTreeSet<String> = q
        .text
        .as_deref()
        .map(tokens)
        .unwrap_or_default()
        .into_iter()
        .collect();
    let mut hits: Vec<Episode> = model
        .iter()
        .enumerate()
        .filter(|(_, e)| q.since.is_none_or(|s| e.at >= s))
        .filter(|(_, e)| q.until.is_none_or(|u| e.at <= u))
        .filter(|(_, e)| q.peer.as_ref().is_none_or(|p| &e.peer == p))
        .filter(|(_, e)| q.kind.as_ref().is_none_or(|k| &e.kind == k))
        .filter(|(_, e)| {
            let have: BTreeSet<String> = tokens(&e.text).into_iter().collect();
            want.is_subset(&have)
        })
        .map(|(i, e)| as_episode(i as u64, e))
        .collect();
    hits.sort_by(|a, b| b.at.cmp(&a.at).then(b.id.cmp(&a.id)));
    hits.truncate(q.limit);
    hits
}

/// Runs `ops` against episodic memory in the store `open` returns, and against the model;
/// `Reopen` drops the memory and the store and calls `open` again.
fn check_episodic<S: Store>(open: impl Fn() -> S, ops: Vec<EpOp>) -> Result<(), TestCaseError> {
    let mut store = open();
    let mut memory = Episodic::open(&store, "episodes").unwrap();
    let mut model: Vec<NewEpisode> = Vec::new();
    for op in ops {
        match op {
            EpOp::Append {
                at,
                peer: p,
                kind: k,
                words,
            } => {
                let e = NewEpisode::new(Timestamp(at), peer(p), kind(k), text(&words))
                    .with("n", model.len().to_string());
                prop_assert_eq!(memory.append(&e).unwrap(), model.len() as u64);
                model.push(e);
            }
            EpOp::Query {
                since,
                until,
                peer: p,
                kind: k,
                words,
                limit,
            } => {
                let mut q = Query::newest(limit);
                q.since = since.map(Timestamp);
                q.until = until.map(Timestamp);
                q.peer = p.map(peer);
                q.kind = k.map(kind);
                q.text = words.map(|w| text(&w));
                prop_assert_eq!(
                    memory.query(&q).unwrap(),
                    model_query(&model, &q),
                    "{:?}",
                    q
                );
            }
            EpOp::AppendAll(items) => {
                let batch: Vec<NewEpisode> = items
                    .iter()
                    .enumerate()
                    .map(|(j, (at, p, k, words))| {
                        NewEpisode::new(Timestamp(*at), peer(*p), kind(*k), text(words))
                            .with("n", (model.len() + j).to_string())
                    })
                    .collect();
                prop_assert_eq!(memory.append_all(&batch).unwrap(), model.len() as u64);
                model.extend(batch);
            }
            EpOp::Get(id) => {
                let want = model.get(id as usize).map(|e| as_episode(id, e));
                prop_assert_eq!(memory.get(id).unwrap(), want);
            }
            EpOp::Reopen => {
                drop(memory);
                drop(store);
                store = open();
                memory = Episodic::open(&store, "episodes").unwrap();
            }
        }
        prop_assert_eq!(memory.len(), model.len() as u64);
    }
    let all: Vec<Episode> = model
        .iter()
        .enumerate()
        .map(|(i, e)| as_episode(i as u64, e))
        .collect();
    prop_assert_eq!(memory.range(0, 1000).unwrap(), all);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    #[test]
    fn episodic_on_disk_agrees_with_a_model(ops in prop::collection::vec(ep_op(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        check_episodic(|| DiskStore::open(dir.path()).unwrap(), ops)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn episodic_in_memory_agrees_with_a_model(ops in prop::collection::vec(ep_op(), 1..80)) {
        let store = MemStore::new();
        check_episodic(|| store.clone(), ops)?;
    }
}

#[derive(Debug, Clone)]
enum GrOp {
    PutEntity(u8, u8),
    DeleteEntity(u8),
    PutRelation(u8, u8, u8, u8),
    DeleteRelation(u8, u8, u8),
    Neighbours(u8, u8, Option<u8>),
    Hood(u8, u32, u8),
    Path(u8, u8, u32, u8),
    OfType(u8),
    Reopen,
}

const N: u8 = 7;

fn gr_op() -> impl Strategy<Value = GrOp> {
    prop_oneof![
        3 => (0..N, 0..2u8).prop_map(|(a, b)| GrOp::PutEntity(a, b)),
        1 => (0..N).prop_map(GrOp::DeleteEntity),
        5 => (0..N, 0..2u8, 0..N, 0..3u8).prop_map(|(a, r, b, v)| GrOp::PutRelation(a, r, b, v)),
        1 => (0..N, 0..2u8, 0..N).prop_map(|(a, r, b)| GrOp::DeleteRelation(a, r, b)),
        2 => (0..N, 0..3u8, prop::option::of(0..2u8)).prop_map(|(a, d, r)| GrOp::Neighbours(a, d, r)),
        2 => (0..N, 0..4u32, 0..3u8).prop_map(|(a, k, d)| GrOp::Hood(a, k, d)),
        2 => (0..N, 0..N, 0..5u32, 0..3u8).prop_map(|(a, b, k, d)| GrOp::Path(a, b, k, d)),
        1 => (0..2u8).prop_map(GrOp::OfType),
        1 => Just(GrOp::Reopen),
    ]
}

fn id(n: u8) -> String {
    format!("e{n}")
}

fn rel(n: u8) -> String {
    ["knows", "owns"][n as usize].to_owned()
}

fn ty(n: u8) -> String {
    ["person", "thing"][n as usize].to_owned()
}

fn dir(n: u8) -> Direction {
    [Direction::Out, Direction::In, Direction::Both][n as usize]
}

#[derive(Default)]
struct GraphModel {
    entities: BTreeMap<String, String>,
    relations: BTreeMap<(String, String, String), String>,
}

impl GraphModel {
    /// Neighbour relations as (from, type, to, value): outgoing by (type, to), then incoming
    /// by (type, from).
    fn neighbours(
        &self,
        e: &str,
        d: Direction,
        r: Option<&str>,
    ) -> Vec<(String, String, String, String)> {
        let mut out = Vec::new();
        let pick = |(_, k, _): &(String, String, String)| r.is_none_or(|r| r == k);
        if matches!(d, Direction::Out | Direction::Both) {
            let mut v: Vec<_> = self
                .relations
                .iter()
                .filter(|(key, _)| key.0 == e && pick(key))
                .map(|((f, k, t), v)| (f.clone(), k.clone(), t.clone(), v.clone()))
                .collect();
            v.sort_by(|a, b| (&a.1, &a.2).cmp(&(&b.1, &b.2)));
            out.extend(v);
        }
        if matches!(d, Direction::In | Direction::Both) {
            let mut v: Vec<_> = self
                .relations
                .iter()
                .filter(|(key, _)| key.2 == e && pick(key))
                .map(|((f, k, t), v)| (f.clone(), k.clone(), t.clone(), v.clone()))
                .collect();
            v.sort_by(|a, b| (&a.1, &a.0).cmp(&(&b.1, &b.0)));
            out.extend(v);
        }
        out
    }

    fn other(e: &str, n: &(String, String, String, String)) -> String {
        if n.0 == e { n.2.clone() } else { n.0.clone() }
    }

    /// Distances from `e` up to `k` hops, `e` excluded.
    fn distances(&self, e: &str, k: u32, d: Direction) -> BTreeMap<String, u32> {
        let mut dist = BTreeMap::from([(e.to_owned(), 0)]);
        let mut queue = VecDeque::from([e.to_owned()]);
        while let Some(x) = queue.pop_front() {
            let dx = dist[&x];
            if dx >= k {
                continue;
            }
            for n in self.neighbours(&x, d, None) {
                let o = Self::other(&x, &n);
                if !dist.contains_key(&o) {
                    dist.insert(o.clone(), dx + 1);
                    queue.push_back(o);
                }
            }
        }
        dist.remove(e);
        dist
    }
}

/// Runs `ops` against the graph in the store `open` returns, and against the model;
/// `Reopen` drops the graph and the store and calls `open` again.
fn check_graph<S: Store>(open: impl Fn() -> S, ops: Vec<GrOp>) -> Result<(), TestCaseError> {
    let mut store = open();
    let mut g = Graph::open(&store, "graph").unwrap();
    let mut m = GraphModel::default();
    for op in ops {
        match op {
            GrOp::PutEntity(a, t) => {
                g.put_entity(&Entity::new(id(a), ty(t))).unwrap();
                m.entities.insert(id(a), ty(t));
            }
            GrOp::DeleteEntity(a) => {
                let held = m.entities.remove(&id(a)).is_some();
                m.relations
                    .retain(|(f, _, t), _| *f != id(a) && *t != id(a));
                prop_assert_eq!(g.delete_entity(&id(a)).unwrap(), held);
            }
            GrOp::PutRelation(a, r, b, v) => {
                let res =
                    g.put_relation(&Relation::new(id(a), rel(r), id(b)).with("v", v.to_string()));
                if m.entities.contains_key(&id(a)) && m.entities.contains_key(&id(b)) {
                    res.unwrap();
                    m.relations.insert((id(a), rel(r), id(b)), v.to_string());
                } else {
                    let missing_ok = matches!(res, Err(Error::UnknownEntity { .. }));
                    prop_assert!(missing_ok);
                }
            }
            GrOp::DeleteRelation(a, r, b) => {
                let held = m.relations.remove(&(id(a), rel(r), id(b))).is_some();
                prop_assert_eq!(g.delete_relation(&id(a), &rel(r), &id(b)).unwrap(), held);
            }
            GrOp::Neighbours(a, d, r) => {
                let r = r.map(rel);
                let follow = Follow {
                    direction: dir(d),
                    kind: r.as_deref(),
                };
                let got = g.neighbours(&id(a), follow, 100);
                if m.entities.contains_key(&id(a)) {
                    let got: Vec<_> = got
                        .unwrap()
                        .into_iter()
                        .map(|x| (x.from, x.kind, x.to, x.attributes["v"].clone()))
                        .collect();
                    prop_assert_eq!(got, m.neighbours(&id(a), dir(d), r.as_deref()));
                    let (o, i) = g.degree(&id(a)).unwrap();
                    prop_assert_eq!(o as usize, m.neighbours(&id(a), Direction::Out, None).len());
                    prop_assert_eq!(i as usize, m.neighbours(&id(a), Direction::In, None).len());
                } else {
                    let unknown = matches!(got, Err(Error::UnknownEntity { .. }));
                    prop_assert!(unknown);
                }
            }
            GrOp::Hood(a, k, d) => {
                let got = g.neighbourhood(&id(a), k, Follow::direction(dir(d)), 100);
                if m.entities.contains_key(&id(a)) {
                    let got = got.unwrap();
                    prop_assert!(!got.truncated);
                    let got: BTreeMap<String, u32> = got.entities.into_iter().collect();
                    prop_assert_eq!(got, m.distances(&id(a), k, dir(d)));
                } else {
                    let unknown = matches!(got, Err(Error::UnknownEntity { .. }));
                    prop_assert!(unknown);
                }
            }
            GrOp::Path(a, b, k, d) => {
                let got = g.shortest_path(&id(a), &id(b), k, Follow::direction(dir(d)));
                if m.entities.contains_key(&id(a)) && m.entities.contains_key(&id(b)) {
                    let got = got.unwrap();
                    let want = if a == b {
                        Some(0)
                    } else {
                        m.distances(&id(a), k, dir(d)).get(&id(b)).copied()
                    };
                    prop_assert_eq!(got.as_ref().map(|p| p.edges.len() as u32), want);
                    if let Some(p) = got {
                        // The path is a real walk from a to b.
                        prop_assert_eq!(p.entities.first(), Some(&id(a)));
                        prop_assert_eq!(p.entities.last(), Some(&id(b)));
                        for (step, e) in p.edges.iter().enumerate() {
                            prop_assert!(m.relations.contains_key(&(
                                e.from.clone(),
                                e.kind.clone(),
                                e.to.clone()
                            )));
                            let (x, y) = (&p.entities[step], &p.entities[step + 1]);
                            prop_assert!((&e.from, &e.to) == (x, y) || (&e.from, &e.to) == (y, x));
                        }
                    }
                } else {
                    let unknown = matches!(got, Err(Error::UnknownEntity { .. }));
                    prop_assert!(unknown);
                }
            }
            GrOp::OfType(t) => {
                let got: Vec<String> = g
                    .entities_of_type(&ty(t), None, 100)
                    .unwrap()
                    .into_iter()
                    .map(|e| e.id)
                    .collect();
                let want: Vec<String> = m
                    .entities
                    .iter()
                    .filter(|(_, k)| **k == ty(t))
                    .map(|(i, _)| i.clone())
                    .collect();
                prop_assert_eq!(got, want);
            }
            GrOp::Reopen => {
                drop(g);
                drop(store);
                store = open();
                g = Graph::open(&store, "graph").unwrap();
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    #[test]
    fn graph_on_disk_agrees_with_a_model(ops in prop::collection::vec(gr_op(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        check_graph(|| DiskStore::open(dir.path()).unwrap(), ops)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn graph_in_memory_agrees_with_a_model(ops in prop::collection::vec(gr_op(), 1..80)) {
        let store = MemStore::new();
        check_graph(|| store.clone(), ops)?;
    }
}
