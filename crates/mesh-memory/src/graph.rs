//! The knowledge graph: typed entities and typed directed relations, persisted.
//!
//! An [`Entity`] has an id (1 to [`MAX_ID_BYTES`] bytes of text without control
//! characters), a type (a name: `[A-Za-z0-9_.:-]`, 1 to 64 bytes) and bounded attributes. A
//! [`Relation`] goes from one entity to another with a type and its own attributes; there is
//! at most one relation of a given type from one entity to another. Each entity has at most
//! [`MAX_DEGREE`] outgoing and [`MAX_DEGREE`] incoming relations, which bounds every
//! neighbour scan and makes deleting an entity one bounded batch.
//!
//! # Layout and atomicity
//!
//! One [`Kv`] tree; NUL separates the parts of a key (no id or name may contain it):
//!
//! | key | value |
//! |---|---|
//! | `N` id | the entity: type and attributes |
//! | `Y` type `0x00` id | — (entities by type) |
//! | `D` id | its out- and in-degree |
//! | `O` from `0x00` type `0x00` to | the relation's attributes (outgoing adjacency) |
//! | `I` to `0x00` type `0x00` from | — (incoming adjacency) |
//!
//! Every mutation (putting or deleting an entity or a relation) is **one atomic
//! [`Kv::apply`] batch**: both adjacency entries and both degree counters of a relation
//! change together, and deleting an entity removes its record, its type entry and every
//! relation touching it, at both ends, in the same batch. One value of [`Graph`] must be the
//! only writer of its tree.
//!
//! # Queries
//!
//! [`Graph::neighbours`] (by direction and relation type), [`Graph::neighbourhood`] (the
//! entities within `k` hops, breadth first), [`Graph::shortest_path`] (breadth first, bounded
//! depth and bounded number of entities visited) and [`Graph::entities_of_type`]. Results
//! are deterministic: neighbours come in key order (relation type, then the other id),
//! outgoing before incoming.
//!
//! ```
//! use mesh_memory::graph::{Entity, Follow, Graph, Relation};
//!
//! let store = mesh_store::MemStore::new(); // `DiskStore::open(dir)?` in a node
//! let mut graph = Graph::open(&store, "graph")?;
//! graph.put_entity(&Entity::new("alice", "person"))?;
//! graph.put_entity(&Entity::new("acme", "org").with("city", "Lyon"))?;
//! graph.put_relation(&Relation::new("alice", "works_at", "acme").with("since", "2024"))?;
//! let path = graph.shortest_path("acme", "alice", 3, Follow::ALL)?.expect("a path");
//! assert_eq!(path.entities, ["acme", "alice"]);
//! graph.delete_entity("acme")?; // and its relations, atomically
//! assert!(graph.neighbours("alice", Follow::ALL, 10)?.is_empty());
//! # Ok::<(), mesh_memory::Error>(())
//! ```

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::Bound;

use mesh_store::{Batch, Kv, Store};
use mesh_types::wire::{Reader, put_varint};

use crate::codec::{
    self, Attributes, DecodeError, check_name, check_pairs, check_text, put_pairs, put_str,
    read_pairs, read_str, read_version, store,
};
use crate::error::{Error, Result};

/// Longest entity id, in bytes.
pub const MAX_ID_BYTES: usize = 256;
/// Most outgoing, and most incoming, relations of one entity.
pub const MAX_DEGREE: u64 = 10_000;
/// Largest `limit` or `max_results` of a query.
pub const MAX_LIMIT: usize = 10_000;
/// Largest hop count of [`Graph::neighbourhood`] and depth of [`Graph::shortest_path`].
pub const MAX_HOPS: u32 = 16;
/// Most entities [`Graph::shortest_path`] may visit before giving up with
/// [`Error::BoundExceeded`].
pub const MAX_VISITED: usize = 100_000;

const TAG_ENTITY: u8 = b'N';
const TAG_TYPE: u8 = b'Y';
const TAG_DEGREE: u8 = b'D';
const TAG_OUT: u8 = b'O';
const TAG_IN: u8 = b'I';

/// A typed entity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entity {
    /// Its id, unique in the graph.
    pub id: String,
    /// Its type.
    pub kind: String,
    /// Its attributes (at most 32).
    pub attributes: Attributes,
}

impl Entity {
    /// An entity without attributes.
    pub fn new(id: impl Into<String>, kind: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            kind: kind.into(),
            attributes: Attributes::new(),
        }
    }

    /// Adds an attribute.
    #[must_use]
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.attributes.insert(key.into(), value.into());
        self
    }
}

/// A typed directed relation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    /// The entity it starts from.
    pub from: String,
    /// Its type.
    pub kind: String,
    /// The entity it points to.
    pub to: String,
    /// Its attributes (at most 32).
    pub attributes: Attributes,
}

impl Relation {
    /// A relation without attributes.
    pub fn new(from: impl Into<String>, kind: impl Into<String>, to: impl Into<String>) -> Self {
        Self {
            from: from.into(),
            kind: kind.into(),
            to: to.into(),
            attributes: Attributes::new(),
        }
    }

    /// Adds an attribute.
    #[must_use]
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.attributes.insert(key.into(), value.into());
        self
    }

    /// The relation without its attributes.
    pub fn edge(&self) -> Edge {
        Edge {
            from: self.from.clone(),
            kind: self.kind.clone(),
            to: self.to.clone(),
        }
    }
}

/// A relation's identity: from, type, to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Edge {
    /// The entity it starts from.
    pub from: String,
    /// Its type.
    pub kind: String,
    /// The entity it points to.
    pub to: String,
}

/// Which relations of an entity to follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Relations starting at the entity.
    Out,
    /// Relations pointing to the entity.
    In,
    /// Both (outgoing first).
    Both,
}

/// What [`Graph::neighbourhood`] found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Neighbourhood {
    /// Entity ids with their distance in hops (1 or more), breadth first.
    pub entities: Vec<(String, u32)>,
    /// Whether the search stopped at `max_results` with more entities in reach.
    pub truncated: bool,
}

/// A path found by [`Graph::shortest_path`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    /// The entities along the path, both ends included.
    pub entities: Vec<String>,
    /// The relations taken (as stored: a relation followed against its direction still
    /// reads `from` -> `to`); one fewer than `entities`.
    pub edges: Vec<Edge>,
}

/// Which relations a traversal follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Follow<'a> {
    /// The direction.
    pub direction: Direction,
    /// Only relations of this type, if set.
    pub kind: Option<&'a str>,
}

impl Follow<'_> {
    /// Every relation, in both directions.
    pub const ALL: Follow<'static> = Follow {
        direction: Direction::Both,
        kind: None,
    };

    /// Every relation in `direction`.
    pub fn direction(direction: Direction) -> Self {
        Self {
            direction,
            kind: None,
        }
    }
}

impl<'a> Follow<'a> {
    /// Relations of type `kind` in `direction`.
    pub fn only(direction: Direction, kind: &'a str) -> Self {
        Self {
            direction,
            kind: Some(kind),
        }
    }
}

/// The knowledge graph over one tree of a [`Store`]. See the [module docs](self).
#[derive(Debug)]
pub struct Graph<K> {
    kv: K,
}

impl<K: Kv> Graph<K> {
    /// Opens (creating if needed) the graph kept in `store`'s tree `tree`.
    pub fn open<S: Store<Kv = K>>(store: &S, tree: &str) -> Result<Self> {
        let kv = store
            .kv(tree)
            .map_err(store_err("opening the graph tree"))?;
        Ok(Self::from_kv(kv))
    }

    /// The graph kept in `kv`.
    pub fn from_kv(kv: K) -> Self {
        Self { kv }
    }

    /// Inserts `entity`, or replaces the entity with its id (its relations stay).
    pub fn put_entity(&mut self, entity: &Entity) -> Result<()> {
        check_id(&entity.id)?;
        check_name("entity type", &entity.kind)?;
        check_pairs("entity attributes", &entity.attributes)?;
        let mut batch = Batch::new();
        if let Some(old) = self.entity(&entity.id)?
            && old.kind != entity.kind
        {
            batch.delete(type_key(&old.kind, &entity.id));
        }
        batch.put(entity_key(&entity.id), encode_entity(entity));
        batch.put(type_key(&entity.kind, &entity.id), Vec::new());
        self.kv.apply(&batch).map_err(store("writing an entity"))
    }

    /// The entity `id`, if held.
    pub fn entity(&self, id: &str) -> Result<Option<Entity>> {
        check_id(id)?;
        let key = entity_key(id);
        match self.kv.get(&key).map_err(store("reading an entity"))? {
            Some(v) => decode_entity(id, &v)
                .map(Some)
                .map_err(|e| e.at("entity", &key)),
            None => Ok(None),
        }
    }

    /// Whether the entity `id` is held.
    pub fn contains(&self, id: &str) -> Result<bool> {
        check_id(id)?;
        Ok(self
            .kv
            .get(&entity_key(id))
            .map_err(store("reading an entity"))?
            .is_some())
    }

    /// Deletes the entity `id` and every relation from or to it, atomically. Returns whether
    /// it was held.
    pub fn delete_entity(&mut self, id: &str) -> Result<bool> {
        let Some(entity) = self.entity(id)? else {
            return Ok(false);
        };
        let mut batch = Batch::new();
        // Degree changes of the other ends: (out, in) decrements.
        let mut others: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for edge in self.edges(id, Direction::Out, None, MAX_DEGREE as usize + 1)? {
            batch.delete(out_key(&edge));
            batch.delete(in_key(&edge));
            if edge.to != id {
                others.entry(edge.to).or_default().1 += 1;
            }
        }
        for edge in self.edges(id, Direction::In, None, MAX_DEGREE as usize + 1)? {
            batch.delete(out_key(&edge));
            batch.delete(in_key(&edge));
            if edge.from != id {
                others.entry(edge.from).or_default().0 += 1;
            }
        }
        for (other, (dout, din)) in others {
            let (out, inn) = self.degree(&other)?;
            let out = out.checked_sub(dout);
            let inn = inn.checked_sub(din);
            let (Some(out), Some(inn)) = (out, inn) else {
                return Err(corrupt_degree(&other));
            };
            put_degree(&mut batch, &other, out, inn);
        }
        batch.delete(entity_key(id));
        batch.delete(type_key(&entity.kind, id));
        batch.delete(degree_key(id));
        self.kv.apply(&batch).map_err(store("deleting an entity"))?;
        Ok(true)
    }

    /// Inserts `relation`, or replaces the attributes of the relation with the same from,
    /// type and to. Both entities must be held.
    pub fn put_relation(&mut self, relation: &Relation) -> Result<()> {
        check_name("relation type", &relation.kind)?;
        check_pairs("relation attributes", &relation.attributes)?;
        for id in [&relation.from, &relation.to] {
            if !self.contains(id)? {
                return Err(Error::UnknownEntity { id: id.clone() });
            }
        }
        let edge = relation.edge();
        let okey = out_key(&edge);
        let mut batch = Batch::new();
        let exists = self
            .kv
            .get(&okey)
            .map_err(store("reading a relation"))?
            .is_some();
        if !exists {
            let (from_out, from_in) = self.degree(&edge.from)?;
            if from_out >= MAX_DEGREE {
                return Err(Error::BoundExceeded {
                    what: "out-degree",
                    max: MAX_DEGREE,
                });
            }
            if edge.from == edge.to {
                if from_in >= MAX_DEGREE {
                    return Err(Error::BoundExceeded {
                        what: "in-degree",
                        max: MAX_DEGREE,
                    });
                }
                put_degree(&mut batch, &edge.from, from_out + 1, from_in + 1);
            } else {
                let (to_out, to_in) = self.degree(&edge.to)?;
                if to_in >= MAX_DEGREE {
                    return Err(Error::BoundExceeded {
                        what: "in-degree",
                        max: MAX_DEGREE,
                    });
                }
                put_degree(&mut batch, &edge.from, from_out + 1, from_in);
                put_degree(&mut batch, &edge.to, to_out, to_in + 1);
            }
            batch.put(in_key(&edge), Vec::new());
        }
        batch.put(okey, encode_attributes(&relation.attributes));
        self.kv.apply(&batch).map_err(store("writing a relation"))
    }

    /// The relation `from` -`kind`-> `to`, if held.
    pub fn relation(&self, from: &str, kind: &str, to: &str) -> Result<Option<Relation>> {
        check_id(from)?;
        check_id(to)?;
        check_name("relation type", kind)?;
        let edge = Edge {
            from: from.to_owned(),
            kind: kind.to_owned(),
            to: to.to_owned(),
        };
        self.relation_of(edge)
    }

    fn relation_of(&self, edge: Edge) -> Result<Option<Relation>> {
        let key = out_key(&edge);
        match self.kv.get(&key).map_err(store("reading a relation"))? {
            Some(v) => {
                let attributes = decode_attributes(&v).map_err(|e| e.at("relation", &key))?;
                Ok(Some(Relation {
                    from: edge.from,
                    kind: edge.kind,
                    to: edge.to,
                    attributes,
                }))
            }
            None => Ok(None),
        }
    }

    /// Deletes the relation `from` -`kind`-> `to`; returns whether it was held.
    pub fn delete_relation(&mut self, from: &str, kind: &str, to: &str) -> Result<bool> {
        check_id(from)?;
        check_id(to)?;
        check_name("relation type", kind)?;
        let edge = Edge {
            from: from.to_owned(),
            kind: kind.to_owned(),
            to: to.to_owned(),
        };
        let okey = out_key(&edge);
        if self
            .kv
            .get(&okey)
            .map_err(store("reading a relation"))?
            .is_none()
        {
            return Ok(false);
        }
        let mut batch = Batch::new();
        batch.delete(okey);
        batch.delete(in_key(&edge));
        let (from_out, from_in) = self.degree(from)?;
        let from_out = from_out
            .checked_sub(1)
            .ok_or_else(|| corrupt_degree(from))?;
        if from == to {
            let from_in = from_in.checked_sub(1).ok_or_else(|| corrupt_degree(from))?;
            put_degree(&mut batch, from, from_out, from_in);
        } else {
            let (to_out, to_in) = self.degree(to)?;
            let to_in = to_in.checked_sub(1).ok_or_else(|| corrupt_degree(to))?;
            put_degree(&mut batch, from, from_out, from_in);
            put_degree(&mut batch, to, to_out, to_in);
        }
        self.kv
            .apply(&batch)
            .map_err(store("deleting a relation"))?;
        Ok(true)
    }

    /// The number of relations from and to `id`: `(out, in)`.
    pub fn degree(&self, id: &str) -> Result<(u64, u64)> {
        let key = degree_key(id);
        match self.kv.get(&key).map_err(store("reading a degree"))? {
            Some(v) => decode_degree(&v).map_err(|e| e.at("degree", &key)),
            None => Ok((0, 0)),
        }
    }

    /// Up to `limit` relations of `id` that `follow` selects, with their attributes:
    /// outgoing first, each direction in key order (relation type, then the other id).
    pub fn neighbours(&self, id: &str, follow: Follow<'_>, limit: usize) -> Result<Vec<Relation>> {
        check_limit(limit)?;
        self.require(id)?;
        if let Some(kind) = follow.kind {
            check_name("relation type", kind)?;
        }
        let mut out = Vec::new();
        for edge in self.edges(id, follow.direction, follow.kind, limit)? {
            let relation = self
                .relation_of(edge.clone())?
                .ok_or_else(|| Error::Corrupt {
                    what: "incoming relation",
                    key: codec::show_key(&in_key(&edge)),
                    detail: "no matching outgoing entry".into(),
                })?;
            out.push(relation);
        }
        Ok(out)
    }

    /// The entities within `hops` hops of `id` along the relations `follow` selects,
    /// breadth first (nearest first, then in neighbour order), `id` itself excluded; at most
    /// `max_results` of them.
    pub fn neighbourhood(
        &self,
        id: &str,
        hops: u32,
        follow: Follow<'_>,
        max_results: usize,
    ) -> Result<Neighbourhood> {
        check_hops(hops)?;
        check_limit(max_results)?;
        self.require(id)?;
        let mut found = Neighbourhood::default();
        let mut seen = BTreeSet::from([id.to_owned()]);
        let mut frontier = vec![id.to_owned()];
        for depth in 1..=hops {
            let mut next = Vec::new();
            for node in &frontier {
                for other in self.adjacent(node, follow)? {
                    if seen.contains(&other.1) {
                        continue;
                    }
                    if found.entities.len() >= max_results {
                        found.truncated = true;
                        return Ok(found);
                    }
                    seen.insert(other.1.clone());
                    found.entities.push((other.1.clone(), depth));
                    next.push(other.1);
                }
            }
            if next.is_empty() {
                break;
            }
            frontier = next;
        }
        Ok(found)
    }

    /// A shortest path from `from` to `to` of at most `max_depth` relations along those
    /// `follow` selects, or `None` if there is none that short. Breadth first; the first
    /// path found in neighbour order. Fails with [`Error::BoundExceeded`] if the search
    /// would visit more than [`MAX_VISITED`] entities.
    pub fn shortest_path(
        &self,
        from: &str,
        to: &str,
        max_depth: u32,
        follow: Follow<'_>,
    ) -> Result<Option<Path>> {
        check_hops(max_depth)?;
        self.require(from)?;
        self.require(to)?;
        if from == to {
            return Ok(Some(Path {
                entities: vec![from.to_owned()],
                edges: Vec::new(),
            }));
        }
        // Each reached entity's predecessor and the relation that reached it.
        let mut parent: BTreeMap<String, (String, Edge)> = BTreeMap::new();
        let mut queue = VecDeque::from([(from.to_owned(), 0u32)]);
        while let Some((node, depth)) = queue.pop_front() {
            if depth >= max_depth {
                continue;
            }
            for (edge, other) in self.adjacent(&node, follow)? {
                if other == from || parent.contains_key(&other) {
                    continue;
                }
                if parent.len() >= MAX_VISITED {
                    return Err(Error::BoundExceeded {
                        what: "entities visited",
                        max: MAX_VISITED as u64,
                    });
                }
                parent.insert(other.clone(), (node.clone(), edge));
                if other == to {
                    return Ok(Some(unwind(&parent, from, to)));
                }
                queue.push_back((other, depth + 1));
            }
        }
        Ok(None)
    }

    /// Up to `limit` entities of type `kind`, in id order, starting after `after` if given
    /// (for paging).
    pub fn entities_of_type(
        &self,
        kind: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Entity>> {
        check_name("entity type", kind)?;
        check_limit(limit)?;
        let prefix = type_key(kind, "");
        let start = match after {
            Some(a) => {
                check_id(a)?;
                Bound::Excluded(type_key(kind, a))
            }
            None => Bound::Included(prefix.clone()),
        };
        let end = codec::prefix_end(&prefix);
        let end = match &end {
            Some(e) => Bound::Excluded(e.as_slice()),
            None => Bound::Unbounded,
        };
        let rows = self
            .kv
            .scan(start.as_ref().map(Vec::as_slice), end, limit)
            .map_err(store("scanning entities by type"))?;
        let mut out = Vec::with_capacity(rows.len());
        for (key, _) in rows {
            let id = key
                .strip_prefix(prefix.as_slice())
                .and_then(|b| std::str::from_utf8(b).ok())
                .ok_or_else(|| Error::Corrupt {
                    what: "type entry",
                    key: codec::show_key(&key),
                    detail: "malformed key".into(),
                })?;
            let entity = self.entity(id)?.ok_or_else(|| Error::Corrupt {
                what: "type entry",
                key: codec::show_key(&key),
                detail: "names a missing entity".into(),
            })?;
            out.push(entity);
        }
        Ok(out)
    }

    fn require(&self, id: &str) -> Result<()> {
        if self.contains(id)? {
            Ok(())
        } else {
            Err(Error::UnknownEntity { id: id.to_owned() })
        }
    }

    /// Every relation `follow` selects from `node`, with the entity at its other end.
    fn adjacent(&self, node: &str, follow: Follow<'_>) -> Result<Vec<(Edge, String)>> {
        let edges = self.edges(node, follow.direction, follow.kind, 2 * MAX_DEGREE as usize)?;
        Ok(edges
            .into_iter()
            .map(|e| {
                let other = if e.from == node {
                    e.to.clone()
                } else {
                    e.from.clone()
                };
                (e, other)
            })
            .collect())
    }

    /// Up to `limit` relations of `id` in `direction`, optionally of one type, without
    /// attributes.
    fn edges(
        &self,
        id: &str,
        direction: Direction,
        kind: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Edge>> {
        let mut out = Vec::new();
        let tags: &[u8] = match direction {
            Direction::Out => &[TAG_OUT],
            Direction::In => &[TAG_IN],
            Direction::Both => &[TAG_OUT, TAG_IN],
        };
        for &tag in tags {
            let mut prefix = codec::key(tag, &[id.as_bytes()]);
            prefix.push(0);
            if let Some(k) = kind {
                prefix.extend_from_slice(k.as_bytes());
                prefix.push(0);
            }
            let rows = self
                .kv
                .scan_prefix(&prefix, limit - out.len())
                .map_err(store("scanning relations"))?;
            for (key, _) in rows {
                out.push(parse_adjacency(tag, &key)?);
            }
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }
}

fn unwind(parent: &BTreeMap<String, (String, Edge)>, from: &str, to: &str) -> Path {
    let mut entities = vec![to.to_owned()];
    let mut edges = Vec::new();
    let mut at = to;
    while at != from {
        let Some((prev, edge)) = parent.get(at) else {
            break;
        };
        edges.push(edge.clone());
        entities.push(prev.clone());
        at = prev;
    }
    entities.reverse();
    edges.reverse();
    Path { entities, edges }
}

fn store_err(op: &'static str) -> impl FnOnce(mesh_store::Error) -> Error {
    store(op)
}

fn check_id(id: &str) -> Result<()> {
    check_text("entity id", id, MAX_ID_BYTES, false)
}

fn check_limit(limit: usize) -> Result<()> {
    if limit > MAX_LIMIT {
        return Err(Error::BoundExceeded {
            what: "limit",
            max: MAX_LIMIT as u64,
        });
    }
    Ok(())
}

fn check_hops(hops: u32) -> Result<()> {
    if hops > MAX_HOPS {
        return Err(Error::BoundExceeded {
            what: "hops",
            max: u64::from(MAX_HOPS),
        });
    }
    Ok(())
}

fn corrupt_degree(id: &str) -> Error {
    Error::Corrupt {
        what: "degree",
        key: codec::show_key(&degree_key(id)),
        detail: "lower than the relations it counts".into(),
    }
}

fn entity_key(id: &str) -> Vec<u8> {
    codec::key(TAG_ENTITY, &[id.as_bytes()])
}

fn type_key(kind: &str, id: &str) -> Vec<u8> {
    codec::key(TAG_TYPE, &[kind.as_bytes(), id.as_bytes()])
}

fn degree_key(id: &str) -> Vec<u8> {
    codec::key(TAG_DEGREE, &[id.as_bytes()])
}

fn out_key(e: &Edge) -> Vec<u8> {
    codec::key(
        TAG_OUT,
        &[e.from.as_bytes(), e.kind.as_bytes(), e.to.as_bytes()],
    )
}

fn in_key(e: &Edge) -> Vec<u8> {
    codec::key(
        TAG_IN,
        &[e.to.as_bytes(), e.kind.as_bytes(), e.from.as_bytes()],
    )
}

/// Reads an `O` or `I` key back into its relation.
fn parse_adjacency(tag: u8, key: &[u8]) -> Result<Edge> {
    let bad = || Error::Corrupt {
        what: "relation",
        key: codec::show_key(key),
        detail: "malformed key".into(),
    };
    let rest = key.strip_prefix(&[tag]).ok_or_else(bad)?;
    let mut parts = rest.split(|&b| b == 0);
    let (Some(a), Some(kind), Some(b), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    let text = |p: &[u8]| std::str::from_utf8(p).map(str::to_owned).map_err(|_| bad());
    let (a, kind, b) = (text(a)?, text(kind)?, text(b)?);
    if check_id(&a).is_err() || check_id(&b).is_err() || check_name("relation type", &kind).is_err()
    {
        return Err(bad());
    }
    Ok(if tag == TAG_OUT {
        Edge {
            from: a,
            kind,
            to: b,
        }
    } else {
        Edge {
            from: b,
            kind,
            to: a,
        }
    })
}

fn put_degree(batch: &mut Batch, id: &str, out: u64, inn: u64) {
    if out == 0 && inn == 0 {
        batch.delete(degree_key(id));
    } else {
        let mut v = vec![codec::RECORD_VERSION];
        put_varint(&mut v, out);
        put_varint(&mut v, inn);
        batch.put(degree_key(id), v);
    }
}

fn decode_degree(bytes: &[u8]) -> Result<(u64, u64), DecodeError> {
    let mut r = Reader::new(bytes);
    read_version(&mut r)?;
    let out = r.varint()?;
    let inn = r.varint()?;
    r.finish()?;
    if out > MAX_DEGREE || inn > MAX_DEGREE {
        return Err(DecodeError::Invalid("degree above the bound".into()));
    }
    Ok((out, inn))
}

fn encode_entity(e: &Entity) -> Vec<u8> {
    let mut out = vec![codec::RECORD_VERSION];
    put_str(&mut out, &e.kind);
    put_pairs(&mut out, &e.attributes);
    out
}

fn decode_entity(id: &str, bytes: &[u8]) -> Result<Entity, DecodeError> {
    let mut r = Reader::new(bytes);
    read_version(&mut r)?;
    let kind = read_str(&mut r, "entity type", codec::MAX_NAME_BYTES)?.to_owned();
    check_name("entity type", &kind)?;
    let attributes = read_pairs(&mut r, "entity attributes")?;
    r.finish()?;
    Ok(Entity {
        id: id.to_owned(),
        kind,
        attributes,
    })
}

fn encode_attributes(a: &Attributes) -> Vec<u8> {
    let mut out = vec![codec::RECORD_VERSION];
    put_pairs(&mut out, a);
    out
}

fn decode_attributes(bytes: &[u8]) -> Result<Attributes, DecodeError> {
    let mut r = Reader::new(bytes);
    read_version(&mut r)?;
    let a = read_pairs(&mut r, "relation attributes")?;
    r.finish()?;
    Ok(a)
}

#[cfg(test)]
mod tests {
    use mesh_store::MemStore;

    use super::*;

    fn graph() -> (MemStore, Graph<mesh_store::MemKv>) {
        let store = MemStore::new();
        let g = Graph::open(&store, "graph").unwrap();
        (store, g)
    }

    fn ids(n: &Neighbourhood) -> Vec<(&str, u32)> {
        n.entities.iter().map(|(i, d)| (i.as_str(), *d)).collect()
    }

    /// alice -knows-> bob -knows-> carol -works_at-> acme; alice -works_at-> acme;
    /// dave alone.
    fn sample(g: &mut Graph<mesh_store::MemKv>) {
        for (id, kind) in [
            ("alice", "person"),
            ("bob", "person"),
            ("carol", "person"),
            ("dave", "person"),
            ("acme", "org"),
        ] {
            g.put_entity(&Entity::new(id, kind).with("name", id))
                .unwrap();
        }
        for (a, r, b) in [
            ("alice", "knows", "bob"),
            ("bob", "knows", "carol"),
            ("carol", "works_at", "acme"),
            ("alice", "works_at", "acme"),
        ] {
            g.put_relation(&Relation::new(a, r, b).with("since", "2024"))
                .unwrap();
        }
    }

    #[test]
    fn entities_relations_and_neighbours() {
        let (_s, mut g) = graph();
        sample(&mut g);
        let alice = g.entity("alice").unwrap().unwrap();
        assert_eq!(alice.kind, "person");
        assert_eq!(alice.attributes["name"], "alice");
        assert_eq!(g.degree("alice").unwrap(), (2, 0));
        assert_eq!(g.degree("acme").unwrap(), (0, 2));

        let out = g
            .neighbours("alice", Follow::direction(Direction::Out), 10)
            .unwrap();
        let to: Vec<&str> = out.iter().map(|r| r.to.as_str()).collect();
        assert_eq!(to, ["bob", "acme"]); // "knows" < "works_at"
        assert_eq!(out[0].attributes["since"], "2024");
        let into = g
            .neighbours("acme", Follow::direction(Direction::In), 10)
            .unwrap();
        let from: Vec<&str> = into.iter().map(|r| r.from.as_str()).collect();
        assert_eq!(from, ["alice", "carol"]);
        assert_eq!(into[0].attributes["since"], "2024");
        let knows = g
            .neighbours("bob", Follow::only(Direction::Both, "knows"), 10)
            .unwrap();
        assert_eq!(knows.len(), 2);
        assert_eq!(g.neighbours("bob", Follow::ALL, 1).unwrap().len(), 1);
        assert!(matches!(
            g.neighbours("zed", Follow::ALL, 1),
            Err(Error::UnknownEntity { .. })
        ));
        assert!(matches!(
            g.put_relation(&Relation::new("alice", "knows", "zed")),
            Err(Error::UnknownEntity { id }) if id == "zed"
        ));

        // Replacing attributes does not double-count.
        g.put_relation(&Relation::new("alice", "knows", "bob").with("since", "2020"))
            .unwrap();
        assert_eq!(g.degree("alice").unwrap(), (2, 0));
        assert_eq!(
            g.relation("alice", "knows", "bob")
                .unwrap()
                .unwrap()
                .attributes["since"],
            "2020"
        );

        // Type change moves the type entry.
        g.put_entity(&Entity::new("dave", "robot")).unwrap();
        let people: Vec<String> = g
            .entities_of_type("person", None, 10)
            .unwrap()
            .into_iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(people, ["alice", "bob", "carol"]);
        let page: Vec<String> = g
            .entities_of_type("person", Some("alice"), 1)
            .unwrap()
            .into_iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(page, ["bob"]);
        assert_eq!(g.entities_of_type("robot", None, 10).unwrap()[0].id, "dave");
    }

    #[test]
    fn hops_and_paths() {
        let (_s, mut g) = graph();
        sample(&mut g);
        let n = g
            .neighbourhood("alice", 1, Follow::direction(Direction::Out), 100)
            .unwrap();
        assert_eq!(ids(&n), [("bob", 1), ("acme", 1)]);
        let n = g
            .neighbourhood("alice", 2, Follow::direction(Direction::Out), 100)
            .unwrap();
        assert_eq!(ids(&n), [("bob", 1), ("acme", 1), ("carol", 2)]);
        let n = g
            .neighbourhood("acme", 3, Follow::direction(Direction::In), 100)
            .unwrap();
        assert_eq!(ids(&n), [("alice", 1), ("carol", 1), ("bob", 2)]);
        let n = g.neighbourhood("alice", 5, Follow::ALL, 2).unwrap();
        assert_eq!(n.entities.len(), 2);
        assert!(n.truncated);
        assert!(
            g.neighbourhood("dave", 3, Follow::ALL, 10)
                .unwrap()
                .entities
                .is_empty()
        );

        let p = g
            .shortest_path("alice", "carol", 5, Follow::direction(Direction::Out))
            .unwrap()
            .unwrap();
        assert_eq!(p.entities, ["alice", "bob", "carol"]);
        assert_eq!(p.edges.len(), 2);
        assert_eq!(p.edges[1].kind, "knows");
        // Against the direction: carol -> acme <- alice.
        let p = g
            .shortest_path("carol", "alice", 5, Follow::ALL)
            .unwrap()
            .unwrap();
        assert_eq!(p.entities, ["carol", "acme", "alice"]); // outgoing first
        assert_eq!(
            g.shortest_path("carol", "alice", 5, Follow::direction(Direction::Out))
                .unwrap(),
            None
        );
        assert_eq!(
            g.shortest_path("alice", "carol", 1, Follow::ALL).unwrap(),
            None
        );
        assert_eq!(
            g.shortest_path("alice", "dave", 16, Follow::ALL).unwrap(),
            None
        );
        assert_eq!(
            g.shortest_path("alice", "alice", 0, Follow::ALL)
                .unwrap()
                .unwrap()
                .entities,
            ["alice"]
        );
        let p = g
            .shortest_path("alice", "carol", 5, Follow::only(Direction::Out, "knows"))
            .unwrap()
            .unwrap();
        assert_eq!(p.edges.len(), 2);
        assert!(matches!(
            g.shortest_path("alice", "carol", MAX_HOPS + 1, Follow::ALL),
            Err(Error::BoundExceeded { what: "hops", .. })
        ));
    }

    #[test]
    fn deleting_an_entity_removes_its_relations() {
        let (store, mut g) = graph();
        sample(&mut g);
        g.put_relation(&Relation::new("bob", "likes", "bob"))
            .unwrap(); // a self-loop
        g.put_relation(&Relation::new("carol", "knows", "bob"))
            .unwrap();
        assert_eq!(g.degree("bob").unwrap(), (2, 3));
        assert!(g.delete_entity("bob").unwrap());
        assert!(!g.delete_entity("bob").unwrap());
        assert_eq!(g.entity("bob").unwrap(), None);
        assert_eq!(g.degree("alice").unwrap(), (1, 0));
        assert_eq!(g.degree("carol").unwrap(), (1, 0));
        assert_eq!(g.degree("bob").unwrap(), (0, 0));
        assert!(
            g.neighbours("alice", Follow::ALL, 10)
                .unwrap()
                .iter()
                .all(|r| r.to != "bob")
        );
        // No key mentioning bob is left.
        let kv = store.kv("graph").unwrap();
        for (k, _) in kv.scan(Bound::Unbounded, Bound::Unbounded, 1000).unwrap() {
            assert!(
                !k.windows(3).any(|w| w == b"bob"),
                "{}",
                codec::show_key(&k)
            );
        }
        assert!(g.delete_relation("alice", "works_at", "acme").unwrap());
        assert!(!g.delete_relation("alice", "works_at", "acme").unwrap());
        assert_eq!(g.degree("acme").unwrap(), (0, 1));
    }

    #[test]
    fn bad_input_and_bounds() {
        let (_s, mut g) = graph();
        assert!(matches!(
            g.put_entity(&Entity::new("", "t")),
            Err(Error::Empty { .. })
        ));
        assert!(matches!(
            g.put_entity(&Entity::new("a\0b", "t")),
            Err(Error::BadName { .. })
        ));
        assert!(matches!(
            g.put_entity(&Entity::new("x".repeat(MAX_ID_BYTES + 1), "t")),
            Err(Error::TooLong { .. })
        ));
        assert!(matches!(
            g.put_entity(&Entity::new("a", "bad type")),
            Err(Error::BadName { .. })
        ));
        let mut e = Entity::new("a", "t");
        for i in 0..33 {
            e = e.with(format!("k{i}"), "v");
        }
        assert!(matches!(g.put_entity(&e), Err(Error::TooMany { .. })));
        g.put_entity(&Entity::new("a", "t")).unwrap();
        assert!(matches!(
            g.neighbours("a", Follow::ALL, MAX_LIMIT + 1),
            Err(Error::BoundExceeded { .. })
        ));
        assert!(matches!(
            g.neighbourhood("a", MAX_HOPS + 1, Follow::ALL, 1),
            Err(Error::BoundExceeded { .. })
        ));
        assert!(matches!(
            g.put_relation(&Relation::new("a", "", "a")),
            Err(Error::Empty { .. })
        ));
    }

    #[test]
    fn degree_bound() {
        let (_s, mut g) = graph();
        g.put_entity(&Entity::new("hub", "t")).unwrap();
        g.put_entity(&Entity::new("x", "t")).unwrap();
        // Pretend the hub is full.
        let mut b = Batch::new();
        put_degree(&mut b, "hub", MAX_DEGREE, MAX_DEGREE);
        g.kv.apply(&b).unwrap();
        assert!(matches!(
            g.put_relation(&Relation::new("hub", "r", "x")),
            Err(Error::BoundExceeded {
                what: "out-degree",
                ..
            })
        ));
        assert!(matches!(
            g.put_relation(&Relation::new("x", "r", "hub")),
            Err(Error::BoundExceeded {
                what: "in-degree",
                ..
            })
        ));
    }

    proptest::proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..100)) {
            let _ = decode_entity("x", &bytes);
            let _ = decode_attributes(&bytes);
            let _ = decode_degree(&bytes);
            let _ = parse_adjacency(TAG_OUT, &bytes);
            let _ = parse_adjacency(TAG_IN, &bytes);
        }
    }

    #[test]
    fn corrupt_records_are_typed_errors() {
        let (store, mut g) = graph();
        sample(&mut g);
        let kv = store.kv("graph").unwrap();
        for bad in [&[][..], &[7], &[1, 5, b'p'], &[1, 1, b'p', 0, 9]] {
            kv.put(&entity_key("alice"), bad).unwrap();
            assert!(
                matches!(
                    g.entity("alice"),
                    Err(Error::Corrupt { what: "entity", .. })
                ),
                "{bad:?}"
            );
        }
        kv.put(
            &out_key(&Relation::new("bob", "knows", "carol").edge()),
            &[1, 3],
        )
        .unwrap();
        assert!(matches!(
            g.neighbours("bob", Follow::direction(Direction::Out), 10),
            Err(Error::Corrupt {
                what: "relation",
                ..
            })
        ));
        kv.put(&degree_key("carol"), &[1, 0x80]).unwrap();
        assert!(matches!(
            g.degree("carol"),
            Err(Error::Corrupt { what: "degree", .. })
        ));
        kv.put(b"Ocarol\0knows", b"").unwrap();
        assert!(matches!(
            g.neighbourhood("carol", 1, Follow::ALL, 10),
            Err(Error::Corrupt { .. })
        ));
    }
}
