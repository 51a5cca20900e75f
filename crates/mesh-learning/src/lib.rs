//! Federated learning for agentmesh.
//!
//! This crate owns the learning side of the mesh: data sets in memory and how they are split
//! among clients, models and their local training on `candle-core` (CPU), and the rules that
//! combine clients' models into a global one.
//!
//! - [`data`]: [`Dataset`], the parser of scikit-learn's 8x8 digits file (fetched and verified
//!   by `cargo xtask data`), seeded stratified train/test splits, IID and Dirichlet (non-IID)
//!   partitions across clients;
//! - [`model`]: [`Architecture`] (logistic regression, an MLP, a small CNN) and [`Model`],
//!   whose parameters go in and out as one flat `f32` vector;
//! - [`train`](mod@train): local training with SGD + momentum or Adam, FedProx's proximal
//!   term, and evaluation (accuracy, loss);
//! - [`aggregate`]: the [`Aggregator`] trait and its rules: FedAvg (weighted by samples) and
//!   the Byzantine-robust coordinate-wise median, trimmed mean and Multi-Krum;
//! - [`compress`]: the [`Compressor`] trait and its methods: top-k with error feedback and a
//!   sampled threshold, random-k, QSGD-style stochastic quantization (8/4/2 bits) and 1-bit
//!   sign with scale, with compact encodings whose decoders refuse malformed input;
//! - [`privacy`]: per-update L2 clipping, Gaussian noise and a Rényi-DP [`Accountant`]
//!   (subsampled Gaussian mechanism) reporting `(epsilon, delta)`;
//! - [`round`]: the round protocol as a sans-IO state machine: trainers send signed,
//!   compressed updates, the aggregator combines them and proposes a candidate, validators
//!   evaluate it and vote, the candidate's hash is committed through consensus, and every
//!   node adopts only a committed model (named by its [`ModelId`]);
//! - [`secagg`]: secure aggregation (Bonawitz et al. 2017, double masking): sans-IO
//!   [`secagg::Client`] and [`secagg::Server`] state machines through which the aggregator
//!   learns only the sum of the clients' clipped, fixed-point updates, recovering from
//!   clients that drop out (Shamir shares of their mask seeds); X25519, HKDF and
//!   ChaCha20-Poly1305 from `mesh-crypto`, BLAKE3 as the mask generator; bounded encodings
//!   whose decoders refuse malformed input, and rejections counted by reason;
//! - [`simulation`]: federated training of many clients in one process, optionally with
//!   attackers (sign flipping, scaling, "a little is enough"), or through secure aggregation,
//!   and the centralized baseline it is measured against;
//! - [`version`]: content-addressed [`ModelId`]s (BLAKE3 of the architecture and the
//!   parameters), [`Lineage`] records (parent, round, aggregator, contributing clients) with a
//!   bounded, versioned encoding, and the compatibility check before merging an update;
//! - [`Rng`]: the seeded generator behind every random choice (initialization, shuffling,
//!   splits, partitions), fixed so that runs repeat across machines and upgrades.
//!
//! It is a protocol core: it never opens files or sockets, reads no clock, and draws no
//! randomness it was not handed (every randomized function takes an [`Rng`]). Inputs from
//! peers (parameters, updates) are checked for shape and finiteness and refused with an
//! [`Error`], never a panic.

#![forbid(unsafe_code)]

pub mod aggregate;
pub mod compress;
pub mod data;
pub mod error;
pub mod model;
pub mod privacy;
pub mod rng;
pub mod round;
pub mod secagg;
pub mod simulation;
pub mod train;
pub mod version;

pub use aggregate::{Aggregator, FedAvg, Median, MultiKrum, TrimmedMean, Update};
pub use compress::{Compressor, DecodeError, Qsgd, RandomK, SignSgd, TopK};
pub use data::Dataset;
pub use error::{Error, Result};
pub use model::{Architecture, Model};
pub use privacy::Accountant;
pub use rng::Rng;
pub use train::{Config, Evaluation, Optimizer, Report, evaluate, train};
pub use version::{Lineage, ModelId};
