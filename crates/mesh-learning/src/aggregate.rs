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
        if let Some(j) = first_non_finite(&u.parameters) {
            return Err(Error::invalid(
                "updates",
                format!("update {i} has a non-finite value at index {j}"),
            ));
        }
    }
    Ok(len)
}

/// The index of the first NaN or infinity in `x`: blocks are checked with a branch-free fold
/// (which the compiler vectorizes) and only a failing block is searched.
fn first_non_finite(x: &[f32]) -> Option<usize> {
    const BLOCK: usize = 1024;
    x.chunks(BLOCK)
        .position(|c| !c.iter().fold(true, |ok, v| ok & v.is_finite()))
        .and_then(|b| {
            let c = &x[b * BLOCK..x.len().min((b + 1) * BLOCK)];
            c.iter().position(|v| !v.is_finite()).map(|j| b * BLOCK + j)
        })
}

/// Coordinates per block in the aggregators' blocked loops: a block of every update stays in
/// cache while all updates are combined, so memory is read once.
const BLOCK: usize = 2048;

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
        // Sums in f64, divided once: identical updates come back exactly. Block by block, so
        // the sums stay in cache while every update streams through once.
        let total = total as f64;
        let mut out = Vec::with_capacity(len);
        let mut sum = [0.0f64; BLOCK];
        for start in (0..len).step_by(BLOCK) {
            let end = (start + BLOCK).min(len);
            let sum = &mut sum[..end - start];
            sum.fill(0.0);
            for u in updates {
                let w = u.samples as f64;
                for (o, &x) in sum.iter_mut().zip(&u.parameters[start..end]) {
                    *o += w * f64::from(x);
                }
            }
            out.extend(sum.iter().map(|&s| (s / total) as f32));
        }
        Ok(out)
    }
}

/// Coordinate-wise median (Yin et al. 2018): each coordinate is the median of the updates'
/// values there (the mean of the two middle values for an even count). Ignores sample counts:
/// a robust rule must not let a client buy influence by claiming many samples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Median;

impl Aggregator for Median {
    fn name(&self) -> &'static str {
        "median"
    }

    fn aggregate(&self, updates: &[Update]) -> Result<Vec<f32>> {
        coordinate_wise(updates, 0, |sorted| {
            let n = sorted.len();
            if n % 2 == 1 {
                sorted[n / 2]
            } else {
                (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
            }
        })
    }
}

/// Coordinate-wise trimmed mean (Yin et al. 2018): at each coordinate the `trim` largest and
/// `trim` smallest values are dropped and the rest averaged. Ignores sample counts, like
/// [`Median`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrimmedMean {
    /// Values dropped at each end of every coordinate; at least one value must remain.
    pub trim: usize,
}

impl Aggregator for TrimmedMean {
    fn name(&self) -> &'static str {
        "trimmed-mean"
    }

    fn aggregate(&self, updates: &[Update]) -> Result<Vec<f32>> {
        let trim = self.trim;
        coordinate_wise(updates, trim, |sorted| {
            let kept = &sorted[trim..sorted.len() - trim];
            kept.iter().sum::<f32>() / kept.len() as f32
        })
    }
}

/// Applies `rule` to every coordinate's values, sorted; `trim` values must be droppable from
/// each end.
fn coordinate_wise(
    updates: &[Update],
    trim: usize,
    rule: impl Fn(&[f32]) -> f32,
) -> Result<Vec<f32>> {
    let len = check_updates(updates)?;
    if updates.len() <= 2 * trim {
        return Err(Error::invalid(
            "aggregator",
            format!("trimming {trim} from each end of {} updates", updates.len()),
        ));
    }
    let mut column = vec![0.0f32; updates.len()];
    let mut out = Vec::with_capacity(len);
    for j in 0..len {
        for (c, u) in column.iter_mut().zip(updates) {
            *c = u.parameters[j];
        }
        column.sort_unstable_by(f32::total_cmp);
        out.push(rule(&column));
    }
    Ok(out)
}

/// Multi-Krum (Blanchard et al. 2017) for at most `byzantine` faulty updates: each update is
/// scored by the sum of squared distances to its `n - byzantine - 2` nearest others, and the
/// mean of the `select` best-scored updates is the result (`select = 1` is Krum). Needs
/// `n >= 2 * byzantine + 3`. Ignores sample counts, like [`Median`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MultiKrum {
    /// The number of faulty updates tolerated (`f`).
    pub byzantine: usize,
    /// How many updates to average (`m`), from 1 to `n`.
    pub select: usize,
}

impl MultiKrum {
    /// The indices of the updates Multi-Krum selects, best score first (ties by index).
    pub fn selected(&self, updates: &[Update]) -> Result<Vec<usize>> {
        check_updates(updates)?;
        let n = updates.len();
        if n < 2 * self.byzantine + 3 || self.select == 0 || self.select > n {
            return Err(Error::invalid(
                "aggregator",
                format!(
                    "Multi-Krum with f = {} and m = {} over {n} updates (needs n >= 2f + 3, 1 <= m <= n)",
                    self.byzantine, self.select
                ),
            ));
        }
        // Blocked over coordinates: one block of all updates stays in cache while every pair
        // is compared, so each update is read from memory once instead of n - 1 times.
        let len = updates[0].parameters.len();
        let mut dist = vec![0.0f64; n * n];
        for start in (0..len).step_by(BLOCK) {
            let end = (start + BLOCK).min(len);
            for a in 0..n {
                let x = &updates[a].parameters[start..end];
                for b in a + 1..n {
                    dist[a * n + b] += squared_distance(x, &updates[b].parameters[start..end]);
                }
            }
        }
        for a in 0..n {
            for b in a + 1..n {
                dist[b * n + a] = dist[a * n + b];
            }
        }
        let neighbours = n - self.byzantine - 2;
        let mut scores: Vec<(f64, usize)> = (0..n)
            .map(|a| {
                let mut row: Vec<f64> = (0..n)
                    .filter(|&b| b != a)
                    .map(|b| dist[a * n + b])
                    .collect();
                row.sort_unstable_by(f64::total_cmp);
                (row[..neighbours].iter().sum(), a)
            })
            .collect();
        scores.sort_unstable_by(|x, y| x.0.total_cmp(&y.0).then(x.1.cmp(&y.1)));
        Ok(scores[..self.select].iter().map(|&(_, i)| i).collect())
    }
}

/// The squared L2 distance of two equally long slices: eight `f32` lanes (vectorized) over at
/// most one block, summed in `f64`.
fn squared_distance(x: &[f32], y: &[f32]) -> f64 {
    let mut lanes = [0.0f32; 8];
    let (xs, ys) = (x.chunks_exact(8), y.chunks_exact(8));
    let tail: f64 = xs
        .remainder()
        .iter()
        .zip(ys.remainder())
        .map(|(a, b)| f64::from(a - b).powi(2))
        .sum();
    for (a, b) in xs.zip(ys) {
        for l in 0..8 {
            let d = a[l] - b[l];
            lanes[l] += d * d;
        }
    }
    lanes.iter().map(|&l| f64::from(l)).sum::<f64>() + tail
}

impl Aggregator for MultiKrum {
    fn name(&self) -> &'static str {
        "multi-krum"
    }

    fn aggregate(&self, updates: &[Update]) -> Result<Vec<f32>> {
        let chosen = self.selected(updates)?;
        let mut out = vec![0.0f32; updates[0].parameters.len()];
        for &i in &chosen {
            for (o, &x) in out.iter_mut().zip(&updates[i].parameters) {
                *o += x;
            }
        }
        let m = chosen.len() as f32;
        out.iter_mut().for_each(|o| *o /= m);
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
        let robust: [&dyn Aggregator; 3] = [
            &Median,
            &TrimmedMean { trim: 1 },
            &MultiKrum {
                byzantine: 1,
                select: 2,
            },
        ];
        let five = |bad: f32| -> Vec<Update> {
            (0..5)
                .map(|i| update(&[i as f32, if i == 4 { bad } else { 0.0 }], 1))
                .collect()
        };
        for rule in robust {
            assert!(rule.aggregate(&five(0.0)).is_ok(), "{}", rule.name());
            assert!(rule.aggregate(&five(f32::NAN)).is_err(), "{}", rule.name());
            assert!(rule.aggregate(&[]).is_err(), "{}", rule.name());
        }
    }

    #[test]
    fn identical_updates_come_back_unchanged_from_every_rule() {
        let same: Vec<Update> = (0..7).map(|_| update(&[0.5, -2.0, 3.25], 3)).collect();
        let rules: [&dyn Aggregator; 4] = [
            &FedAvg,
            &Median,
            &TrimmedMean { trim: 2 },
            &MultiKrum {
                byzantine: 2,
                select: 3,
            },
        ];
        for rule in rules {
            assert_eq!(
                rule.aggregate(&same).unwrap(),
                [0.5, -2.0, 3.25],
                "{}",
                rule.name()
            );
        }
    }

    #[test]
    fn median_and_trimmed_mean_by_hand() {
        let ups = [
            update(&[1.0, 10.0], 1),
            update(&[2.0, -50.0], 100),
            update(&[3.0, 20.0], 1),
            update(&[1000.0, 30.0], 1),
        ];
        // Sorted columns: [1, 2, 3, 1000] and [-50, 10, 20, 30]; sample counts do not matter.
        assert_eq!(Median.aggregate(&ups).unwrap(), [2.5, 15.0]);
        assert_eq!(Median.aggregate(&ups[..3]).unwrap(), [2.0, 10.0]);
        assert_eq!(
            TrimmedMean { trim: 1 }.aggregate(&ups).unwrap(),
            [2.5, 15.0]
        );
        assert_eq!(
            TrimmedMean { trim: 0 }.aggregate(&ups).unwrap(),
            [251.5, 2.5]
        );
        let err = TrimmedMean { trim: 2 }.aggregate(&ups).unwrap_err();
        assert!(err.to_string().contains("trimming 2"), "{err}");
    }

    #[test]
    fn multi_krum_keeps_the_cluster_and_drops_the_outliers() {
        // Five honest updates near (1, 1), two attackers far away.
        let mut ups: Vec<Update> = [0.9f32, 1.0, 1.1, 0.95, 1.05]
            .iter()
            .map(|&x| update(&[x, 2.0 - x], 10))
            .collect();
        ups.push(update(&[-50.0, 80.0], 1000));
        ups.push(update(&[-49.0, 81.0], 1000));
        let krum = MultiKrum {
            byzantine: 2,
            select: 5,
        };
        let mut chosen = krum.selected(&ups).unwrap();
        chosen.sort_unstable();
        assert_eq!(chosen, [0, 1, 2, 3, 4]);
        let got = krum.aggregate(&ups).unwrap();
        assert!(
            (got[0] - 1.0).abs() < 1e-6 && (got[1] - 1.0).abs() < 1e-6,
            "{got:?}"
        );
        // Krum (m = 1) picks an honest update.
        let krum = MultiKrum {
            byzantine: 2,
            select: 1,
        };
        assert!(krum.selected(&ups).unwrap()[0] < 5);
        // FedAvg, weighted by the claimed samples, is dragged far off.
        assert!(FedAvg.aggregate(&ups).unwrap()[0] < -40.0);
        for bad in [
            MultiKrum {
                byzantine: 3,
                select: 2,
            },
            MultiKrum {
                byzantine: 1,
                select: 0,
            },
            MultiKrum {
                byzantine: 1,
                select: 8,
            },
        ] {
            assert!(bad.aggregate(&ups).is_err(), "{bad:?}");
        }
    }
}
