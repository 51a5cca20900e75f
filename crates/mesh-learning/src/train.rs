//! Local training (mini-batch SGD with momentum, Adam, an optional FedProx proximal term) and
//! evaluation.
//!
//! Gradients come from candle's autograd; the optimizers run over the flat parameter vector,
//! in plain `f32` arithmetic in a fixed order, so a run is repeatable bit for bit given the
//! model, the data and the [`Rng`].

use candle_core::{D, Tensor};

use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::model::{Model, cross_entropy};
use crate::rng::Rng;

/// An optimizer and its hyperparameters.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Optimizer {
    /// Stochastic gradient descent with heavy-ball momentum (PyTorch's formulation:
    /// `b = momentum * b + g; w -= lr * b`).
    Sgd {
        /// Learning rate.
        lr: f32,
        /// Momentum in `[0, 1)`; 0 is plain SGD.
        momentum: f32,
    },
    /// Adam (Kingma and Ba) with bias correction.
    Adam {
        /// Learning rate.
        lr: f32,
        /// First-moment decay.
        beta1: f32,
        /// Second-moment decay.
        beta2: f32,
        /// Denominator offset.
        eps: f32,
    },
}

impl Optimizer {
    /// SGD with the given learning rate and momentum 0.9.
    pub fn sgd(lr: f32) -> Self {
        Self::Sgd { lr, momentum: 0.9 }
    }

    /// Adam with the given learning rate and the paper's defaults (0.9, 0.999, 1e-8).
    pub fn adam(lr: f32) -> Self {
        Self::Adam {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }

    fn validate(&self) -> Result<()> {
        let ok = match *self {
            Self::Sgd { lr, momentum } => {
                lr > 0.0 && lr.is_finite() && (0.0..1.0).contains(&momentum)
            }
            Self::Adam {
                lr,
                beta1,
                beta2,
                eps,
            } => {
                lr > 0.0
                    && lr.is_finite()
                    && (0.0..1.0).contains(&beta1)
                    && (0.0..1.0).contains(&beta2)
                    && eps > 0.0
            }
        };
        if ok {
            Ok(())
        } else {
            Err(Error::invalid("optimizer", format!("{self:?}")))
        }
    }
}

/// How to train locally.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Config {
    /// Passes over the local data.
    pub epochs: usize,
    /// Examples per step (the last batch of an epoch may be smaller).
    pub batch_size: usize,
    /// The optimizer; its state starts fresh at every call to [`train`].
    pub optimizer: Optimizer,
    /// FedProx's `mu` (Li et al. 2020): adds `mu/2 * ||w - w0||^2` to the loss, where `w0`
    /// are the parameters the call started from (the global model, for a federated client).
    /// 0 turns it off.
    pub proximal_mu: f32,
}

impl Config {
    fn validate(&self) -> Result<()> {
        self.optimizer.validate()?;
        if self.batch_size == 0 || !(self.proximal_mu >= 0.0 && self.proximal_mu.is_finite()) {
            return Err(Error::invalid("training config", format!("{self:?}")));
        }
        Ok(())
    }
}

/// What a call to [`train`] did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Report {
    /// Optimizer steps taken.
    pub steps: usize,
    /// Examples processed (counting repeats across epochs).
    pub examples: usize,
    /// Mean training loss over the last epoch (without the proximal term).
    pub last_epoch_loss: f64,
}

/// Accuracy and loss of a model on a data set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evaluation {
    /// Fraction of examples whose highest logit is the label.
    pub accuracy: f64,
    /// Mean cross-entropy.
    pub loss: f64,
    /// Examples evaluated.
    pub examples: usize,
}

fn check_fit(model: &Model, data: &Dataset) -> Result<()> {
    let arch = model.architecture();
    if data.dim() != arch.inputs() || data.classes() != arch.classes() {
        return Err(Error::invalid(
            "data set",
            format!(
                "{} features and {} classes for {arch:?}",
                data.dim(),
                data.classes()
            ),
        ));
    }
    Ok(())
}

/// A batch's inputs `[rows, dim]` and labels `[rows]` as tensors.
fn batch(model: &Model, data: &Dataset, rows: &[usize]) -> Result<(Tensor, Tensor)> {
    let mut x = Vec::with_capacity(rows.len() * data.dim());
    let mut y = Vec::with_capacity(rows.len());
    for &r in rows {
        x.extend_from_slice(&data.features()[r * data.dim()..(r + 1) * data.dim()]);
        y.push(data.labels()[r]);
    }
    let x = Tensor::from_vec(x, (rows.len(), data.dim()), model.device())?;
    let y = Tensor::from_vec(y, rows.len(), model.device())?;
    Ok((x, y))
}

/// Optimizer state over the flat parameter vector.
enum State {
    Sgd {
        lr: f32,
        momentum: f32,
        buf: Vec<f32>,
    },
    Adam {
        lr: f32,
        beta1: f32,
        beta2: f32,
        eps: f32,
        m: Vec<f32>,
        v: Vec<f32>,
        t: i32,
    },
}

impl State {
    fn new(opt: Optimizer, n: usize) -> Self {
        match opt {
            Optimizer::Sgd { lr, momentum } => Self::Sgd {
                lr,
                momentum,
                buf: vec![0.0; n],
            },
            Optimizer::Adam {
                lr,
                beta1,
                beta2,
                eps,
            } => Self::Adam {
                lr,
                beta1,
                beta2,
                eps,
                m: vec![0.0; n],
                v: vec![0.0; n],
                t: 0,
            },
        }
    }

    fn step(&mut self, w: &mut [f32], g: &[f32]) {
        match self {
            Self::Sgd { lr, momentum, buf } => {
                for ((w, &g), b) in w.iter_mut().zip(g).zip(buf.iter_mut()) {
                    *b = *momentum * *b + g;
                    *w -= *lr * *b;
                }
            }
            Self::Adam {
                lr,
                beta1,
                beta2,
                eps,
                m,
                v,
                t,
            } => {
                *t = t.saturating_add(1);
                let c1 = 1.0 - beta1.powi(*t);
                let c2 = 1.0 - beta2.powi(*t);
                for (((w, &g), m), v) in w.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                    *m = *beta1 * *m + (1.0 - *beta1) * g;
                    *v = *beta2 * *v + (1.0 - *beta2) * g * g;
                    *w -= *lr * (*m / c1) / ((*v / c2).sqrt() + *eps);
                }
            }
        }
    }
}

/// Trains `model` on `data` for `config.epochs` epochs of shuffled mini-batches (the order
/// drawn from `rng`). Fails, leaving the model at its last finite state, if the loss stops
/// being finite.
pub fn train(model: &mut Model, data: &Dataset, config: &Config, rng: &mut Rng) -> Result<Report> {
    config.validate()?;
    check_fit(model, data)?;
    let mut w = model.parameters()?;
    let anchor = (config.proximal_mu > 0.0).then(|| w.clone());
    let mut state = State::new(config.optimizer, w.len());
    let mut g = vec![0.0f32; w.len()];
    let mut order: Vec<usize> = (0..data.len()).collect();
    let mut report = Report {
        steps: 0,
        examples: 0,
        last_epoch_loss: f64::NAN,
    };
    for _ in 0..config.epochs {
        rng.shuffle(&mut order);
        let mut loss_sum = 0.0f64;
        for rows in order.chunks(config.batch_size) {
            let (x, y) = batch(model, data, rows)?;
            let loss = cross_entropy(&model.forward(&x)?, &y)?;
            let loss_value = f64::from(loss.to_scalar::<f32>()?);
            if !loss_value.is_finite() {
                return Err(Error::invalid(
                    "training",
                    format!("loss became {loss_value} at step {}", report.steps),
                ));
            }
            let grads = loss.backward()?;
            let mut offset = 0;
            for var in model.vars() {
                let n = var.elem_count();
                match grads.get(var.as_tensor()) {
                    Some(grad) => {
                        let grad = grad.flatten_all()?.to_vec1::<f32>()?;
                        g[offset..offset + n].copy_from_slice(&grad);
                    }
                    None => g[offset..offset + n].fill(0.0),
                }
                offset += n;
            }
            if let Some(anchor) = &anchor {
                for ((g, &w), &a) in g.iter_mut().zip(&w).zip(anchor) {
                    *g += config.proximal_mu * (w - a);
                }
            }
            state.step(&mut w, &g);
            model.set_parameters(&w)?;
            loss_sum += loss_value * rows.len() as f64;
            report.steps += 1;
            report.examples += rows.len();
        }
        report.last_epoch_loss = loss_sum / data.len().max(1) as f64;
    }
    Ok(report)
}

/// Accuracy and mean loss of `model` on `data` (in chunks of 1,024 examples).
pub fn evaluate(model: &Model, data: &Dataset) -> Result<Evaluation> {
    check_fit(model, data)?;
    if data.is_empty() {
        return Err(Error::invalid("evaluation", "empty data set"));
    }
    let rows: Vec<usize> = (0..data.len()).collect();
    let mut correct = 0usize;
    let mut loss_sum = 0.0f64;
    for chunk in rows.chunks(1024) {
        let (x, y) = batch(model, data, chunk)?;
        let logits = model.forward(&x)?;
        loss_sum += f64::from(cross_entropy(&logits, &y)?.to_scalar::<f32>()?) * chunk.len() as f64;
        let predicted = logits.argmax(D::Minus1)?.to_vec1::<u32>()?;
        correct += predicted
            .iter()
            .zip(chunk)
            .filter(|&(p, &r)| *p == data.labels()[r])
            .count();
    }
    Ok(Evaluation {
        accuracy: correct as f64 / data.len() as f64,
        loss: loss_sum / data.len() as f64,
        examples: data.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Architecture;

    /// Two Gaussian blobs per class in 4 dimensions, 3 classes: easy to separate.
    fn blobs(n: usize, seed: u64) -> Dataset {
        let mut rng = Rng::new(seed);
        let mut x = Vec::new();
        let mut y = Vec::new();
        for i in 0..n {
            let class = (i % 3) as u32;
            for d in 0..4 {
                let centre = if d == class as usize { 2.0 } else { 0.0 };
                x.push((centre + 0.5 * rng.normal()) as f32);
            }
            y.push(class);
        }
        Dataset::new(x, y, 4, 3).unwrap()
    }

    fn config(optimizer: Optimizer) -> Config {
        Config {
            epochs: 5,
            batch_size: 16,
            optimizer,
            proximal_mu: 0.0,
        }
    }

    #[test]
    fn every_optimizer_and_model_learns_a_separable_problem() {
        let data = blobs(300, 1);
        let test = blobs(150, 2);
        let archs = [
            Architecture::Logistic {
                inputs: 4,
                classes: 3,
            },
            Architecture::Mlp {
                inputs: 4,
                hidden: 16,
                classes: 3,
            },
            Architecture::Cnn {
                side: 2,
                channels: 4,
                classes: 3,
            },
        ];
        for arch in archs {
            for opt in [
                Optimizer::sgd(0.05),
                Optimizer::Sgd {
                    lr: 0.1,
                    momentum: 0.0,
                },
                Optimizer::adam(0.01),
            ] {
                let mut rng = Rng::new(3);
                let mut model = Model::new(arch, &mut rng).unwrap();
                let before = evaluate(&model, &test).unwrap();
                let report = train(&mut model, &data, &config(opt), &mut rng).unwrap();
                let after = evaluate(&model, &test).unwrap();
                assert_eq!(report.steps, 5 * 19);
                assert_eq!(report.examples, 1500);
                assert!(
                    after.accuracy > 0.9 && after.loss < before.loss,
                    "{arch:?} {opt:?}: {before:?} -> {after:?}"
                );
            }
        }
    }

    #[test]
    fn training_is_deterministic_under_a_seed() {
        let data = blobs(200, 1);
        let arch = Architecture::Mlp {
            inputs: 4,
            hidden: 8,
            classes: 3,
        };
        let run = |seed| {
            let mut rng = Rng::new(seed);
            let mut model = Model::new(arch, &mut rng).unwrap();
            train(&mut model, &data, &config(Optimizer::adam(0.01)), &mut rng).unwrap();
            model.parameters().unwrap()
        };
        assert_eq!(run(4), run(4));
        assert_ne!(run(4), run(5));
    }

    #[test]
    fn the_proximal_term_keeps_the_model_near_its_start() {
        let data = blobs(200, 1);
        let arch = Architecture::Logistic {
            inputs: 4,
            classes: 3,
        };
        let distance = |mu: f32| {
            let mut rng = Rng::new(6);
            let mut model = Model::new(arch, &mut rng).unwrap();
            let start = model.parameters().unwrap();
            let cfg = Config {
                proximal_mu: mu,
                ..config(Optimizer::sgd(0.05))
            };
            train(&mut model, &data, &cfg, &mut rng).unwrap();
            let end = model.parameters().unwrap();
            start
                .iter()
                .zip(&end)
                .map(|(a, b)| f64::from(a - b).powi(2))
                .sum::<f64>()
                .sqrt()
        };
        let (free, held) = (distance(0.0), distance(1.0));
        assert!(held < 0.7 * free, "{free} {held}");
    }

    #[test]
    fn bad_settings_and_mismatched_data_are_refused() {
        let data = blobs(30, 1);
        let mut rng = Rng::new(1);
        let arch = Architecture::Logistic {
            inputs: 4,
            classes: 3,
        };
        let mut model = Model::new(arch, &mut rng).unwrap();
        for bad in [
            Config {
                batch_size: 0,
                ..config(Optimizer::sgd(0.1))
            },
            config(Optimizer::sgd(-0.1)),
            config(Optimizer::Sgd {
                lr: 0.1,
                momentum: 1.0,
            }),
            Config {
                proximal_mu: f32::NAN,
                ..config(Optimizer::adam(0.1))
            },
        ] {
            assert!(train(&mut model, &data, &bad, &mut rng).is_err(), "{bad:?}");
        }
        let wide = Dataset::new(vec![0.0; 10], vec![0, 1], 5, 3).unwrap();
        assert!(train(&mut model, &wide, &config(Optimizer::sgd(0.1)), &mut rng).is_err());
        assert!(evaluate(&model, &wide).is_err());
        let empty = Dataset::new(vec![], vec![], 4, 3).unwrap();
        assert!(evaluate(&model, &empty).is_err());
    }

    #[test]
    fn divergence_is_reported_not_hidden() {
        // Features of 1e30: one step pushes the weights to ~1e30, and the next logits overflow.
        let data = Dataset::new(vec![1e30; 40], (0..10).map(|i| i % 3).collect(), 4, 3).unwrap();
        let mut rng = Rng::new(1);
        let arch = Architecture::Logistic {
            inputs: 4,
            classes: 3,
        };
        let mut model = Model::new(arch, &mut rng).unwrap();
        let err = train(&mut model, &data, &config(Optimizer::sgd(1.0)), &mut rng).unwrap_err();
        assert!(err.to_string().contains("loss became NaN"), "{err}");
        assert!(model.parameters().unwrap().iter().all(|w| w.is_finite()));
    }
}
