//! SWIM membership in a deterministic simulation: n members over a network with delay
//! jitter, per-link loss and cut links, in virtual time, every message through the binary
//! codec. Figures are printed with `-- --nocapture`.
//!
//! - A crashed member is declared dead by every other member within a bound.
//! - With one link cut (A <-> B drops everything) and the others fine, neither A nor B is
//!   ever suspected in a simulated hour, thanks to indirect probes; the control without
//!   indirect probes suspects them.
//! - Under 1% loss on every link, no live member is declared dead in many simulated hours.
//! - The same seed gives the same trace.
//! - After a crash every member's view yields the same live set, so every member computes
//!   the same placement repair: new copies only for the contents the dead member held.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};
use std::time::Duration;

use mesh_fault::membership::{Config, DigestSigner, DigestVerifier, Event, Membership, State};
use mesh_fault::placement::{holders, plan_repair};
use mesh_fault::rng::{Random, SplitMix64};
use mesh_types::{Digest, Instant, NodeId};

#[derive(Debug, Clone, Copy)]
struct Network {
    /// Smallest one-way delay.
    base_ms: u64,
    /// Largest extra delay (uniform from 0).
    jitter_ms: u64,
    /// Probability that a message is lost, on every link.
    loss: f64,
}

impl Default for Network {
    /// 5-25 ms one way, 1% loss.
    fn default() -> Self {
        Self {
            base_ms: 5,
            jitter_ms: 20,
            loss: 0.01,
        }
    }
}

type Delivery = Reverse<(Instant, u64, usize, usize, Vec<u8>)>;

struct Sim {
    ids: Vec<NodeId>,
    nodes: Vec<Membership>,
    timers: Vec<Option<Instant>>,
    crashed: Vec<bool>,
    cut: BTreeSet<(usize, usize)>,
    net: Network,
    rng: SplitMix64,
    queue: BinaryHeap<Delivery>,
    sent: u64,
    now: Instant,
    /// (time, observer, event)
    events: Vec<(Instant, usize, Event)>,
}

fn node_id(i: usize) -> NodeId {
    let mut b = [0u8; 32];
    b[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
    NodeId(b)
}

impl Sim {
    fn new(n: usize, config: Config, net: Network, seed: u64) -> Self {
        let mut rng = SplitMix64::new(seed);
        let ids: Vec<NodeId> = (0..n).map(node_id).collect();
        let nodes: Vec<Membership> = ids
            .iter()
            .map(|me| {
                let mut m = Membership::new(
                    *me,
                    config,
                    rng.next_u64(),
                    Box::new(DigestSigner(*me)),
                    Box::new(DigestVerifier),
                    Instant::ZERO,
                )
                .unwrap();
                // Each member knows a few others to start with; the rest it learns.
                for k in 1..=3 {
                    m.add_seed(
                        ids[(ids.iter().position(|i| i == me).unwrap() + k) % n],
                        Instant::ZERO,
                    );
                }
                m
            })
            .collect();
        let timers = nodes.iter().map(Membership::poll_timeout).collect();
        Self {
            ids,
            nodes,
            timers,
            crashed: vec![false; n],
            cut: BTreeSet::new(),
            net,
            rng,
            queue: BinaryHeap::new(),
            sent: 0,
            now: Instant::ZERO,
            events: Vec::new(),
        }
    }

    fn cut(&mut self, a: usize, b: usize) {
        self.cut.insert((a, b));
        self.cut.insert((b, a));
    }

    fn crash(&mut self, i: usize) {
        self.crashed[i] = true;
        self.timers[i] = None;
    }

    fn drain(&mut self, i: usize) {
        while let Some(t) = self.nodes[i].poll_transmit() {
            let to = self.ids.iter().position(|id| *id == t.to).unwrap();
            self.sent += 1;
            let lost = self.rng.unit() < self.net.loss;
            let delay = self.net.base_ms + self.rng.below(self.net.jitter_ms + 1);
            if lost || self.cut.contains(&(i, to)) {
                continue;
            }
            let at = self.now + Duration::from_millis(delay);
            self.queue
                .push(Reverse((at, self.sent, i, to, t.message.encode())));
        }
        while let Some(e) = self.nodes[i].poll_event() {
            self.events.push((self.now, i, e));
        }
        self.timers[i] = if self.crashed[i] {
            None
        } else {
            self.nodes[i].poll_timeout()
        };
    }

    fn run_until(&mut self, end: Instant) {
        loop {
            let next_msg = self.queue.peek().map(|Reverse(d)| d.0);
            let next_timer = self.timers.iter().flatten().min().copied();
            let t = match (next_msg, next_timer) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => match a.or(b) {
                    Some(t) => t,
                    None => break,
                },
            };
            if t > end {
                break;
            }
            self.now = t;
            if next_msg == Some(t) {
                let Some(Reverse((_, _, from, to, bytes))) = self.queue.pop() else {
                    break;
                };
                if self.crashed[to] {
                    continue;
                }
                let from = self.ids[from];
                self.nodes[to].handle_bytes(from, &bytes, t).unwrap();
                self.drain(to);
            } else {
                for i in 0..self.nodes.len() {
                    if self.timers[i].is_some_and(|d| d <= t) {
                        self.nodes[i].handle_timeout(t);
                        self.drain(i);
                    }
                }
            }
        }
        self.now = end;
    }

    fn count(&self, pred: impl Fn(&Event) -> bool) -> usize {
        self.events.iter().filter(|(_, _, e)| pred(e)).count()
    }
}

fn secs(s: u64) -> Instant {
    Instant::from_millis(s * 1_000)
}

fn is_about(e: &Event, who: NodeId) -> bool {
    match e {
        Event::Up { member, .. }
        | Event::Suspected { member, .. }
        | Event::Refuted { member, .. }
        | Event::Down { member, .. }
        | Event::Left { member, .. } => *member == who,
        Event::Accused { .. } => false,
    }
}

#[test]
fn everyone_learns_everyone_from_a_few_seeds() {
    let mut sim = Sim::new(24, Config::default(), Network::default(), 5);
    sim.run_until(secs(60));
    for m in &sim.nodes {
        assert_eq!(m.live_members().len(), 24);
    }
    assert_eq!(sim.count(|e| !matches!(e, Event::Up { .. })), 0);
}

/// The bound on declaring a crashed member dead everywhere.
const DEATH_BOUND: Duration = Duration::from_secs(20);

#[test]
fn a_crashed_member_is_declared_dead_by_all_within_the_bound() {
    let mut worst_first = Duration::ZERO;
    let mut worst_all = Duration::ZERO;
    let mut total_all = Duration::ZERO;
    let seeds = 12u64;
    for seed in 1..=seeds {
        let n = 8 + (seed as usize * 7) % 25; // 8..=32
        let mut sim = Sim::new(n, Config::default(), Network::default(), seed);
        sim.run_until(secs(60));
        let victim = sim.rng.below(n as u64) as usize;
        let crash_at = sim.now;
        sim.crash(victim);
        sim.run_until(crash_at + Duration::from_secs(120));
        let who = sim.ids[victim];
        let suspected = sim
            .events
            .iter()
            .filter(|(t, _, e)| {
                *t >= crash_at && matches!(e, Event::Suspected { member, .. } if *member == who)
            })
            .map(|(t, _, _)| t.saturating_since(crash_at))
            .min()
            .expect("suspected");
        let downs: Vec<(usize, Duration)> = sim
            .events
            .iter()
            .filter(|(_, _, e)| matches!(e, Event::Down { member, .. } if *member == who))
            .map(|(t, i, _)| (*i, t.saturating_since(crash_at)))
            .collect();
        let observers: BTreeSet<usize> = downs.iter().map(|(i, _)| *i).collect();
        assert_eq!(
            observers.len(),
            n - 1,
            "seed {seed}: every other member declares it dead"
        );
        let all = downs.iter().map(|(_, d)| *d).max().unwrap();
        println!(
            "seed {seed} n {n}: first suspicion {suspected:?}, dead everywhere {all:?} after the crash"
        );
        assert!(all <= DEATH_BOUND, "seed {seed}: {all:?}");
        worst_first = worst_first.max(suspected);
        worst_all = worst_all.max(all);
        total_all += all;
        // Nobody else was suspected to death meanwhile.
        assert_eq!(
            sim.count(|e| matches!(e, Event::Down { .. })),
            n - 1,
            "seed {seed}"
        );
    }
    println!(
        "{seeds} crashes: worst first suspicion {worst_first:?}, dead everywhere: mean {:?}, worst {worst_all:?}",
        total_all / seeds as u32
    );
}

#[test]
fn one_bad_link_gets_nobody_suspected_thanks_to_indirect_probes() {
    let net = Network {
        loss: 0.0,
        ..Network::default()
    };
    let hour = secs(3_600);
    let mut sim = Sim::new(16, Config::default(), net, 9);
    sim.cut(0, 1);
    sim.run_until(hour);
    let (a, b) = (sim.ids[0], sim.ids[1]);
    let about_ab = |sim: &Sim| {
        sim.events
            .iter()
            .filter(|(_, _, e)| {
                matches!(e, Event::Suspected { .. } | Event::Down { .. })
                    && (is_about(e, a) || is_about(e, b))
            })
            .count()
    };
    println!(
        "1 h, 16 members, link A<->B cut: {} suspicions of A or B, {} messages",
        about_ab(&sim),
        sim.sent
    );
    assert_eq!(about_ab(&sim), 0);
    assert_eq!(sim.count(|e| matches!(e, Event::Suspected { .. })), 0);

    // The control: without indirect probes the same cut link gets them suspected (and
    // refuted, thanks to the buddy system), so the assertion above measures the probes.
    let mut control = Sim::new(
        16,
        Config {
            indirect_probes: 0,
            ..Config::default()
        },
        net,
        9,
    );
    control.cut(0, 1);
    control.run_until(secs(600));
    let suspected = about_ab(&control);
    println!("control without indirect probes, 10 min: {suspected} suspicions of A or B");
    assert!(suspected > 10, "{suspected}");
}

#[test]
fn no_live_member_is_declared_dead_under_one_percent_loss() {
    let hours = 4u64;
    let mut suspicions = 0;
    let mut refutations = 0;
    for seed in 1..=hours {
        let mut sim = Sim::new(16, Config::default(), Network::default(), 100 + seed);
        sim.run_until(secs(3_600));
        suspicions += sim.count(|e| matches!(e, Event::Suspected { .. }));
        refutations += sim.count(|e| matches!(e, Event::Refuted { .. }));
        assert_eq!(
            sim.count(|e| matches!(e, Event::Down { .. })),
            0,
            "seed {seed}: a live member declared dead"
        );
        for m in &sim.nodes {
            assert!(m.members().all(|i| i.state != State::Dead));
            assert_eq!(m.counters().forged, 0);
        }
    }
    println!(
        "{hours} simulated hours x 16 members at 1% loss: 0 false deaths, {suspicions} suspicion events, {refutations} refutation events"
    );
}

#[test]
fn the_same_seed_gives_the_same_trace() {
    let run = |seed| {
        let mut sim = Sim::new(12, Config::default(), Network::default(), seed);
        sim.run_until(secs(30));
        sim.crash(4);
        sim.cut(1, 2);
        sim.run_until(secs(120));
        (sim.events, sim.sent)
    };
    let a = run(3);
    assert!(a.0.iter().any(|(_, _, e)| matches!(e, Event::Down { .. })));
    assert_eq!(a, run(3));
    assert_ne!(a, run(4));
}

#[test]
fn under_heavy_loss_suspicions_are_refuted_not_fatal() {
    // 10% loss on every link: probes do fail (both the ping and all three indirect paths),
    // the suspect learns of it from the next ping (buddy system) and refutes in time.
    let net = Network {
        loss: 0.10,
        ..Network::default()
    };
    let mut sim = Sim::new(16, Config::default(), net, 77);
    sim.run_until(secs(3_600));
    let suspicions = sim.count(|e| matches!(e, Event::Suspected { .. }));
    let refuted = sim.count(|e| matches!(e, Event::Refuted { .. }));
    let downs = sim.count(|e| matches!(e, Event::Down { .. }));
    println!(
        "1 simulated hour x 16 members at 10% loss: {suspicions} suspicion and {refuted} refutation events (summed over observers), {downs} false deaths"
    );
    assert!(
        suspicions > 0,
        "the loss is heavy enough to cause suspicions"
    );
    assert_eq!(downs, 0);
}

#[test]
fn after_a_crash_every_view_plans_the_same_repair() {
    let n = 12;
    let mut sim = Sim::new(n, Config::default(), Network::default(), 21);
    sim.run_until(secs(60));
    let before = sim.nodes[0].live_members();
    assert_eq!(before.len(), n);
    let victim = 7;
    sim.crash(victim);
    sim.run_until(secs(120));
    let dead = sim.ids[victim];
    let views: Vec<Vec<NodeId>> = (0..n)
        .filter(|i| *i != victim)
        .map(|i| sim.nodes[i].live_members())
        .collect();
    let after: Vec<NodeId> = before.iter().copied().filter(|m| *m != dead).collect();
    assert!(
        views.iter().all(|v| *v == after),
        "every view agrees on the live set"
    );
    let mut repaired = 0;
    for c in 0..500u32 {
        let content = Digest::of(&c.to_le_bytes());
        let held = holders(&content, &before, 3);
        let plans: Vec<_> = views
            .iter()
            .map(|v| plan_repair(&content, &held, v, 3))
            .collect();
        assert!(plans.windows(2).all(|w| w[0] == w[1]));
        let plan = &plans[0];
        if held.contains(&dead) {
            repaired += 1;
            assert_eq!(plan.fetch.len(), 1);
            assert_eq!(plan.sources.len(), 2);
        } else {
            assert!(plan.is_complete());
        }
    }
    // About k / n of the contents: 3/12 of 500 is 125.
    assert!((80..170).contains(&repaired), "{repaired}");
}

#[test]
fn the_core_can_move_into_a_driver_task() {
    fn send<T: Send + 'static>() {}
    send::<Membership>();
}
