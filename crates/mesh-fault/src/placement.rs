//! Replica placement by rendezvous (highest-random-weight) hashing (Thaler and Ravishankar,
//! 1998), and the repair plan when holders come and go.
//!
//! Every (content, member) pair gets a score, the first 8 bytes of
//! `BLAKE3("mesh-fault/placement/v1" || content || member)` read little-endian; a content's
//! `k` holders are the `k` live members with the highest scores (ties, which need a hash
//! collision, go to the smaller id). Every member computes the same holders from the same
//! live set with no coordination, and when one member leaves only the contents it held
//! move (each to exactly one new holder); when one joins, only the contents for which it
//! scores in the top `k` move (to it). BLAKE3 is fixed by its specification, so placements
//! are the same on every platform and release (std's `DefaultHasher` is not).
//!
//! ```
//! use mesh_fault::placement::{holders, plan_repair};
//! use mesh_types::{Digest, NodeId};
//!
//! let live: Vec<NodeId> = (1..=5u8).map(|b| NodeId([b; 32])).collect();
//! let model = Digest::of(b"model v7");
//! let three = holders(&model, &live, 3);
//! // One holder dies: the plan names exactly one new member to fetch a copy.
//! let still_live: Vec<NodeId> = live.iter().copied().filter(|m| *m != three[0]).collect();
//! let plan = plan_repair(&model, &three, &still_live, 3);
//! assert_eq!(plan.fetch.len(), 1);
//! assert_eq!(plan.sources, three[1..].to_vec());
//! ```

use mesh_types::{Digest, NodeId};

/// The score of `member` for `content` (higher wins).
pub fn score(content: &Digest, member: &NodeId) -> u64 {
    let d = Digest::of_parts([
        &b"mesh-fault/placement/v1"[..],
        content.as_bytes(),
        member.as_bytes(),
    ]);
    let mut first = [0u8; 8];
    first.copy_from_slice(&d.as_bytes()[..8]);
    u64::from_le_bytes(first)
}

/// The `k` members of `live` that should hold `content`, best first (fewer if `live` has
/// fewer distinct members). Duplicates in `live` count once.
pub fn holders(content: &Digest, live: &[NodeId], k: usize) -> Vec<NodeId> {
    let mut scored: Vec<(u64, NodeId)> = live.iter().map(|m| (score(content, m), *m)).collect();
    // Highest score first, then the smaller id.
    scored.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    scored.dedup_by(|a, b| a.1 == b.1);
    scored.into_iter().take(k).map(|(_, m)| m).collect()
}

/// What to do so that a content is held by its `k` designated live members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repair {
    /// The designated holders, best first ([`holders`] over the live members).
    pub targets: Vec<NodeId>,
    /// Designated holders that lack a copy: each should fetch one from a source.
    pub fetch: Vec<NodeId>,
    /// Live members that hold a copy (where to fetch from), in `holders_now` order.
    pub sources: Vec<NodeId>,
    /// Live holders that are no longer designated and may drop their copy. Listed only
    /// once every target holds one (`fetch` is empty), so following the plan never lowers
    /// the number of copies below `k` while a repair is in progress.
    pub surplus: Vec<NodeId>,
}

impl Repair {
    /// No live copy is left: the content cannot be repaired from the mesh.
    pub fn is_lost(&self) -> bool {
        self.sources.is_empty()
    }

    /// Nothing to do.
    pub fn is_complete(&self) -> bool {
        self.fetch.is_empty() && self.surplus.is_empty()
    }
}

/// The repair plan for `content`, held now by `holders_now` (live or not), with `live` the
/// members currently alive, to reach `k` copies on the designated holders.
pub fn plan_repair(content: &Digest, holders_now: &[NodeId], live: &[NodeId], k: usize) -> Repair {
    let targets = holders(content, live, k);
    let mut sources: Vec<NodeId> = Vec::new();
    for h in holders_now {
        if live.contains(h) && !sources.contains(h) {
            sources.push(*h);
        }
    }
    let fetch: Vec<NodeId> = targets
        .iter()
        .filter(|t| !sources.contains(t))
        .copied()
        .collect();
    let surplus = if fetch.is_empty() {
        sources
            .iter()
            .filter(|s| !targets.contains(s))
            .copied()
            .collect()
    } else {
        Vec::new()
    };
    Repair {
        targets,
        fetch,
        sources,
        surplus,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{Random, SplitMix64};

    fn id(i: u64) -> NodeId {
        let mut b = [0u8; 32];
        b[..8].copy_from_slice(&i.to_le_bytes());
        NodeId(b)
    }

    fn content(i: u64) -> Digest {
        Digest::of(&i.to_le_bytes())
    }

    #[test]
    fn scores_are_stable_across_releases() {
        // Pinned values: a change here moves every replica in a running mesh.
        assert_eq!(
            score(&Digest([0; 32]), &NodeId([0; 32])),
            0xbba4_d70f_6ca4_e6ea
        );
        assert_eq!(score(&content(1), &id(2)), 0x2429_dad1_fef4_a81a);
    }

    #[test]
    fn holders_are_the_top_k_of_the_live_members() {
        let live: Vec<NodeId> = (0..10).map(id).collect();
        let c = content(7);
        let h = holders(&c, &live, 3);
        assert_eq!(h.len(), 3);
        let worst = h.iter().map(|m| score(&c, m)).min().unwrap();
        for m in live.iter().filter(|m| !h.contains(m)) {
            assert!(score(&c, m) < worst);
        }
        // Order of the live list and duplicates do not matter.
        let mut shuffled = live.clone();
        shuffled.reverse();
        shuffled.extend_from_slice(&live[..4]);
        assert_eq!(holders(&c, &shuffled, 3), h);
        assert_eq!(holders(&c, &live[..2], 3).len(), 2);
        assert!(holders(&c, &[], 3).is_empty());
    }

    #[test]
    fn removing_a_member_moves_only_what_it_held() {
        let mut rng = SplitMix64::new(11);
        for round in 0..40 {
            let n = 3 + rng.below(30) as usize;
            let k = 1 + rng.below(4) as usize;
            let live: Vec<NodeId> = (0..n as u64).map(|i| id(i + 1000 * round)).collect();
            let gone = live[rng.below(n as u64) as usize];
            let after_live: Vec<NodeId> = live.iter().copied().filter(|m| *m != gone).collect();
            for c in 0..200 {
                let c = content(c + 1_000_000 * round);
                let before = holders(&c, &live, k);
                let after = holders(&c, &after_live, k);
                if before.contains(&gone) {
                    // The others stay; at most one newcomer (none if too few members).
                    for m in before.iter().filter(|m| **m != gone) {
                        assert!(after.contains(m));
                    }
                    let new: Vec<_> = after.iter().filter(|m| !before.contains(m)).collect();
                    assert_eq!(new.len(), usize::from(n > k), "n {n} k {k}");
                } else {
                    assert_eq!(before, after, "a content the member did not hold moved");
                }
            }
        }
    }

    #[test]
    fn a_joining_member_takes_only_contents_it_wins() {
        let live: Vec<NodeId> = (0..12).map(id).collect();
        let joiner = id(99);
        let mut with = live.clone();
        with.push(joiner);
        let mut moved = 0;
        for c in 0..2_000 {
            let c = content(c);
            let before = holders(&c, &live, 3);
            let after = holders(&c, &with, 3);
            if after.contains(&joiner) {
                moved += 1;
                let lost: Vec<_> = before.iter().filter(|m| !after.contains(m)).collect();
                assert_eq!(lost.len(), 1);
            } else {
                assert_eq!(before, after);
            }
        }
        // It takes about k / n of the contents: 3/13 of 2,000 is 462.
        assert!((350..580).contains(&moved), "{moved}");
    }

    #[test]
    fn load_is_balanced() {
        let live: Vec<NodeId> = (0..20).map(id).collect();
        let mut load = vec![0u32; 20];
        for c in 0..10_000 {
            for h in holders(&content(c), &live, 3) {
                let i = live.iter().position(|m| *m == h).unwrap();
                load[i] += 1;
            }
        }
        // Mean 1,500 per member.
        assert!(
            load.iter().all(|&l| (1_300..1_700).contains(&l)),
            "{load:?}"
        );
    }

    #[test]
    fn repair_plans_fetch_before_dropping() {
        let live: Vec<NodeId> = (0..8).map(id).collect();
        let c = content(3);
        let targets = holders(&c, &live, 3);
        // Complete: nothing to do.
        let plan = plan_repair(&c, &targets, &live, 3);
        assert!(plan.is_complete() && !plan.is_lost());
        // A holder crashed: one new target fetches from the two survivors.
        let survivors: Vec<NodeId> = live.iter().copied().filter(|m| *m != targets[1]).collect();
        let plan = plan_repair(&c, &targets, &survivors, 3);
        assert_eq!(plan.fetch.len(), 1);
        assert!(!targets.contains(&plan.fetch[0]));
        assert_eq!(plan.sources, vec![targets[0], targets[2]]);
        assert!(plan.surplus.is_empty());
        // The old holder comes back while the new one already has its copy: the newcomer's
        // copy is surplus only now that every target holds one.
        let mut now_held = targets.clone();
        now_held.push(plan.fetch[0]);
        let plan2 = plan_repair(&c, &now_held, &live, 3);
        assert!(plan2.fetch.is_empty());
        assert_eq!(plan2.surplus, vec![plan.fetch[0]]);
        // Held by a non-target while a target still lacks it: nothing is dropped yet.
        let others: Vec<NodeId> = live
            .iter()
            .copied()
            .filter(|m| !targets.contains(m))
            .collect();
        let plan3 = plan_repair(&c, &others[..1], &live, 3);
        assert_eq!(plan3.fetch, targets);
        assert!(plan3.surplus.is_empty());
        // Every holder gone: lost.
        assert!(plan_repair(&c, &[id(100)], &live, 3).is_lost());
    }
}
