//! Unit tests of the membership core on a tiny instant-delivery network.

use std::collections::{BTreeMap, BTreeSet};

use super::*;

fn id(b: u8) -> NodeId {
    NodeId([b; 32])
}

fn ms(t: u64) -> Instant {
    Instant::from_millis(t)
}

fn node(me: NodeId, config: Config, seed: u64) -> Membership {
    Membership::new(
        me,
        config,
        seed,
        Box::new(DigestSigner(me)),
        Box::new(DigestVerifier),
        Instant::ZERO,
    )
    .unwrap()
}

fn claim(member: NodeId, incarnation: u64, state: State, origin: NodeId, key: NodeId) -> Claim {
    let signature =
        DigestSigner(key).sign(&Claim::signed_bytes(&member, incarnation, state, &origin));
    Claim {
        member,
        incarnation,
        state,
        origin,
        signature,
    }
}

fn ping_with(claims: Vec<Claim>) -> Message {
    Message {
        body: Body::Ping { seq: 1 },
        claims,
    }
}

/// Members that deliver every message at once, except to crashed members and over cut
/// links.
struct Net {
    nodes: BTreeMap<NodeId, Membership>,
    crashed: BTreeSet<NodeId>,
    cut: BTreeSet<(NodeId, NodeId)>,
    events: Vec<(Instant, NodeId, Event)>,
    now: Instant,
    max_claims: usize,
}

impl Net {
    fn new(n: u8, config: Config) -> Self {
        let ids: Vec<NodeId> = (1..=n).map(id).collect();
        let mut nodes = BTreeMap::new();
        for (i, me) in ids.iter().enumerate() {
            let mut m = node(*me, config, i as u64 + 1);
            for peer in &ids {
                m.add_seed(*peer, Instant::ZERO);
            }
            nodes.insert(*me, m);
        }
        Self {
            nodes,
            crashed: BTreeSet::new(),
            cut: BTreeSet::new(),
            events: Vec::new(),
            now: Instant::ZERO,
            max_claims: 0,
        }
    }

    fn cut(&mut self, a: NodeId, b: NodeId) {
        self.cut.insert((a, b));
        self.cut.insert((b, a));
    }

    fn flush(&mut self) {
        loop {
            let mut out = Vec::new();
            for (me, m) in &mut self.nodes {
                while let Some(t) = m.poll_transmit() {
                    out.push((*me, t));
                }
                while let Some(e) = m.poll_event() {
                    self.events.push((self.now, *me, e));
                }
            }
            if out.is_empty() {
                return;
            }
            for (from, t) in out {
                self.max_claims = self.max_claims.max(t.message.claims.len());
                if self.crashed.contains(&t.to)
                    || self.crashed.contains(&from)
                    || self.cut.contains(&(from, t.to))
                {
                    continue;
                }
                let bytes = t.message.encode();
                if let Some(m) = self.nodes.get_mut(&t.to) {
                    m.handle_bytes(from, &bytes, self.now).unwrap();
                }
            }
        }
    }

    fn run_until(&mut self, end: Instant) {
        loop {
            let next = self
                .nodes
                .iter()
                .filter(|(me, _)| !self.crashed.contains(me))
                .filter_map(|(_, m)| m.poll_timeout())
                .min();
            match next {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    for (me, m) in &mut self.nodes {
                        if !self.crashed.contains(me) {
                            m.handle_timeout(self.now);
                        }
                    }
                    self.flush();
                }
                _ => break,
            }
        }
        self.now = end;
    }

    fn events_about(&self, who: NodeId) -> Vec<(Instant, NodeId, Event)> {
        self.events
            .iter()
            .filter(|(_, _, e)| match e {
                Event::Up { member, .. }
                | Event::Suspected { member, .. }
                | Event::Refuted { member, .. }
                | Event::Down { member, .. }
                | Event::Left { member, .. } => *member == who,
                Event::Accused { .. } => false,
            })
            .copied()
            .collect()
    }
}

#[test]
fn settings_out_of_range_are_refused() {
    let bad = [
        Config {
            probe_interval: Duration::ZERO,
            ..Config::default()
        },
        Config {
            probe_timeout: Duration::from_secs(1),
            ..Config::default()
        },
        Config {
            max_piggyback: MAX_PIGGYBACK,
            ..Config::default()
        },
        Config {
            max_members: 0,
            ..Config::default()
        },
        Config {
            retransmit_mult: 0,
            ..Config::default()
        },
    ];
    for c in bad {
        assert!(
            Membership::new(
                id(1),
                c,
                1,
                Box::new(DigestSigner(id(1))),
                Box::new(DigestVerifier),
                Instant::ZERO
            )
            .is_err(),
            "{c:?}"
        );
    }
    struct LongSigner;
    impl Signer for LongSigner {
        fn sign(&self, _: &[u8]) -> Vec<u8> {
            vec![0; MAX_SIGNATURE + 1]
        }
    }
    assert!(
        Membership::new(
            id(1),
            Config::default(),
            1,
            Box::new(LongSigner),
            Box::new(DigestVerifier),
            Instant::ZERO
        )
        .is_err()
    );
}

#[test]
fn members_learn_each_other_and_nobody_is_suspected() {
    let mut net = Net::new(5, Config::default());
    net.run_until(ms(60_000));
    for m in net.nodes.values() {
        assert_eq!(m.live_members().len(), 5);
        for info in m.members() {
            assert_eq!((info.state, info.incarnation), (State::Alive, 0));
        }
    }
    assert!(
        net.events
            .iter()
            .all(|(_, _, e)| matches!(e, Event::Up { .. })),
        "{:?}",
        net.events
    );
    // Every member announced every other once it first heard its signed claim.
    assert_eq!(net.events.len(), 5 * 4);
    assert!(net.max_claims <= Config::default().max_piggyback + 2);
}

#[test]
fn an_unanswered_probe_goes_indirect_then_suspect_then_dead() {
    let config = Config::default();
    let mut net = Net::new(5, config);
    net.run_until(ms(10_000));
    let (a, b) = (id(1), id(2));
    net.crashed.insert(b);
    // Watch A's first probe of B from here, stepping 10 ms at a time and looking at A's
    // transmits before they are delivered.
    let mut pinged = None;
    let mut ping_reqs = 0;
    let mut t = 10_000;
    while t < 30_000 && pinged.is_none_or(|p| t < p + 1_000) {
        t += 10;
        let next = ms(t);
        let am = net.nodes.get_mut(&a).unwrap();
        if am.poll_timeout().is_some_and(|d| d <= next) {
            am.handle_timeout(next);
            let mut keep = Vec::new();
            while let Some(tx) = am.poll_transmit() {
                match tx.message.body {
                    Body::Ping { .. } if tx.to == b && pinged.is_none() => pinged = Some(t),
                    Body::PingReq { target, .. } if target == b && ping_reqs < 3 => {
                        ping_reqs += 1;
                        let started = pinged.unwrap();
                        assert!(t - started >= 400, "indirect after the probe timeout");
                    }
                    _ => {}
                }
                keep.push(tx);
            }
            am.transmits.extend(keep);
        }
        net.run_until(next);
        net.flush();
    }
    assert_eq!(
        net.nodes[&a].member(&b).unwrap().state,
        State::Suspect,
        "suspected at the end of the round (by A or before it by another member)"
    );
    assert_eq!(ping_reqs, 3, "k = 3 members asked to probe");
    let suspected = net
        .events_about(b)
        .iter()
        .find(|(_, _, e)| matches!(e, Event::Suspected { .. }))
        .map(|(t, _, _)| *t)
        .unwrap();
    net.run_until(ms(120_000));
    // Every live member declares B dead, after at least the minimal suspicion timeout.
    let downs: Vec<_> = net
        .events_about(b)
        .into_iter()
        .filter(|(_, _, e)| matches!(e, Event::Down { .. }))
        .collect();
    assert_eq!(downs.len(), 4, "{downs:?}");
    let min_timeout = suspicion_timeout(&config, 5, usize::MAX / 2);
    for (t, _, _) in &downs {
        assert!(t.saturating_since(suspected) >= min_timeout);
    }
    for (me, m) in &net.nodes {
        if *me != b {
            assert_eq!(m.member(&b).unwrap().state, State::Dead);
            assert!(!m.live_members().contains(&b));
        }
    }
}

#[test]
fn a_peer_behind_one_bad_link_is_reached_through_others() {
    let mut net = Net::new(5, Config::default());
    net.cut(id(1), id(2));
    net.run_until(ms(600_000));
    assert!(
        net.events_about(id(1))
            .iter()
            .all(|(_, _, e)| matches!(e, Event::Up { .. }))
    );
    assert!(
        net.events_about(id(2))
            .iter()
            .all(|(_, _, e)| matches!(e, Event::Up { .. }))
    );

    // The control: without indirect probes the same link gets B suspected.
    let mut control = Net::new(
        5,
        Config {
            indirect_probes: 0,
            ..Config::default()
        },
    );
    control.cut(id(1), id(2));
    control.run_until(ms(600_000));
    assert!(
        control
            .events_about(id(2))
            .iter()
            .any(|(_, _, e)| matches!(e, Event::Suspected { .. }))
    );
}

#[test]
fn a_suspected_member_refutes_with_a_higher_incarnation() {
    let (a, b, x) = (id(1), id(2), id(3));
    let mut m = node(a, Config::default(), 1);
    m.handle_message(x, ping_with(vec![claim(x, 0, State::Alive, x, x)]), ms(1));
    m.handle_message(b, ping_with(vec![claim(b, 0, State::Alive, b, b)]), ms(1));
    m.handle_message(b, ping_with(vec![claim(x, 0, State::Suspect, b, b)]), ms(2));
    assert_eq!(m.member(&x).unwrap().state, State::Suspect);
    // X's refutation, relayed by B: valid (signed by X).
    m.handle_message(b, ping_with(vec![claim(x, 1, State::Alive, x, x)]), ms(3));
    assert_eq!(
        m.member(&x).unwrap(),
        MemberInfo {
            id: x,
            state: State::Alive,
            incarnation: 1
        }
    );
    let events: Vec<Event> = std::iter::from_fn(|| m.poll_event()).collect();
    assert!(events.contains(&Event::Refuted {
        member: x,
        incarnation: 1
    }));

    // And A, accused itself, refutes: its incarnation rises above the accusation and its
    // next message carries the new claim.
    m.handle_message(b, ping_with(vec![claim(a, 0, State::Suspect, b, b)]), ms(4));
    assert_eq!(m.incarnation(), 1);
    assert_eq!(
        m.poll_event(),
        Some(Event::Accused {
            accuser: b,
            incarnation: 1
        })
    );
    let ack = std::iter::from_fn(|| m.poll_transmit()).last().unwrap();
    assert_eq!(ack.message.claims[0], claim(a, 1, State::Alive, a, a));
    // An accusation of an incarnation we already left behind changes nothing.
    m.handle_message(b, ping_with(vec![claim(a, 0, State::Dead, b, b)]), ms(5));
    assert_eq!(m.incarnation(), 1);
}

#[test]
fn forged_alive_claims_about_others_are_refused() {
    let (a, mallory, x) = (id(1), id(6), id(3));
    let mut m = node(a, Config::default(), 1);
    m.handle_message(x, ping_with(vec![claim(x, 2, State::Alive, x, x)]), ms(1));
    let before = m.counters().forged;
    // Mallory claims X alive at a higher incarnation in its own name...
    m.handle_message(
        mallory,
        ping_with(vec![claim(x, 3, State::Alive, mallory, mallory)]),
        ms(2),
    );
    // ...or in X's name with Mallory's signature...
    m.handle_message(
        mallory,
        ping_with(vec![claim(x, 4, State::Alive, x, mallory)]),
        ms(2),
    );
    // ...or introduces a member that never spoke.
    m.handle_message(
        mallory,
        ping_with(vec![claim(id(9), 0, State::Alive, id(9), mallory)]),
        ms(2),
    );
    // ...or makes X accuse itself.
    m.handle_message(
        mallory,
        ping_with(vec![claim(x, 2, State::Suspect, x, x)]),
        ms(2),
    );
    assert_eq!(m.counters().forged - before, 4);
    // A stranger's accusation, however well signed, is not taken.
    let unknown = m.counters().unknown;
    m.handle_message(
        mallory,
        ping_with(vec![claim(x, 2, State::Suspect, mallory, mallory)]),
        ms(2),
    );
    assert_eq!(m.counters().unknown - unknown, 1);
    assert_eq!(m.member(&x).unwrap().state, State::Alive);
    assert_eq!(m.member(&x).unwrap().incarnation, 2);
    assert!(m.member(&id(9)).is_none());
    // Mallory itself is known only once its own valid claim arrives (the first message
    // carried none).
    assert!(m.member(&mallory).is_none());
}

#[test]
fn a_forged_refutation_does_not_save_a_dead_member() {
    let (a, b, mallory, x) = (id(1), id(2), id(6), id(3));
    let mut m = node(a, Config::default(), 1);
    for p in [b, x, mallory] {
        m.handle_message(p, ping_with(vec![claim(p, 0, State::Alive, p, p)]), ms(1));
    }
    m.handle_message(b, ping_with(vec![claim(x, 0, State::Suspect, b, b)]), ms(2));
    m.handle_message(
        mallory,
        ping_with(vec![claim(x, 1, State::Alive, x, mallory)]),
        ms(3),
    );
    assert_eq!(m.counters().forged, 1);
    assert_eq!(m.member(&x).unwrap().state, State::Suspect);
    let deadline = m.poll_timeout().unwrap();
    // Step through the following timeouts until the suspicion expires.
    let mut now = deadline;
    for _ in 0..10_000 {
        m.handle_timeout(now);
        while m.poll_transmit().is_some() {}
        if m.member(&x).unwrap().state == State::Dead {
            break;
        }
        now = m.poll_timeout().unwrap();
    }
    assert_eq!(m.member(&x).unwrap().state, State::Dead);
    let events: Vec<Event> = std::iter::from_fn(|| m.poll_event()).collect();
    assert!(events.contains(&Event::Down {
        member: x,
        incarnation: 0,
        accuser: a
    }));
    // A stale Alive at the dead incarnation does not revive it; a real rejoin does.
    m.handle_message(b, ping_with(vec![claim(x, 0, State::Alive, x, x)]), now);
    assert_eq!(m.member(&x).unwrap().state, State::Dead);
    m.handle_message(b, ping_with(vec![claim(x, 1, State::Alive, x, x)]), now);
    assert_eq!(m.member(&x).unwrap().state, State::Alive);
    assert_eq!(
        m.poll_event(),
        Some(Event::Up {
            member: x,
            incarnation: 1
        })
    );
}

#[test]
fn stale_incarnations_are_ignored() {
    let (a, b, x) = (id(1), id(2), id(3));
    let mut m = node(a, Config::default(), 1);
    m.handle_message(b, ping_with(vec![claim(b, 0, State::Alive, b, b)]), ms(1));
    m.handle_message(x, ping_with(vec![claim(x, 5, State::Alive, x, x)]), ms(1));
    let stale = m.counters().stale;
    for c in [
        claim(x, 4, State::Alive, x, x),
        claim(x, 5, State::Alive, x, x),
        claim(x, 4, State::Suspect, b, b),
        claim(x, 4, State::Dead, b, b),
        claim(x, 4, State::Left, x, x),
    ] {
        m.handle_message(b, ping_with(vec![c]), ms(2));
    }
    assert_eq!(m.counters().stale - stale, 5);
    assert_eq!(m.counters().forged, 0);
    assert_eq!(
        m.member(&x).unwrap(),
        MemberInfo {
            id: x,
            state: State::Alive,
            incarnation: 5
        }
    );
}

#[test]
fn a_restarted_member_continues_above_its_previous_life() {
    let (a, b) = (id(1), id(2));
    let mut m = node(a, Config::default(), 1);
    // B remembers A dead at incarnation 7 and says so (buddy system) when A pings it.
    m.handle_message(
        b,
        Message {
            body: Body::Ack { seq: 1, about: b },
            claims: vec![
                claim(b, 0, State::Alive, b, b),
                claim(a, 7, State::Dead, b, b),
            ],
        },
        ms(1),
    );
    assert_eq!(m.incarnation(), 8);
    // Our own claim from a past life (incarnation 9) also lifts us above it.
    m.handle_message(b, ping_with(vec![claim(a, 9, State::Alive, a, a)]), ms(2));
    assert_eq!(m.incarnation(), 10);
}

#[test]
fn malformed_bytes_are_counted_and_change_nothing() {
    let mut m = node(id(1), Config::default(), 1);
    assert!(m.handle_bytes(id(2), &[1, 1], ms(1)).is_err());
    assert!(m.handle_bytes(id(2), &[9; 40], ms(1)).is_err());
    assert_eq!(m.counters().malformed, 2);
    assert!(m.poll_transmit().is_none());
    assert_eq!(m.members().count(), 0);
}

#[test]
fn the_view_is_bounded() {
    let mut m = node(
        id(1),
        Config {
            max_members: 4,
            ..Config::default()
        },
        1,
    );
    for p in 2..20u8 {
        m.handle_message(
            id(p),
            ping_with(vec![claim(id(p), 0, State::Alive, id(p), id(p))]),
            ms(1),
        );
    }
    assert_eq!(m.members().count(), 4);
    assert_eq!(m.counters().full, 14);
    // A dead member makes room for a newcomer.
    m.handle_message(
        id(3),
        ping_with(vec![claim(id(2), 0, State::Dead, id(3), id(3))]),
        ms(2),
    );
    m.handle_message(
        id(30),
        ping_with(vec![claim(id(30), 0, State::Alive, id(30), id(30))]),
        ms(3),
    );
    assert!(m.member(&id(30)).is_some());
    assert!(m.member(&id(2)).is_none());
}

#[test]
fn updates_are_piggybacked_a_bounded_number_of_times() {
    let mut m = node(id(1), Config::default(), 1);
    let mut seen = BTreeMap::new();
    let mut count = |t: Transmit| {
        assert_eq!(t.message.claims[0].member, id(1), "our own claim first");
        for c in &t.message.claims[1..] {
            *seen.entry(c.member).or_insert(0) += 1;
        }
    };
    for p in 2..=4u8 {
        m.handle_message(
            id(p),
            ping_with(vec![claim(id(p), 0, State::Alive, id(p), id(p))]),
            ms(1),
        );
        count(m.poll_transmit().unwrap());
    }
    // n = 4: 4 * ceil(log10(5)) = 4 transmissions of each update.
    for i in 0..20 {
        m.handle_message(
            id(2),
            Message {
                body: Body::Ping { seq: i },
                claims: vec![],
            },
            ms(2),
        );
        count(m.poll_transmit().unwrap());
    }
    assert_eq!(seen.len(), 3);
    assert!(seen.values().all(|&n| n == 4), "{seen:?}");
}

#[test]
fn a_member_that_leaves_is_reported_left() {
    let mut net = Net::new(4, Config::default());
    net.run_until(ms(10_000));
    net.nodes.get_mut(&id(4)).unwrap().leave();
    net.run_until(ms(20_000));
    let left: Vec<_> = net
        .events_about(id(4))
        .into_iter()
        .filter(|(_, _, e)| matches!(e, Event::Left { .. }))
        .collect();
    assert_eq!(left.len(), 3, "{left:?}");
    assert!(
        net.events_about(id(4))
            .iter()
            .all(|(_, _, e)| !matches!(e, Event::Down { .. } | Event::Suspected { .. }))
    );
}

#[test]
fn the_same_seed_gives_the_same_history() {
    let run = || {
        let mut net = Net::new(6, Config::default());
        net.run_until(ms(5_000));
        net.crashed.insert(id(3));
        net.run_until(ms(60_000));
        net.events
    };
    let a = run();
    assert!(a.iter().any(|(_, _, e)| matches!(e, Event::Down { .. })));
    assert_eq!(a, run());
}

/// Runs `m` to its first probe and returns the probe's target and sequence number.
fn first_probe(m: &mut Membership) -> (NodeId, u64, Instant) {
    let at = m.poll_timeout().unwrap();
    m.handle_timeout(at);
    let t = m.poll_transmit().unwrap();
    match t.message.body {
        Body::Ping { seq } => (t.to, seq, at),
        other => panic!("{other:?}"),
    }
}

#[test]
fn acks_count_only_from_the_target_or_an_asked_relay() {
    let (a, b, mallory) = (id(1), id(2), id(6));
    for honest in [false, true] {
        let mut m = node(a, Config::default(), 1);
        m.add_seed(b, Instant::ZERO);
        let (target, seq, at) = first_probe(&mut m);
        assert_eq!(target, b);
        let from = if honest { b } else { mallory };
        m.handle_message(
            from,
            Message {
                body: Body::Ack { seq, about: b },
                claims: vec![],
            },
            at + Duration::from_millis(10),
        );
        // A wrong sequence number from the target does not count either.
        m.handle_message(
            b,
            Message {
                body: Body::Ack {
                    seq: seq + 1,
                    about: b,
                },
                claims: vec![],
            },
            at + Duration::from_millis(10),
        );
        m.handle_timeout(at + Duration::from_secs(1));
        let state = m.member(&b).unwrap().state;
        assert_eq!(
            state,
            if honest { State::Alive } else { State::Suspect },
            "ack from {from:?}"
        );
    }
}

#[test]
fn ping_reqs_are_relayed_and_bounded() {
    let (a, b, c) = (id(1), id(2), id(3));
    let mut m = node(a, Config::default(), 1);
    m.handle_message(
        b,
        Message {
            body: Body::PingReq { seq: 77, target: c },
            claims: vec![],
        },
        ms(1),
    );
    let ping = m.poll_transmit().unwrap();
    assert_eq!(ping.to, c);
    let Body::Ping { seq } = ping.message.body else {
        panic!("{:?}", ping.message.body)
    };
    // C's ack is forwarded to B under B's sequence number.
    m.handle_message(
        c,
        Message {
            body: Body::Ack { seq, about: c },
            claims: vec![],
        },
        ms(2),
    );
    let fwd = m.poll_transmit().unwrap();
    assert_eq!(
        (fwd.to, fwd.message.body),
        (b, Body::Ack { seq: 77, about: c })
    );
    // A flood of ping-reqs holds at most MAX_RELAYS pending relays.
    for i in 0..MAX_RELAYS as u64 + 50 {
        m.handle_message(
            b,
            Message {
                body: Body::PingReq { seq: i, target: c },
                claims: vec![],
            },
            ms(3),
        );
    }
    assert_eq!(m.counters().relays_refused, 50);
    // They expire after the probe timeout.
    m.handle_timeout(ms(3) + Config::default().probe_timeout);
    assert!(m.relays.is_empty());
}

#[test]
fn leaving_tells_every_live_member_at_once() {
    let mut a = node(id(1), Config::default(), 7);
    for n in 2..=4 {
        a.add_seed(id(n), ms(0));
    }
    while a.poll_transmit().is_some() {}
    a.leave();
    let mut told = Vec::new();
    while let Some(t) = a.poll_transmit() {
        assert!(
            t.message
                .claims
                .iter()
                .any(|c| c.member == id(1) && c.state == State::Left && c.incarnation == 1),
            "{t:?}"
        );
        told.push(t.to);
    }
    told.sort_unstable();
    assert_eq!(told, vec![id(2), id(3), id(4)]);
}
