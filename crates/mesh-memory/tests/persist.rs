//! Persistence on `DiskStore`: what is written survives dropping everything and reopening
//! the directory, and records damaged at rest (well-formed for the store, malformed for the
//! memory) come back as typed errors, never data and never a panic.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use mesh_memory::Error;
use mesh_memory::episodic::{Episodic, Kind, NewEpisode, Peer, Query};
use mesh_memory::graph::{Direction, Entity, Follow, Graph, Relation};
use mesh_store::{DiskStore, Kv, Store};
use mesh_types::{ErrorKind, HasKind, Timestamp};

fn peer(n: u32) -> Peer {
    Peer::new(format!("did:key:z6Mk{n}")).unwrap()
}

#[test]
fn reopen_after_drop_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = DiskStore::open(dir.path()).unwrap();
        let mut episodes = Episodic::open(&store, "episodes").unwrap();
        for i in 0..50u64 {
            let e = NewEpisode::new(
                Timestamp(10_000 - i * 10),
                peer((i % 4) as u32),
                if i % 2 == 0 {
                    Kind::MessageReceived
                } else {
                    Kind::ToolResult
                },
                format!(
                    "report {i}: the {} service is {}",
                    ["db", "web"][(i % 2) as usize],
                    ["up", "down"][(i % 5 == 0) as usize]
                ),
            )
            .with("seq", i.to_string());
            assert_eq!(episodes.append(&e).unwrap(), i);
        }
        let mut graph = Graph::open(&store, "graph").unwrap();
        graph
            .put_entity(&Entity::new("agent:1", "agent").with("role", "planner"))
            .unwrap();
        graph.put_entity(&Entity::new("svc:db", "service")).unwrap();
        graph
            .put_entity(&Entity::new("svc:web", "service"))
            .unwrap();
        graph
            .put_relation(&Relation::new("agent:1", "monitors", "svc:db").with("every", "60s"))
            .unwrap();
        graph
            .put_relation(&Relation::new("svc:web", "depends_on", "svc:db"))
            .unwrap();
    }
    let store = DiskStore::open(dir.path()).unwrap();
    let mut episodes = Episodic::open(&store, "episodes").unwrap();
    assert_eq!(episodes.len(), 50);
    let e7 = episodes.get(7).unwrap().unwrap();
    assert_eq!(e7.metadata["seq"], "7");
    assert_eq!(e7.kind, Kind::ToolResult);
    // Full text, AND semantics, newest first (earlier appends are newer here).
    let down_db: Vec<u64> = episodes
        .query(&Query::newest(100).text("DB down"))
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(down_db, [0, 10, 20, 30, 40]);
    let by_peer: Vec<u64> = episodes
        .query(&Query::newest(3).peer(peer(1)).kind(Kind::ToolResult))
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(by_peer, [1, 5, 9]);
    let window: Vec<u64> = episodes
        .query(
            &Query::newest(100)
                .since(Timestamp(9_800))
                .until(Timestamp(9_850)),
        )
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(window, [15, 16, 17, 18, 19, 20]);
    assert_eq!(
        episodes
            .append(&NewEpisode::new(
                Timestamp(1),
                peer(9),
                Kind::Thought,
                "after reopen"
            ))
            .unwrap(),
        50
    );

    let graph = Graph::open(&store, "graph").unwrap();
    assert_eq!(
        graph.entity("agent:1").unwrap().unwrap().attributes["role"],
        "planner"
    );
    let into_db = graph
        .neighbours("svc:db", Follow::direction(Direction::In), 10)
        .unwrap();
    assert_eq!(into_db.len(), 2);
    assert_eq!(into_db[1].attributes["every"], "60s"); // "depends_on" < "monitors"
    let path = graph
        .shortest_path("agent:1", "svc:web", 4, Follow::ALL)
        .unwrap()
        .unwrap();
    assert_eq!(path.entities, ["agent:1", "svc:db", "svc:web"]);
    assert_eq!(
        graph.entities_of_type("service", None, 10).unwrap().len(),
        2
    );
}

#[test]
fn malformed_records_on_disk_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = DiskStore::open(dir.path()).unwrap();
        let mut episodes = Episodic::open(&store, "episodes").unwrap();
        episodes
            .append(&NewEpisode::new(
                Timestamp(5),
                peer(1),
                Kind::Observation,
                "hello",
            ))
            .unwrap();
        let mut graph = Graph::open(&store, "graph").unwrap();
        graph.put_entity(&Entity::new("a", "t")).unwrap();
        // Damage as a buggy or hostile writer would: valid for the store, not for us.
        let ep = store.kv("episodes").unwrap();
        let mut key = vec![b'E'];
        key.extend_from_slice(&0u64.to_be_bytes());
        ep.put(&key, &[1, 5, 200]).unwrap(); // a peer length beyond the record
        store
            .kv("graph")
            .unwrap()
            .put(b"Na", &[1, 1, b'!', 0])
            .unwrap(); // a bad type name
    }
    let store = DiskStore::open(dir.path()).unwrap();
    let episodes = Episodic::open(&store, "episodes").unwrap();
    let err = episodes.get(0).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Corrupt {
                what: "episode",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.kind(), ErrorKind::Corrupt);
    let err = episodes.query(&Query::newest(5).text("hello")).unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    let graph = Graph::open(&store, "graph").unwrap();
    let err = graph.entity("a").unwrap_err();
    assert!(
        matches!(err, Error::Corrupt { what: "entity", .. }),
        "{err}"
    );
    assert_eq!(err.kind(), ErrorKind::Corrupt);

    // A count claiming fewer episodes than are stored is refused at open.
    store
        .kv("episodes")
        .unwrap()
        .put(b"Mnext", &[1, 0])
        .unwrap();
    assert!(matches!(
        Episodic::open(&store, "episodes"),
        Err(Error::Corrupt { .. })
    ));
    // A store error keeps its kind: a tree name the store refuses.
    let err = Episodic::open(&store, "Bad Name").unwrap_err();
    assert!(matches!(err, Error::Store { .. }), "{err}");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}
