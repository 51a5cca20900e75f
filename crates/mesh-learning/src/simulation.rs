//! Federated training simulated in one process: every client trains on its shard each round
//! and an [`Aggregator`] combines the results, optionally with some clients attacking. For
//! experiments, tests and benches; it is the reference the networked round protocol must
//! match, not that protocol.

use crate::aggregate::{Aggregator, Update};
use crate::compress::{Compressor, dense_bytes};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::model::{Architecture, Model};
use crate::privacy::{Accountant, add_gaussian_noise, clip_l2};
use crate::rng::Rng;
use crate::secagg;
use crate::train::{Config, train};
use crate::version::ModelId;

/// What attacking clients send instead of the model they trained (`w` is the round's global
/// model, `w_i` a client's trained model).
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Attack {
    /// Sign flipping: `w - scale * (w_i - w)`, the update reversed and scaled.
    SignFlip {
        /// How much to scale the reversed update.
        scale: f32,
    },
    /// Scaling: `w + factor * (w_i - w)`, the update amplified.
    Scale {
        /// The amplification.
        factor: f32,
    },
    /// "A little is enough" (Baruch, Baruch and Goldberg 2019): every attacker sends
    /// `mean - z * std`, coordinate-wise over the attackers' own honestly trained models:
    /// a shift small enough to stay among the honest values that robust rules keep.
    LittleIsEnough {
        /// How many standard deviations to shift (the paper's `z_max`; about 0.52 for 3 of 10).
        z: f32,
    },
}

/// DP-FedAvg (McMahan et al. 2018) settings: every client's delta from the global model is
/// clipped to L2 norm `clip`, the aggregator combines the clipped deltas (with equal weights),
/// and Gaussian noise of standard deviation `noise_multiplier * clip / clients` is added to the
/// result. Every client takes part in every round, so each round is one Gaussian mechanism
/// with sampling rate 1 on a client's contribution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dp {
    /// The L2 bound on each client's delta.
    pub clip: f64,
    /// Noise standard deviation over sensitivity (`z`).
    pub noise_multiplier: f64,
}

impl Dp {
    /// The privacy spent after `rounds` rounds, per client (user-level DP).
    pub fn accountant_after(&self, rounds: u64) -> Result<Accountant> {
        let mut acc = Accountant::default();
        acc.compose_sampled_gaussian(1.0, self.noise_multiplier, rounds)?;
        Ok(acc)
    }
}

/// The update traffic of a compressed run, client to aggregator.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Bytes of the encoded messages sent.
    pub sent: u64,
    /// Bytes the same updates take as dense `f32` vectors.
    pub dense: u64,
}

impl Traffic {
    /// How many times smaller the messages were than the dense updates.
    pub fn ratio(&self) -> f64 {
        self.dense as f64 / self.sent.max(1) as f64
    }
}

/// FedAvg through secure aggregation ([`Federation::run_secure`]): each client sends its
/// delta from the global model multiplied by its sample count, and the count itself as one
/// more coordinate, so the sum the aggregator learns is the sample-weighted sum of deltas and
/// the total weight.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Secure {
    /// The bound on each coordinate of a client's weighted delta (and on its sample count):
    /// larger values are clipped to it (see [`secagg::Config::clip`]).
    pub clip: f32,
    /// Shares needed to unmask: more than half the clients; up to `clients - threshold` may
    /// drop out.
    pub threshold: usize,
}

/// A federation: clients with their data, how they train, for how many rounds.
#[derive(Debug, Clone, Copy)]
pub struct Federation<'a> {
    /// The model every client trains.
    pub architecture: Architecture,
    /// Each client's training data.
    pub clients: &'a [Dataset],
    /// Local training of each client in each round.
    pub local: Config,
    /// Rounds to run.
    pub rounds: usize,
    /// The first `attackers` clients attack with `attack` (none when 0).
    pub attackers: usize,
    /// What attackers send.
    pub attack: Attack,
    /// Differential privacy (DP-FedAvg), if any.
    pub dp: Option<Dp>,
}

impl Federation<'_> {
    /// An honest federation.
    pub fn new(
        architecture: Architecture,
        clients: &[Dataset],
        local: Config,
        rounds: usize,
    ) -> Federation<'_> {
        Federation {
            architecture,
            clients,
            local,
            rounds,
            attackers: 0,
            attack: Attack::SignFlip { scale: 1.0 },
            dp: None,
        }
    }

    /// Runs the rounds from a model initialized from `rng`: in each round every client starts
    /// from the global model and trains on its own data, attackers replace their models, and
    /// `aggregator` combines all of them (with each client's sample count). `after_round(round,
    /// global)` is called after each round (from 1), e.g. to evaluate. Deterministic given
    /// `rng`: each client draws from its own fork of it.
    pub fn run(
        &self,
        aggregator: &dyn Aggregator,
        rng: &mut Rng,
        after_round: impl FnMut(usize, &Model) -> Result<()>,
    ) -> Result<Model> {
        Ok(self.run_inner(aggregator, None, rng, after_round)?.0)
    }

    /// [`run`](Self::run) with every client sending its delta from the global model through
    /// `compressor` (each client keeps its own error-feedback residual and its own fork of
    /// `rng` for sampling), the aggregator decoding the messages and combining `global +
    /// delta`. Returns the final model and the traffic.
    pub fn run_compressed(
        &self,
        aggregator: &dyn Aggregator,
        compressor: &dyn Compressor,
        rng: &mut Rng,
        after_round: impl FnMut(usize, &Model) -> Result<()>,
    ) -> Result<(Model, Traffic)> {
        self.run_inner(aggregator, Some(compressor), rng, after_round)
    }

    fn run_inner(
        &self,
        aggregator: &dyn Aggregator,
        compressor: Option<&dyn Compressor>,
        rng: &mut Rng,
        mut after_round: impl FnMut(usize, &Model) -> Result<()>,
    ) -> Result<(Model, Traffic)> {
        if self.clients.is_empty() || self.attackers > self.clients.len() {
            return Err(Error::invalid(
                "federation",
                format!(
                    "{} attackers among {} clients",
                    self.attackers,
                    self.clients.len()
                ),
            ));
        }
        if let Some(dp) = self.dp
            && !(dp.clip > 0.0
                && dp.clip.is_finite()
                && dp.noise_multiplier >= 0.0
                && dp.noise_multiplier.is_finite())
        {
            return Err(Error::invalid("DP settings", format!("{dp:?}")));
        }
        let mut global = Model::new(self.architecture, rng)?;
        let mut client_rngs: Vec<Rng> = self.clients.iter().map(|_| rng.fork()).collect();
        // Drawn only with DP on, so runs without it keep their streams.
        let mut server_rng = self.dp.map(|_| rng.fork());
        // Likewise drawn only with compression on: (sampling rng, residual) per client.
        let mut senders: Vec<(Rng, Vec<f32>)> = match compressor {
            Some(_) => self
                .clients
                .iter()
                .map(|_| (rng.fork(), Vec::new()))
                .collect(),
            None => Vec::new(),
        };
        let mut traffic = Traffic::default();
        for round in 1..=self.rounds {
            let start = global.parameters()?;
            let mut updates = Vec::with_capacity(self.clients.len());
            for (i, (data, client_rng)) in self.clients.iter().zip(&mut client_rngs).enumerate() {
                let mut model = Model::from_parameters(self.architecture, &start)?;
                train(&mut model, data, &self.local, client_rng)?;
                let mut parameters = model.parameters()?;
                if let (Some(c), Some((send_rng, residual))) = (compressor, senders.get_mut(i)) {
                    let delta: Vec<f32> =
                        parameters.iter().zip(&start).map(|(p, g)| p - g).collect();
                    let message = c.compress(&delta, residual, send_rng)?;
                    traffic.sent += message.len() as u64;
                    traffic.dense += dense_bytes(delta.len()) as u64;
                    let received = c.decompress(&message, start.len())?;
                    parameters = start.iter().zip(&received).map(|(g, d)| g + d).collect();
                }
                updates.push(Update {
                    parameters,
                    samples: data.len() as u64,
                });
            }
            self.attack_updates(&start, &mut updates[..self.attackers]);
            let next = match (self.dp, &mut server_rng) {
                (Some(dp), Some(noise_rng)) => {
                    for u in &mut updates {
                        for (p, &g) in u.parameters.iter_mut().zip(&start) {
                            *p -= g;
                        }
                        clip_l2(&mut u.parameters, dp.clip)?;
                        u.samples = 1;
                    }
                    let mut delta = aggregator.aggregate(&updates)?;
                    let std = dp.noise_multiplier * dp.clip / updates.len() as f64;
                    add_gaussian_noise(&mut delta, std, noise_rng)?;
                    start.iter().zip(&delta).map(|(g, d)| g + d).collect()
                }
                _ => aggregator.aggregate(&updates)?,
            };
            global.set_parameters(&next)?;
            after_round(round, &global)?;
        }
        Ok((global, traffic))
    }

    /// [`run`](Self::run) with FedAvg computed through secure aggregation ([`secagg`]): in
    /// each round every client trains, encodes `samples * (w_i - w)` followed by `samples`,
    /// and takes part in one secure-aggregation session (over the wire encodings, all in this
    /// process) whose id is the round and whose model id is the global model's
    /// [`ModelId`]; the new global model is `w + sum of weighted deltas / sum of samples`,
    /// computed from the exact integer sums (the fixed-point scale cancels). Training draws
    /// the same random streams as `run`, and the clients' secrets come from one more fork of
    /// `rng`. Neither attackers nor DP are supported here.
    pub fn run_secure(
        &self,
        secure: Secure,
        rng: &mut Rng,
        mut after_round: impl FnMut(usize, &Model) -> Result<()>,
    ) -> Result<Model> {
        if self.clients.is_empty() || self.attackers > 0 || self.dp.is_some() {
            return Err(Error::invalid(
                "federation",
                "secure aggregation runs honest clients without DP only",
            ));
        }
        let mut global = Model::new(self.architecture, rng)?;
        let mut client_rngs: Vec<Rng> = self.clients.iter().map(|_| rng.fork()).collect();
        let mut secrets = rng.fork();
        for round in 1..=self.rounds {
            let start = global.parameters()?;
            let d = start.len();
            let config = secagg::Config {
                round: round as u64,
                model: *ModelId::of(&self.architecture, &start)?.as_bytes(),
                clients: self.clients.len(),
                threshold: secure.threshold,
                dim: d + 1,
                clip: secure.clip,
            };
            let mut parties = Vec::with_capacity(self.clients.len());
            for (i, (data, client_rng)) in self.clients.iter().zip(&mut client_rngs).enumerate() {
                let id = secagg::ClientId::try_from(i)
                    .map_err(|_| Error::invalid("federation", "too many clients"))?;
                let mut model = Model::from_parameters(self.architecture, &start)?;
                train(&mut model, data, &self.local, client_rng)?;
                let samples = data.len() as f32;
                if samples > secure.clip {
                    return Err(Error::invalid(
                        "secure aggregation",
                        format!("client {i} has {samples} samples, above the clip"),
                    ));
                }
                let mut input: Vec<f32> = model
                    .parameters()?
                    .iter()
                    .zip(&start)
                    .map(|(p, g)| (p - g) * samples)
                    .collect();
                input.push(samples);
                let mut seed = [0u8; 32];
                for chunk in seed.chunks_exact_mut(8) {
                    chunk.copy_from_slice(&secrets.next_u64().to_le_bytes());
                }
                parties.push(secagg::Client::new(config, id, &seed, &input)?);
            }
            let sum = secure_sum(secagg::Server::new(config)?, &mut parties)?;
            let total = sum.integers.get(d).copied().unwrap_or(0);
            if total <= 0 {
                return Err(Error::invalid(
                    "secure aggregation",
                    "the sum of the sample counts is not positive",
                ));
            }
            let next: Vec<f32> = start
                .iter()
                .zip(&sum.integers)
                .map(|(g, &s)| g + (f64::from(s) / f64::from(total)) as f32)
                .collect();
            global.set_parameters(&next)?;
            after_round(round, &global)?;
        }
        Ok(global)
    }

    fn attack_updates(&self, global: &[f32], attackers: &mut [Update]) {
        if attackers.is_empty() {
            return;
        }
        match self.attack {
            Attack::SignFlip { scale } => {
                for u in attackers {
                    for (p, &g) in u.parameters.iter_mut().zip(global) {
                        *p = g - scale * (*p - g);
                    }
                }
            }
            Attack::Scale { factor } => {
                for u in attackers {
                    for (p, &g) in u.parameters.iter_mut().zip(global) {
                        *p = g + factor * (*p - g);
                    }
                }
            }
            Attack::LittleIsEnough { z } => {
                let n = attackers.len() as f64;
                let shifted: Vec<f32> = (0..global.len())
                    .map(|j| {
                        let mean = attackers
                            .iter()
                            .map(|u| f64::from(u.parameters[j]))
                            .sum::<f64>()
                            / n;
                        let var = attackers
                            .iter()
                            .map(|u| (f64::from(u.parameters[j]) - mean).powi(2))
                            .sum::<f64>()
                            / n;
                        (mean - f64::from(z) * var.sqrt()) as f32
                    })
                    .collect();
                for u in attackers {
                    u.parameters.clone_from(&shifted);
                }
            }
        }
    }
}

/// One secure-aggregation session with every client answering, through the wire encodings.
fn secure_sum(mut server: secagg::Server, clients: &mut [secagg::Client]) -> Result<secagg::Sum> {
    for c in clients.iter() {
        server.handle(&c.advertise().encode())?;
    }
    for _ in 0..3 {
        for (to, message) in server.close()? {
            let client = clients
                .get_mut(usize::from(to))
                .ok_or_else(|| Error::invalid("secure aggregation", "unknown recipient"))?;
            let answer = client.handle_bytes(&message.encode())?;
            server.handle(&answer.encode())?;
        }
    }
    Ok(server.finish()?)
}

/// The centralized baseline: a model initialized exactly as [`Federation::run`] initializes
/// its global model from the same `rng` state, trained on all of `data` with `config`.
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
