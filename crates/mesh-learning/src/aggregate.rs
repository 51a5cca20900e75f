//! Aggregation rules: how clients' models (or model deltas) become one.
//!
//! Every rule sits behind [`Aggregator`] and sees the same checked input: a non-empty list of
//! [`Update`]s of one length, all finite, each with the number of samples it was trained on.

use crate::error::{Error, Result};

/// One client's contribution: its parameters (or its delta from the global model) and the
/// number of training samples behind them.
#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    /// Flat parameters, in the model's layout.
    pub parameters: Vec<f32>,
    /// Training samples the client used; the weight of sample-weighted rules.
    pub samples: u64,
}

/// A rule combining updates into one parameter vector.
pub trait Aggregator {
    /// A short name for reports.
    fn name(&self) -> &'static str;

    /// Combines `updates` (checked by [`check_updates`] first).
    fn aggregate(&self, updates: &[Update]) -> Result<Vec<f32>>;
}

/// Checks that `updates` is non-empty, that all have the same length and that every value is
/// finite; returns the length.
pub fn check_updates(updates: &[Update]) -> Result<usize> {
    let first = updates
        .first()
        .ok_or_else(|| Error::invalid("updates", "none to aggregate"))?;
    let len = first.parameters.len();
    for (i, u) in updates.iter().enumerate() {
        if u.parameters.len() != len {
            return Err(Error::invalid(
                "updates",
                format!(
                    "update {i} has {} values, update 0 has {len}",
                    u.parameters.len()
                ),
            ));
        }
        if let Some(j) = u.parameters.iter().position(|x| !x.is_finite()) {
            return Err(Error::invalid(
                "updates",
                format!("update {i} has a non-finite value at index {j}"),
            ));
        }
    }
    Ok(len)
}

/// Federated averaging (McMahan et al. 2017): the mean of the updates weighted by their
/// sample counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FedAvg;

impl Aggregator for FedAvg {
    fn name(&self) -> &'static str {
        "fedavg"
    }

    fn aggregate(&self, updates: &[Update]) -> Result<Vec<f32>> {
        let len = check_updates(updates)?;
        let total: u64 = updates.iter().map(|u| u.samples).sum();
        if total == 0 {
            return Err(Error::invalid("updates", "no samples behind any update"));
        }
        let mut out = vec![0.0f32; len];
        for u in updates {
            let w = (u.samples as f64 / total as f64) as f32;
            for (o, &x) in out.iter_mut().zip(&u.parameters) {
                *o += w * x;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(parameters: &[f32], samples: u64) -> Update {
        Update {
            parameters: parameters.to_vec(),
            samples,
        }
    }

    #[test]
    fn fedavg_weights_by_samples() {
        let got = FedAvg
            .aggregate(&[update(&[1.0, 0.0], 1), update(&[4.0, 8.0], 3)])
            .unwrap();
        assert_eq!(got, [3.25, 6.0]);
        // Equal weights: the plain mean; a client with no samples counts for nothing.
        let got = FedAvg
            .aggregate(&[update(&[1.0], 2), update(&[3.0], 2), update(&[100.0], 0)])
            .unwrap();
        assert_eq!(got, [2.0]);
    }

    #[test]
    fn bad_updates_are_refused() {
        assert!(FedAvg.aggregate(&[]).is_err());
        let err = FedAvg
            .aggregate(&[update(&[1.0, 2.0], 1), update(&[1.0], 1)])
            .unwrap_err();
        assert!(err.to_string().contains("update 1 has 1 values"), "{err}");
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let err = FedAvg
                .aggregate(&[update(&[1.0, 2.0], 1), update(&[1.0, bad], 1)])
                .unwrap_err();
            assert!(
                err.to_string().contains("non-finite value at index 1"),
                "{err}"
            );
        }
        assert!(FedAvg.aggregate(&[update(&[1.0], 0)]).is_err());
    }
}
