//! The replicated client table: which requests were executed, so each executes once.
//!
//! Part of the replicated state: every replica applies the same blocks in the same order, so
//! every table is the same. Bounded twice: `window` ids per client (older ids count as
//! executed, so clients number requests increasingly) and `max_clients` clients (the least
//! recently active one is forgotten first, deterministically).

use std::collections::BTreeSet;

use mesh_types::NodeId;

use crate::FastMap;

/// `last_active` of an entry not yet in the activity index.
const NEVER: u64 = u64::MAX;

#[derive(Debug, Clone, Default)]
struct Entry {
    /// Every id at or below `floor` counts as executed.
    floor: Option<u64>,
    recent: BTreeSet<u64>,
    last_active: u64,
}

#[derive(Debug, Clone)]
pub(crate) struct ClientTable {
    entries: FastMap<NodeId, Entry>,
    by_activity: BTreeSet<(u64, NodeId)>,
    window: usize,
    max_clients: usize,
}

impl ClientTable {
    pub(crate) fn new(window: usize, max_clients: usize) -> Self {
        Self {
            entries: FastMap::default(),
            by_activity: BTreeSet::new(),
            window: window.max(1),
            max_clients: max_clients.max(1),
        }
    }

    pub(crate) fn is_executed(&self, client: &NodeId, id: u64) -> bool {
        self.entries
            .get(client)
            .is_some_and(|e| e.floor.is_some_and(|f| id <= f) || e.recent.contains(&id))
    }

    /// Records `(client, id)` as executed at height `seq`; false if it already was. One map
    /// lookup per request; the activity index moves once per client and block.
    pub(crate) fn execute(&mut self, client: NodeId, id: u64, seq: u64) -> bool {
        if !self.entries.contains_key(&client)
            && self.entries.len() >= self.max_clients
            && let Some((_, oldest)) = self.by_activity.pop_first()
        {
            self.entries.remove(&oldest);
        }
        let e = self.entries.entry(client).or_insert_with(|| Entry {
            floor: None,
            recent: BTreeSet::new(),
            last_active: NEVER,
        });
        if e.floor.is_some_and(|f| id <= f) || !e.recent.insert(id) {
            return false;
        }
        while e.recent.len() > self.window {
            if let Some(first) = e.recent.pop_first() {
                e.floor = Some(e.floor.map_or(first, |f| f.max(first)));
            }
        }
        if e.last_active != seq {
            if e.last_active != NEVER {
                self.by_activity.remove(&(e.last_active, client));
            }
            e.last_active = seq;
            self.by_activity.insert((seq, client));
        }
        true
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_request_executes_once_within_bounds() {
        let mut t = ClientTable::new(3, 2);
        let a = NodeId([1; 32]);
        let b = NodeId([2; 32]);
        let c = NodeId([3; 32]);
        assert!(t.execute(a, 5, 1));
        assert!(!t.execute(a, 5, 2));
        assert!(t.execute(a, 7, 2));
        assert!(t.execute(a, 6, 3));
        assert!(t.execute(a, 9, 3));
        // The window holds 3 ids: 5 fell below the floor and still counts as executed.
        assert!(t.is_executed(&a, 5));
        assert!(t.is_executed(&a, 4));
        assert!(!t.is_executed(&a, 8));
        assert!(t.execute(b, 1, 4));
        // A third client evicts the least recently active one (a, last active at 3).
        assert!(t.execute(c, 1, 5));
        assert_eq!(t.len(), 2);
        assert!(!t.is_executed(&a, 5));
        assert!(t.is_executed(&b, 1));
    }
}
