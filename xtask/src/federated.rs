//! The federated-learning phase of `cargo xtask testnet`: a run started through one node's
//! HTTP API, committed by consensus, trained by every validator process on its own non-IID
//! shard of the digits, with every global model committed before anyone adopts it. In the
//! chaos scenario a trainer that is not the aggregator is killed (SIGKILL) after the second
//! round and restarted two rounds later: the others go on without it (a round needs two
//! thirds of the updates), and it catches up from the ledger.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use mesh_api::types::{RunInfo, StartRun};

use crate::mesh::Mesh;
use crate::util::now;

/// Accuracy the last global model must reach (the validators' held-out slices).
const MIN_ACCURACY: f64 = 0.85;

/// What the phase measured.
pub(crate) struct Summary {
    pub(crate) rounds: u64,
    pub(crate) accuracy: f64,
    pub(crate) secs_per_round: f64,
    pub(crate) killed: Option<usize>,
}

/// Starts a run of `rounds` rounds on node 0 and follows it to the end.
pub(crate) fn run(mesh: &mut Mesh, rounds: u64, chaos: bool) -> Result<Summary> {
    println!(
        "\n==> federated learning: {rounds} rounds of an MLP on the digits over the {} validators \
         (each trains on its own non-IID shard; every model committed through consensus)",
        mesh.nodes.len()
    );
    let client = mesh.nodes[0].client();
    let started = now();
    let run = client
        .start_run(&StartRun {
            model: Some("mlp".into()),
            rounds: Some(rounds),
            seed: Some(1),
            round_timeout_s: Some(5),
            ..StartRun::default()
        })
        .context("starting a federated run through node 0's API")?;
    println!(
        "run {} committed at height {} (node 0 aggregates)",
        &run.id[..16],
        run.height
    );
    // A trainer to kill in chaos: not the aggregator (node 0).
    let victim = chaos.then_some(mesh.nodes.len() - 2);
    let mut killed_at = None;
    let mut shown = 0usize;
    let deadline = now() + Duration::from_secs(60 * rounds.max(1));
    let last = loop {
        let info = client.run(&run.id).context("reading the run's status")?;
        for r in &info.finished_rounds[shown..] {
            println!(
                "  round {:>2}: accuracy {:.3} (model {}, height {}) at {:.1}s",
                r.round,
                r.accuracy,
                &r.model[..12],
                r.height,
                started.elapsed().as_secs_f64()
            );
        }
        shown = info.finished_rounds.len();
        if let Some(v) = victim {
            if killed_at.is_none() && shown >= 2 && rounds >= 5 {
                println!("  killing trainer node {v} (SIGKILL): the rounds go on with the others");
                mesh.kill9(v)?;
                killed_at = Some(shown);
            } else if killed_at.is_some_and(|k| shown >= k + 2) && !mesh.nodes[v].running() {
                println!("  restarting node {v}: it catches up from the ledger");
                mesh.start(v)?;
            }
        }
        if info.state == "finished" {
            break info;
        }
        if info.state == "failed" {
            bail!(
                "the federated run failed on node 0: {}",
                info.error.unwrap_or_default()
            );
        }
        if now() > deadline {
            bail!(
                "the federated run did not finish in time ({shown} of {rounds} rounds); node 0's log ends:\n{}",
                mesh.log_tail(0, 20)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let secs = started.elapsed().as_secs_f64();
    let accuracy = last.finished_rounds.last().map_or(0.0, |r| r.accuracy);
    if accuracy < MIN_ACCURACY {
        bail!("the last global model reached {accuracy:.3}, below {MIN_ACCURACY}");
    }
    if let Some(v) = victim
        && !mesh.nodes[v].running()
    {
        mesh.start(v)?;
    }
    check_agreement(mesh, &last)?;
    Ok(Summary {
        rounds,
        accuracy,
        secs_per_round: secs / rounds.max(1) as f64,
        killed: victim.filter(|_| killed_at.is_some()),
    })
}

/// Every validator (the restarted one included, given time to catch up) reports the run
/// finished with the same committed models.
fn check_agreement(mesh: &mut Mesh, reference: &RunInfo) -> Result<()> {
    let models = |info: &RunInfo| -> Vec<String> {
        info.finished_rounds
            .iter()
            .map(|r| r.model.clone())
            .collect()
    };
    let want = models(reference);
    let deadline = now() + Duration::from_secs(90);
    for (i, node) in mesh.nodes.iter().enumerate() {
        loop {
            let seen = node.client().run(&reference.id).ok();
            if seen.as_ref().is_some_and(|s| models(s) == want) {
                break;
            }
            if now() > deadline {
                bail!(
                    "node {i} did not adopt the same {} committed models in time (it has {:?})",
                    want.len(),
                    seen.map(|s| models(&s).len())
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    println!(
        "every validator adopted the same {} committed models",
        want.len()
    );
    Ok(())
}
