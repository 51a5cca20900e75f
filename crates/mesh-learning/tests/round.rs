//! The round protocol end to end on the digits: ten non-IID trainers (one of them the
//! aggregator) and four validators, each a `round::Node`, exchanging their real encoded
//! messages in a seeded random order. Consensus is stood in for by an append-only list that
//! every node receives in the same order (the consensus crate and its driver are tested on
//! their own); everything else is the shipped path.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use mesh_crypto::ed25519::SigningKey;
use mesh_learning::aggregate::{Aggregator, FedAvg, Update};
use mesh_learning::round::{Envelope, Message, ModelRecord, Node, Output, Plan};
use mesh_learning::simulation::Federation;
use mesh_learning::version::ModelId;
use mesh_learning::{Architecture, Config, Dataset, Model, Optimizer, Rng, TopK, evaluate, train};
use mesh_types::{Digest, Instant, NodeId};

const ARCH: Architecture = Architecture::Mlp {
    inputs: 64,
    hidden: 32,
    classes: 10,
};
const TRAINERS: usize = 10;
const VALIDATORS: usize = 4;

fn key(i: usize) -> SigningKey {
    SigningKey::from_seed(&[i as u8 + 1; 32])
}

fn id(i: usize) -> NodeId {
    NodeId(key(i).verifying_key().to_bytes())
}

fn local() -> Config {
    Config {
        epochs: 1,
        batch_size: 16,
        optimizer: Optimizer::sgd(0.1),
        proximal_mu: 0.0,
    }
}

/// Nodes 0..10 train (node 0 also aggregates), nodes 10..14 validate.
fn plan(rounds: u64) -> Plan {
    Plan {
        architecture: ARCH,
        trainers: (0..TRAINERS).map(id).collect(),
        aggregator: id(0),
        validators: (TRAINERS..TRAINERS + VALIDATORS).map(id).collect(),
        min_updates: 7,
        round_timeout: Duration::from_secs(5),
        max_regression: 0.02,
        rounds,
    }
}

struct Data {
    clients: Vec<Dataset>,
    validation: Vec<Dataset>,
    test: Dataset,
}

fn data() -> Data {
    let digits = common::digits();
    let mut rng = Rng::new(7);
    let (train_set, test) = digits.split(0.2, &mut rng).unwrap();
    let (train_set, held_out) = train_set.split(0.15, &mut rng).unwrap();
    let shards = train_set
        .partition_dirichlet(TRAINERS, 0.5, 20, &mut rng)
        .unwrap();
    let clients = shards
        .iter()
        .map(|s| train_set.subset(s).unwrap())
        .collect();
    // Each validator holds its own quarter of the held-out data.
    let n = held_out.len();
    let validation = (0..VALIDATORS)
        .map(|v| {
            let idx: Vec<usize> = (v * n / VALIDATORS..(v + 1) * n / VALIDATORS).collect();
            held_out.subset(&idx).unwrap()
        })
        .collect();
    Data {
        clients,
        validation,
        test,
    }
}

/// The mesh of nodes and the driver's jobs, run by hand.
struct Harness {
    nodes: Vec<Node>,
    data: Data,
    rngs: Vec<Rng>,
    order: Rng,
    now: Instant,
    queue: Vec<(usize, Arc<Vec<u8>>)>,
    /// What "consensus" committed, in order.
    log: Vec<Vec<u8>>,
    /// Each node's adopted models, in order.
    adopted: Vec<Vec<Digest>>,
    /// Trainers that never answer `Train`.
    silent: BTreeSet<usize>,
    /// Broadcast proposals to this node are lost.
    deaf_to_proposals: Option<usize>,
    /// This node learns of commits only once no message is in flight (a driver that follows
    /// the ledger a little behind the others).
    late_commits: Option<usize>,
    deferred: Vec<Vec<u8>>,
    /// This many fetches are lost on the way.
    lose_fetches: usize,
    finished: usize,
}

impl Harness {
    fn new(plan: &Plan, aggregator: Box<dyn Aggregator + Send>, compress: bool) -> Self {
        let data = data();
        let mut init = Rng::new(3);
        let initial = Model::new(ARCH, &mut init).unwrap().parameters().unwrap();
        let mut aggregator = Some(aggregator);
        let nodes = (0..TRAINERS + VALIDATORS)
            .map(|i| {
                let rule = if i == 0 {
                    aggregator.take().unwrap()
                } else {
                    Box::new(FedAvg) as Box<dyn Aggregator + Send>
                };
                let compressor = compress.then(|| {
                    Box::new(TopK { fraction: 0.1 }) as Box<dyn mesh_learning::Compressor + Send>
                });
                Node::new(
                    plan.clone(),
                    key(i),
                    initial.clone(),
                    rule,
                    compressor,
                    Rng::new(100 + i as u64),
                    Instant::ZERO,
                )
                .unwrap()
            })
            .collect();
        Self {
            nodes,
            data,
            rngs: (0..TRAINERS).map(|i| Rng::new(200 + i as u64)).collect(),
            order: Rng::new(11),
            now: Instant::ZERO,
            queue: Vec::new(),
            log: Vec::new(),
            adopted: vec![Vec::new(); TRAINERS + VALIDATORS],
            silent: BTreeSet::new(),
            deaf_to_proposals: None,
            late_commits: None,
            deferred: Vec::new(),
            lose_fetches: 0,
            finished: 0,
        }
    }

    fn index(&self, to: NodeId) -> usize {
        self.nodes.iter().position(|n| n.id() == to).unwrap()
    }

    /// Carries out every node's outputs; false once nothing is left to do.
    fn drain(&mut self) -> bool {
        let mut any = false;
        for i in 0..self.nodes.len() {
            while let Some(out) = self.nodes[i].poll_output() {
                any = true;
                self.carry_out(i, out);
            }
        }
        any
    }

    fn carry_out(&mut self, i: usize, out: Output) {
        match out {
            Output::Send { to, bytes } => {
                let j = self.index(to);
                // The broadcast proposals (not the answers to a fetch, which count no
                // contributors) are what a deaf node loses.
                let proposal = matches!(
                    Envelope::decode(&bytes, ARCH.num_parameters()).map(|e| e.message),
                    Ok(Message::Proposal { contributors, .. }) if contributors > 0
                );
                let fetch = matches!(
                    Envelope::decode(&bytes, ARCH.num_parameters()).map(|e| e.message),
                    Ok(Message::Fetch { .. })
                );
                if fetch && self.lose_fetches > 0 {
                    self.lose_fetches -= 1;
                    return;
                }
                if !(proposal && self.deaf_to_proposals == Some(j)) {
                    self.queue.push((j, bytes));
                }
            }
            Output::Train {
                round,
                attempt,
                parameters,
            } => {
                if self.silent.contains(&i) {
                    return;
                }
                let mut model = Model::from_parameters(ARCH, &parameters).unwrap();
                let shard = &self.data.clients[i];
                train(&mut model, shard, &local(), &mut self.rngs[i]).unwrap();
                let trained = model.parameters().unwrap();
                self.nodes[i]
                    .handle_trained(self.now, round, attempt, &trained, shard.len() as u64)
                    .unwrap();
            }
            Output::Evaluate { model, parameters } => {
                let m = Model::from_parameters(ARCH, &parameters).unwrap();
                let acc = evaluate(&m, &self.data.validation[i - TRAINERS])
                    .unwrap()
                    .accuracy;
                self.nodes[i].handle_evaluated(self.now, model, acc);
            }
            Output::Submit { payload } => {
                self.log.push(payload.clone());
                for (j, n) in self.nodes.iter_mut().enumerate() {
                    if self.late_commits == Some(j) {
                        self.deferred.push(payload.clone());
                    } else {
                        n.handle_committed(self.now, &payload);
                    }
                }
            }
            Output::Adopted {
                model, parameters, ..
            } => {
                assert_eq!(ModelId::of(&ARCH, &parameters).unwrap().0, model);
                self.adopted[i].push(model);
            }
            Output::Finished => self.finished += 1,
        }
    }

    /// Runs until every node finished or `max_steps` deliveries; messages are delivered in
    /// a seeded random order, time jumps to the next deadline when nothing else happens.
    fn run(&mut self, max_steps: usize) {
        for _ in 0..max_steps {
            self.drain();
            if self.finished == self.nodes.len() {
                return;
            }
            if self.queue.is_empty() && !self.deferred.is_empty() {
                let late = self.late_commits.unwrap();
                for payload in std::mem::take(&mut self.deferred) {
                    self.nodes[late].handle_committed(self.now, &payload);
                }
                continue;
            }
            if self.queue.is_empty() {
                let next = self.nodes.iter().filter_map(Node::poll_timeout).min();
                let Some(t) = next else { return };
                self.now = self.now.max(t);
                for n in &mut self.nodes {
                    n.handle_timeout(self.now);
                }
                continue;
            }
            let k = self.order.below(self.queue.len() as u64) as usize;
            let (to, bytes) = self.queue.swap_remove(k);
            self.now = Instant::from_nanos(self.now.as_nanos() + 1_000);
            self.nodes[to].handle_message(self.now, &bytes);
        }
    }
}

#[test]
fn every_global_model_is_committed_before_anyone_adopts_it() {
    let plan = plan(15);
    let mut h = Harness::new(&plan, Box::new(FedAvg), true);
    h.run(1_000_000);
    assert_eq!(h.finished, h.nodes.len(), "not every node finished");
    // One committed record per round, and every node adopted exactly those models.
    assert_eq!(h.log.len(), 15);
    let committed: Vec<Digest> = h
        .log
        .iter()
        .map(|p| ModelRecord::decode(p).unwrap().candidate)
        .collect();
    for (i, chain) in h.adopted.iter().enumerate() {
        assert_eq!(chain, &committed, "node {i}");
    }
    for (i, n) in h.nodes.iter().enumerate() {
        let s = n.stats();
        assert_eq!(
            s.bad_signature + s.malformed + s.unauthorized,
            0,
            "node {i}: {s:?}"
        );
        assert_eq!(
            s.wrong_shape + s.non_finite + s.wrong_hash,
            0,
            "node {i}: {s:?}"
        );
    }
    // The federated model learns as the in-process reference does on the same shards.
    let global = Model::from_parameters(ARCH, h.nodes[0].global()).unwrap();
    let accuracy = evaluate(&global, &h.data.test).unwrap().accuracy;
    let reference = {
        let mut rng = Rng::new(3);
        let fed = Federation::new(ARCH, &h.data.clients, local(), 15);
        let m = fed.run(&FedAvg, &mut rng, |_, _| Ok(())).unwrap();
        evaluate(&m, &h.data.test).unwrap().accuracy
    };
    println!("round protocol: {accuracy:.4}, in-process FedAvg: {reference:.4}");
    assert!(accuracy >= 0.88, "{accuracy}");
    assert!(
        (accuracy - reference).abs() <= 0.03,
        "{accuracy} vs {reference}"
    );
}

#[test]
fn silent_trainers_and_a_lost_proposal_do_not_stop_the_rounds() {
    let plan = plan(3);
    let mut h = Harness::new(&plan, Box::new(FedAvg), false);
    // Three trainers never train: the aggregator proceeds at the deadline with 7 updates.
    h.silent = [7, 8, 9].into_iter().collect();
    // One validator never receives proposals: it fetches the committed ones.
    h.deaf_to_proposals = Some(TRAINERS + 3);
    h.run(1_000_000);
    assert_eq!(h.finished, h.nodes.len());
    assert_eq!(h.log.len(), 3);
    assert_eq!(h.adopted[TRAINERS + 3].len(), 3);
    assert_eq!(h.adopted[TRAINERS + 3], h.adopted[0]);
    assert!(
        h.now >= Instant::ZERO + plan.round_timeout,
        "the deadline was needed"
    );
}

/// With the failure detector's word that three trainers are down, the aggregator proposes as
/// soon as the seven others reported, without waiting for the round's deadline.
#[test]
fn trainers_known_down_are_not_waited_for() {
    let plan = plan(3);
    let mut h = Harness::new(&plan, Box::new(FedAvg), false);
    h.silent = [7, 8, 9].into_iter().collect();
    for t in [7, 8, 9] {
        h.nodes[0].handle_member(h.now, id(t), true);
    }
    h.run(1_000_000);
    assert_eq!(h.finished, h.nodes.len());
    assert_eq!(h.log.len(), 3);
    assert!(
        h.now < Instant::ZERO + plan.round_timeout,
        "no deadline was needed: {:?}",
        h.now
    );
}

/// The aggregator learns of each commit after the trainers and validators did: their updates
/// and votes for the next round reach it before it gets there. It keeps them for that round
/// instead of dropping them, so no round waits for its deadline.
#[test]
fn messages_for_the_next_round_wait_for_a_lagging_aggregator() {
    let plan = plan(4);
    let mut h = Harness::new(&plan, Box::new(FedAvg), false);
    h.late_commits = Some(0);
    h.run(1_000_000);
    assert_eq!(h.finished, h.nodes.len());
    assert_eq!(h.log.len(), 4);
    assert_eq!(h.adopted[0], h.adopted[1]);
    assert!(
        h.now < Instant::ZERO + plan.round_timeout,
        "a round waited for its deadline: {:?}",
        h.now
    );
    assert_eq!(h.nodes[0].stats().stale, 0, "{:?}", h.nodes[0].stats());
}

/// A node that restarts after the run (or joins late) is handed every committed record at
/// once, as a driver replaying the ledger does: it adopts them round after round, fetching
/// each candidate from the aggregator, and ends with the same models.
#[test]
fn a_node_replaying_the_ledger_adopts_every_committed_round() {
    let plan = plan(4);
    let mut h = Harness::new(&plan, Box::new(FedAvg), false);
    h.run(1_000_000);
    assert_eq!(h.finished, h.nodes.len());
    let late = TRAINERS + 2;
    let mut init = Rng::new(3);
    let initial = Model::new(ARCH, &mut init).unwrap().parameters().unwrap();
    h.nodes[late] = Node::new(
        plan.clone(),
        key(late),
        initial,
        Box::new(FedAvg),
        None,
        Rng::new(99),
        h.now,
    )
    .unwrap();
    h.adopted[late].clear();
    h.finished -= 1;
    // Its first fetches are lost (the aggregator unreachable for a moment): it asks again.
    h.lose_fetches = 2;
    // The whole ledger at once, before any fetch is answered.
    for payload in h.log.clone() {
        h.nodes[late].handle_committed(h.now, &payload);
    }
    h.run(1_000_000);
    assert_eq!(h.finished, h.nodes.len());
    assert_eq!(h.adopted[late], h.adopted[0]);
    assert_eq!(h.nodes[late].global_id(), h.nodes[0].global_id());
}

/// An aggregator that turns the update around: its candidates are worse than the model
/// they build on.
struct Saboteur;

impl Aggregator for Saboteur {
    fn name(&self) -> &'static str {
        "saboteur"
    }
    fn aggregate(&self, updates: &[Update]) -> mesh_learning::Result<Vec<f32>> {
        let avg = FedAvg.aggregate(updates)?;
        Ok(avg.iter().map(|d| -20.0 * d).collect())
    }
}

#[test]
fn validators_refuse_a_candidate_worse_than_the_model_it_replaces() {
    // Round 1 is honest so the model is well above chance; then the aggregator sabotages.
    let plan = plan(1);
    let mut h = Harness::new(&plan, Box::new(FedAvg), false);
    h.run(1_000_000);
    let good = h.nodes[0].global().clone();
    let base = h.nodes[0].global_id();
    // A new federation starting from the trained model, with a saboteur aggregating.
    let plan = Plan { rounds: 2, ..plan };
    let mut h2 = Harness::new(&plan, Box::new(Saboteur), false);
    for (i, n) in h2.nodes.iter_mut().enumerate() {
        let rule: Box<dyn Aggregator + Send> = if i == 0 {
            Box::new(Saboteur)
        } else {
            Box::new(FedAvg)
        };
        *n = Node::new(
            plan.clone(),
            key(i),
            good.to_vec(),
            rule,
            None,
            Rng::new(1),
            Instant::ZERO,
        )
        .unwrap();
    }
    h2.run(3_000);
    assert!(h2.log.is_empty(), "a sabotaged model was committed");
    assert_eq!(h2.nodes[5].global_id(), base);
    let rejected: u64 = h2.nodes[TRAINERS..]
        .iter()
        .map(|n| n.stats().rejected_candidates)
        .sum();
    assert!(rejected >= 3, "{rejected}");
    assert!(h2.nodes[0].stats().retries >= 1);
}

/// A small plan for the bad-input checks: three trainers (node 0 aggregates), one validator.
fn small_plan() -> Plan {
    Plan {
        architecture: Architecture::Logistic {
            inputs: 4,
            classes: 2,
        },
        trainers: (0..3).map(id).collect(),
        aggregator: id(0),
        validators: vec![id(3)],
        min_updates: 2,
        round_timeout: Duration::from_secs(1),
        max_regression: 0.01,
        rounds: 5,
    }
}

fn update(from: usize, plan: &Plan, round: u64, base: Digest, delta: Vec<f32>) -> Vec<u8> {
    Envelope::seal(
        plan.task(),
        &key(from),
        Message::Update {
            round,
            attempt: 0,
            base,
            samples: 10,
            delta: mesh_learning::round::Delta::Dense(delta),
        },
    )
    .encode()
}

#[test]
fn bad_updates_and_records_are_refused_and_counted() {
    let plan = small_plan();
    let initial = vec![0.0f32; 10];
    let base = ModelId::of(&plan.architecture, &initial).unwrap().0;
    let mut agg = Node::new(
        plan.clone(),
        key(0),
        initial.clone(),
        Box::new(FedAvg),
        None,
        Rng::new(1),
        Instant::ZERO,
    )
    .unwrap();
    let now = Instant::ZERO;
    let good = vec![0.1f32; 10];
    // Malformed, truncated and oversized input.
    agg.handle_message(now, b"garbage");
    let ok = update(1, &plan, 1, base, good.clone());
    agg.handle_message(now, &ok[..ok.len() - 1]);
    agg.handle_message(now, &vec![1u8; 1 << 20]);
    assert_eq!(agg.stats().malformed, 3);
    // A forged signature, and another federation's message.
    let mut forged = ok.clone();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    agg.handle_message(now, &forged);
    let other = Plan {
        rounds: 6,
        ..plan.clone()
    };
    agg.handle_message(now, &update(1, &other, 1, base, good.clone()));
    assert_eq!(agg.stats().bad_signature, 2);
    // A stranger (validly signed, not a trainer).
    agg.handle_message(now, &update(9, &plan, 1, base, good.clone()));
    assert_eq!(agg.stats().unauthorized, 1);
    // Wrong model version, wrong round, wrong shape, non-finite values.
    agg.handle_message(now, &update(1, &plan, 1, Digest([7; 32]), good.clone()));
    assert_eq!(agg.stats().wrong_base, 1);
    // An update for a later round waits for it (kept, not refused); one for an earlier
    // round is stale.
    agg.handle_message(now, &update(1, &plan, 2, base, good.clone()));
    assert_eq!(agg.stats().stale, 0);
    agg.handle_message(now, &update(1, &plan, 0, base, good.clone()));
    assert_eq!(agg.stats().stale, 1);
    agg.handle_message(now, &update(1, &plan, 1, base, vec![0.1; 9]));
    assert_eq!(agg.stats().malformed + agg.stats().wrong_shape, 4);
    let mut nan = good.clone();
    nan[3] = f32::NAN;
    agg.handle_message(now, &update(1, &plan, 1, base, nan));
    let mut inf = good.clone();
    inf[0] = f32::INFINITY;
    agg.handle_message(now, &update(2, &plan, 1, base, inf));
    assert_eq!(agg.stats().non_finite, 2);
    // One good update, then the same trainer again.
    agg.handle_message(now, &ok);
    agg.handle_message(now, &update(1, &plan, 1, base, vec![0.2; 10]));
    assert_eq!(agg.stats().updates, 1);
    assert_eq!(agg.stats().duplicate, 1);
    // Committed records that do not verify are ignored: no votes, a forged vote.
    let record = ModelRecord {
        task: plan.task(),
        round: 1,
        attempt: 0,
        base,
        candidate: Digest([9; 32]),
        votes: vec![],
    };
    agg.handle_committed(now, &record.encode());
    let forged_vote = ModelRecord {
        votes: vec![(id(3), 900_000, mesh_crypto::ed25519::Signature([5; 64]))],
        ..record.clone()
    };
    agg.handle_committed(now, &forged_vote.encode());
    agg.handle_committed(now, b"AMFL");
    assert_eq!(agg.stats().bad_records, 3);
    assert_eq!(agg.round(), 1);
    assert_eq!(agg.global_id(), base);
}

#[test]
fn plans_and_nodes_refuse_bad_settings() {
    let plan = small_plan();
    let zeros = vec![0.0f32; 10];
    let new = |plan: Plan, initial: Vec<f32>| {
        Node::new(
            plan,
            key(0),
            initial,
            Box::new(FedAvg),
            None,
            Rng::new(1),
            Instant::ZERO,
        )
    };
    assert!(new(plan.clone(), vec![0.0; 9]).is_err());
    assert!(new(plan.clone(), vec![f32::NAN; 10]).is_err());
    let mut p = plan.clone();
    p.min_updates = 4;
    assert!(new(p, zeros.clone()).is_err());
    let mut p = plan.clone();
    p.trainers.push(id(1));
    assert!(new(p, zeros.clone()).is_err());
    let mut p = plan.clone();
    p.validators.clear();
    assert!(new(p, zeros.clone()).is_err());
    let mut p = plan.clone();
    p.round_timeout = Duration::ZERO;
    assert!(new(p, zeros.clone()).is_err());
    let mut p = plan;
    p.trainers[1] = NodeId([0; 32]); // not a valid Ed25519 key
    assert!(new(p, zeros).is_err());
}
