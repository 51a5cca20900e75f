//! Differential privacy for updates: per-update L2 clipping, Gaussian noise, and a Rényi-DP
//! accountant for the (Poisson-subsampled) Gaussian mechanism that reports `(epsilon, delta)`.
//!
//! DP-FedAvg (McMahan et al. 2018) clips every client's delta to an L2 norm `C`, averages
//! them and adds Gaussian noise of standard deviation `noise_multiplier * C / clients` to the
//! average; each round is one sampled Gaussian mechanism with sampling rate `q` (the chance a
//! client takes part) and that noise multiplier, and [`Accountant`] composes the rounds.

use crate::error::{Error, Result};
use crate::rng::Rng;

/// Scales `update` down so its L2 norm is at most `max_norm`; returns the norm it had.
/// `max_norm` must be positive and finite, and the update finite.
pub fn clip_l2(update: &mut [f32], max_norm: f64) -> Result<f64> {
    if !(max_norm > 0.0 && max_norm.is_finite()) {
        return Err(Error::invalid("clipping norm", format!("{max_norm}")));
    }
    let norm = update
        .iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt();
    if !norm.is_finite() {
        return Err(Error::invalid("update", "non-finite value before clipping"));
    }
    if norm > max_norm {
        let scale = (max_norm / norm) as f32;
        update.iter_mut().for_each(|x| *x *= scale);
    }
    Ok(norm)
}

/// Adds independent `N(0, std^2)` noise to every value, drawn from `rng`.
pub fn add_gaussian_noise(values: &mut [f32], std: f64, rng: &mut Rng) -> Result<()> {
    if !(std >= 0.0 && std.is_finite()) {
        return Err(Error::invalid("noise standard deviation", format!("{std}")));
    }
    for x in values {
        *x += (std * rng.normal()) as f32;
    }
    Ok(())
}

/// The Rényi orders the accountant tracks by default: 2 to 64, 128 and 256.
pub fn default_orders() -> Vec<u32> {
    (2..=64).chain([128, 256]).collect()
}

/// A Rényi-DP accountant (Mironov 2017) over integer orders, for the Gaussian mechanism with
/// Poisson subsampling (Mironov, Talwar and Zhang 2019), under add-or-remove-one adjacency.
/// Its values match Google's `dp_accounting` `RdpAccountant` over the same orders (pinned in
/// the tests).
#[derive(Debug, Clone, PartialEq)]
pub struct Accountant {
    orders: Vec<u32>,
    rdp: Vec<f64>,
}

impl Default for Accountant {
    fn default() -> Self {
        Self::new(default_orders()).unwrap_or_else(|_| Self {
            orders: Vec::new(),
            rdp: Vec::new(),
        })
    }
}

impl Accountant {
    /// An accountant with nothing spent, over `orders` (each at least 2).
    pub fn new(orders: Vec<u32>) -> Result<Self> {
        if orders.is_empty() || orders.iter().any(|&a| a < 2) {
            return Err(Error::invalid("Rényi orders", format!("{orders:?}")));
        }
        let rdp = vec![0.0; orders.len()];
        Ok(Self { orders, rdp })
    }

    /// Accounts for `steps` runs of the Gaussian mechanism with noise multiplier `sigma`
    /// (noise standard deviation over sensitivity), each on a Poisson sample of rate `q`
    /// (`q = 1`: everyone, every time).
    pub fn compose_sampled_gaussian(&mut self, q: f64, sigma: f64, steps: u64) -> Result<()> {
        if !(q > 0.0 && q <= 1.0 && sigma > 0.0 && sigma.is_finite()) {
            return Err(Error::invalid(
                "Gaussian mechanism",
                format!("sampling rate {q}, noise multiplier {sigma}"),
            ));
        }
        for (r, &alpha) in self.rdp.iter_mut().zip(&self.orders) {
            *r += steps as f64 * sampled_gaussian_rdp(q, sigma, alpha);
        }
        Ok(())
    }

    /// The Rényi divergence bound at each order so far.
    pub fn rdp(&self) -> impl Iterator<Item = (u32, f64)> + '_ {
        self.orders.iter().copied().zip(self.rdp.iter().copied())
    }

    /// The smallest `epsilon` such that what was composed so far is `(epsilon, delta)`-DP,
    /// with the order that gives it, by the conversion of Balle et al. 2020 (Proposition 12 of
    /// "Hypothesis testing interpretations and Rényi DP"), as `dp_accounting` does.
    pub fn epsilon(&self, delta: f64) -> Result<(f64, u32)> {
        if !(delta > 0.0 && delta < 1.0) {
            return Err(Error::invalid("delta", format!("{delta}")));
        }
        let mut best = (f64::INFINITY, self.orders[0]);
        for (alpha, r) in self.rdp() {
            let a = f64::from(alpha);
            let eps = if delta * delta + (-r).exp_m1() > 0.0 {
                0.0
            } else {
                r + (-1.0 / a).ln_1p() - (delta * a).ln() / (a - 1.0)
            };
            if eps < best.0 {
                best = (eps, alpha);
            }
        }
        Ok((best.0.max(0.0), best.1))
    }
}

/// RDP of order `alpha` of one Poisson-subsampled Gaussian mechanism: `alpha / (2 sigma^2)`
/// without sampling, else `log(A_alpha) / (alpha - 1)` with
/// `A_alpha = sum_k C(alpha, k) (1 - q)^(alpha - k) q^k exp((k^2 - k) / (2 sigma^2))`,
/// summed in log space.
fn sampled_gaussian_rdp(q: f64, sigma: f64, alpha: u32) -> f64 {
    let a = f64::from(alpha);
    if q >= 1.0 {
        return a / (2.0 * sigma * sigma);
    }
    let (log_q, log_1q) = (q.ln(), (-q).ln_1p());
    let mut log_binom = 0.0f64; // log C(alpha, 0)
    let mut log_a = f64::NEG_INFINITY;
    for k in 0..=alpha {
        let kf = f64::from(k);
        if k > 0 {
            log_binom += (a - kf + 1.0).ln() - kf.ln();
        }
        let term =
            log_binom + kf * log_q + (a - kf) * log_1q + (kf * kf - kf) / (2.0 * sigma * sigma);
        log_a = log_add(log_a, term);
    }
    log_a / (a - 1.0)
}

fn log_add(x: f64, y: f64) -> f64 {
    let (hi, lo) = if x > y { (x, y) } else { (y, x) };
    if lo == f64::NEG_INFINITY {
        return hi;
    }
    hi + (lo - hi).exp().ln_1p()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * b.abs().max(1.0)
    }

    /// Values from Google's `dp_accounting` 0.6.0 (`RdpAccountant` with orders 2..=64, 128,
    /// 256, add-or-remove-one; `_compute_rdp_poisson_subsampled_gaussian` at orders 2, 8, 32):
    /// (q, sigma, steps, delta, epsilon, optimal order, RDP of one step at 2, 8, 32).
    type Case = (f64, f64, u64, f64, f64, u32, [f64; 3]);
    const DP_ACCOUNTING: &[Case] = &[
        (1.0, 1.0, 1, 1e-5, 4.752728336819822, 5, [1.0, 4.0, 16.0]),
        (
            1.0,
            5.0,
            100,
            1e-5,
            10.801691480042894,
            3,
            [0.04, 0.16, 0.64],
        ),
        (
            0.01,
            1.1,
            1000,
            1e-5,
            1.7252908180449444,
            9,
            [
                0.00012851008160516542,
                0.0005840703355202598,
                8.469416433675926,
            ],
        ),
        (
            256.0 / 60000.0,
            1.1,
            60 * 60000 / 256,
            1e-5,
            2.5969811785948815,
            8,
            [
                2.339577600995332e-05,
                9.834106177992806e-05,
                7.59018834621011,
            ],
        ),
        (
            0.1,
            1.0,
            50,
            1e-5,
            6.0214919768356925,
            4,
            [0.017036863236176605, 1.3783614113481268, 13.623137968522595],
        ),
        (
            0.3,
            2.0,
            80,
            1e-6,
            8.444799681668709,
            4,
            [0.025241035351696, 0.16085874237346848, 2.7582309544510144],
        ),
    ];

    #[test]
    fn the_accountant_matches_dp_accounting() {
        for &(q, sigma, steps, delta, eps, order, per_step) in DP_ACCOUNTING {
            for (alpha, want) in [2, 8, 32].into_iter().zip(per_step) {
                let got = sampled_gaussian_rdp(q, sigma, alpha);
                assert!(
                    close(got, want),
                    "q {q} sigma {sigma} order {alpha}: {got} vs {want}"
                );
            }
            let mut acc = Accountant::default();
            acc.compose_sampled_gaussian(q, sigma, steps).unwrap();
            let (got, got_order) = acc.epsilon(delta).unwrap();
            assert!(
                close(got, eps) && got_order == order,
                "{q} {sigma} {steps}: {got} at {got_order} vs {eps} at {order}"
            );
        }
    }

    #[test]
    fn composition_adds_and_more_noise_costs_less() {
        let mut once = Accountant::default();
        once.compose_sampled_gaussian(0.1, 1.0, 100).unwrap();
        let mut twice = Accountant::default();
        twice.compose_sampled_gaussian(0.1, 1.0, 50).unwrap();
        twice.compose_sampled_gaussian(0.1, 1.0, 50).unwrap();
        for ((_, a), (_, b)) in once.rdp().zip(twice.rdp()) {
            assert!(close(a, b));
        }
        let mut quiet = Accountant::default();
        quiet.compose_sampled_gaussian(0.1, 2.0, 100).unwrap();
        assert!(quiet.epsilon(1e-5).unwrap().0 < once.epsilon(1e-5).unwrap().0);
        assert_eq!(Accountant::default().epsilon(1e-5).unwrap().0, 0.0);
        assert!(once.compose_sampled_gaussian(0.0, 1.0, 1).is_err());
        assert!(once.compose_sampled_gaussian(0.5, 0.0, 1).is_err());
        assert!(once.epsilon(0.0).is_err());
        assert!(Accountant::new(vec![1, 2]).is_err());
    }

    #[test]
    fn clipping_bounds_the_norm_and_keeps_the_direction() {
        let mut v = vec![3.0f32, 4.0];
        assert_eq!(clip_l2(&mut v, 1.0).unwrap(), 5.0);
        assert!(
            (v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6,
            "{v:?}"
        );
        let mut small = vec![0.3f32, 0.4];
        clip_l2(&mut small, 1.0).unwrap();
        assert_eq!(small, [0.3, 0.4]);
        assert!(clip_l2(&mut [f32::NAN], 1.0).is_err());
        assert!(clip_l2(&mut v, 0.0).is_err());
    }

    #[test]
    fn noise_has_the_asked_spread() {
        let mut v = vec![0.0f32; 100_000];
        add_gaussian_noise(&mut v, 0.5, &mut Rng::new(4)).unwrap();
        let var = v.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / v.len() as f64;
        assert!((var.sqrt() - 0.5).abs() < 0.01, "{}", var.sqrt());
        assert!(add_gaussian_noise(&mut v, -1.0, &mut Rng::new(4)).is_err());
    }
}
