//! Federated training simulated in one process: every client trains on its shard each round
//! and an [`Aggregator`] combines the results. For experiments, tests and benches; it is the
//! reference the networked round protocol must match, not that protocol.

use crate::aggregate::{Aggregator, Update};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::model::{Architecture, Model};
use crate::rng::Rng;
use crate::train::{Config, train};

/// Runs `rounds` rounds of federated training from a model initialized from `rng`: in each
/// round every client starts from the global model, trains with `local` on its own data, and
/// `aggregator` combines the clients' models (weighted by their sample counts where the rule
/// uses weights). `after_round(round, global)` is called after each round (from 1), e.g. to
/// evaluate. Deterministic given `rng`: each client draws from its own fork of it.
pub fn federated(
    architecture: Architecture,
    clients: &[Dataset],
    local: &Config,
    rounds: usize,
    aggregator: &dyn Aggregator,
    rng: &mut Rng,
    mut after_round: impl FnMut(usize, &Model) -> Result<()>,
) -> Result<Model> {
    if clients.is_empty() {
        return Err(Error::invalid("simulation", "no clients"));
    }
    let mut global = Model::new(architecture, rng)?;
    let mut client_rngs: Vec<Rng> = clients.iter().map(|_| rng.fork()).collect();
    for round in 1..=rounds {
        let start = global.parameters()?;
        let mut updates = Vec::with_capacity(clients.len());
        for (data, client_rng) in clients.iter().zip(&mut client_rngs) {
            let mut model = Model::from_parameters(architecture, &start)?;
            train(&mut model, data, local, client_rng)?;
            updates.push(Update {
                parameters: model.parameters()?,
                samples: data.len() as u64,
            });
        }
        global.set_parameters(&aggregator.aggregate(&updates)?)?;
        after_round(round, &global)?;
    }
    Ok(global)
}

/// The centralized baseline: a model initialized exactly as [`federated`] initializes its
/// global model from the same `rng` state, trained on all of `data` with `config`.
pub fn centralized(
    architecture: Architecture,
    data: &Dataset,
    config: &Config,
    rng: &mut Rng,
) -> Result<Model> {
    let mut model = Model::new(architecture, rng)?;
    train(&mut model, data, config, rng)?;
    Ok(model)
}
