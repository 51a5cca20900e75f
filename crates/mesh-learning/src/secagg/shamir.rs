//! Shamir secret sharing over GF(2^8), byte by byte.
//!
//! A secret of `N` bytes is shared as `N` independent polynomials of degree `threshold - 1`
//! over GF(2^8) (the AES field, modulo `x^8 + x^4 + x^3 + x + 1`), one per byte, whose constant
//! terms are the secret's bytes. A share is the evaluation of all of them at one non-zero point
//! `x`; any `threshold` shares with distinct points give the secret back by Lagrange
//! interpolation at 0, and fewer reveal nothing about it. With one byte per point there are at
//! most 255 shares (points 1 to 255).
//!
//! Field arithmetic is branch-free and table-free (shift-and-add multiplication, inversion as
//! `a^254`), so timing does not depend on secret bytes.

use super::Error;

/// One share: the evaluation point and the `N` evaluated bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Share<const N: usize> {
    /// The evaluation point (never 0).
    pub x: u8,
    /// The polynomials' values at `x`, one per secret byte.
    pub y: [u8; N],
}

impl<const N: usize> std::fmt::Debug for Share<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Share(x = {}, ..)", self.x)
    }
}

impl<const N: usize> zeroize::Zeroize for Share<N> {
    fn zeroize(&mut self) {
        self.y.zeroize();
    }
}

/// Multiplication in GF(2^8) modulo the AES polynomial, in constant time.
pub(crate) fn mul(mut a: u8, mut b: u8) -> u8 {
    let mut p = 0u8;
    for _ in 0..8 {
        // Add `a` when b's low bit is set, without a branch.
        p ^= a & 0u8.wrapping_sub(b & 1);
        let carry = a >> 7;
        a = (a << 1) ^ (0x1b & 0u8.wrapping_sub(carry));
        b >>= 1;
    }
    p
}

/// The multiplicative inverse (`a^254`; 0 maps to 0).
pub(crate) fn inv(a: u8) -> u8 {
    // 254 = 0b1111_1110: square-and-multiply with a fixed exponent.
    let mut result = 1u8;
    let mut base = a;
    let mut e = 254u8;
    while e > 0 {
        if e & 1 == 1 {
            result = mul(result, base);
        }
        base = mul(base, base);
        e >>= 1;
    }
    result
}

/// Splits `secret` into one share per point of `xs` (distinct, non-zero), any `threshold` of
/// which reconstruct it. `random` fills buffers with the polynomials' random coefficients
/// (`(threshold - 1) * N` bytes are drawn); it must be a secret, unpredictable source.
pub fn split<const N: usize>(
    secret: &[u8; N],
    threshold: usize,
    xs: &[u8],
    mut random: impl FnMut(&mut [u8]),
) -> Result<Vec<Share<N>>, Error> {
    if threshold == 0 || threshold > xs.len() {
        return Err(Error::Shamir {
            detail: format!("threshold {threshold} for {} shares", xs.len()),
        });
    }
    check_points(xs.iter().copied())?;
    // coefficients[d] holds the degree-(d + 1) coefficient of every byte's polynomial.
    let mut coefficients = zeroize::Zeroizing::new(vec![[0u8; N]; threshold - 1]);
    for c in coefficients.iter_mut() {
        random(c);
    }
    Ok(xs
        .iter()
        .map(|&x| {
            let mut y = [0u8; N];
            for (k, yk) in y.iter_mut().enumerate() {
                // Horner's rule from the highest coefficient down to the secret byte.
                let mut acc = 0u8;
                for c in coefficients.iter().rev() {
                    acc = mul(acc, x) ^ c[k];
                }
                *yk = mul(acc, x) ^ secret[k];
            }
            Share { x, y }
        })
        .collect())
}

/// Reconstructs the secret from shares with distinct non-zero points (the caller passes
/// exactly `threshold` of them, or more of one consistent sharing). With fewer than the
/// threshold the result is a uniformly random value unrelated to the secret.
pub fn combine<const N: usize>(shares: &[Share<N>]) -> Result<[u8; N], Error> {
    if shares.is_empty() {
        return Err(Error::Shamir {
            detail: "no shares to combine".into(),
        });
    }
    check_points(shares.iter().map(|s| s.x))?;
    let mut secret = [0u8; N];
    for (i, si) in shares.iter().enumerate() {
        // The Lagrange basis polynomial of point i, at 0: prod_{j != i} x_j / (x_j - x_i);
        // subtraction is XOR in characteristic 2.
        let mut num = 1u8;
        let mut den = 1u8;
        for (j, sj) in shares.iter().enumerate() {
            if i != j {
                num = mul(num, sj.x);
                den = mul(den, sj.x ^ si.x);
            }
        }
        let l = mul(num, inv(den));
        for (out, &y) in secret.iter_mut().zip(&si.y) {
            *out ^= mul(l, y);
        }
    }
    Ok(secret)
}

fn check_points(xs: impl Iterator<Item = u8>) -> Result<(), Error> {
    let mut seen = [false; 256];
    for x in xs {
        if x == 0 || seen[usize::from(x)] {
            return Err(Error::Shamir {
                detail: format!("point {x} is zero or repeated"),
            });
        }
        seen[usize::from(x)] = true;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn stream(seed: u64) -> impl FnMut(&mut [u8]) {
        let mut rng = crate::Rng::new(seed);
        move |buf: &mut [u8]| buf.iter_mut().for_each(|b| *b = rng.next_u64() as u8)
    }

    #[test]
    fn field_arithmetic_matches_known_values() {
        // FIPS 197 section 4.2: {57} * {83} = {c1}, {57} * {13} = {fe}.
        assert_eq!(mul(0x57, 0x83), 0xc1);
        assert_eq!(mul(0x57, 0x13), 0xfe);
        // FIPS 197 section 5.1.1's S-box is built from inverses: {53}^-1 = {ca}.
        assert_eq!(inv(0x53), 0xca);
        for a in 1..=255u8 {
            assert_eq!(mul(a, inv(a)), 1, "{a}");
            assert_eq!(mul(a, 1), a);
            assert_eq!(mul(a, 0), 0);
        }
        assert_eq!(inv(0), 0);
    }

    #[test]
    fn bad_arguments_are_errors() {
        let s = [7u8; 4];
        assert!(split(&s, 0, &[1, 2], stream(1)).is_err());
        assert!(split(&s, 3, &[1, 2], stream(1)).is_err());
        assert!(split(&s, 2, &[1, 0], stream(1)).is_err());
        assert!(split(&s, 2, &[3, 3], stream(1)).is_err());
        assert!(combine::<4>(&[]).is_err());
        let shares = split(&s, 2, &[1, 2, 3], stream(1)).unwrap();
        let twice = [shares[0].clone(), shares[0].clone()];
        assert!(combine(&twice).is_err());
    }

    #[test]
    fn threshold_one_is_the_secret_itself() {
        let s = [9u8, 8, 7];
        for share in split(&s, 1, &[1, 2, 200], stream(2)).unwrap() {
            assert_eq!(share.y, s);
        }
    }

    proptest! {
        /// Any `t` of `n` shares reconstruct the secret; `t - 1` of them give another value
        /// (the chance of hitting the secret by accident is 2^-256).
        #[test]
        fn any_threshold_of_the_shares_reconstructs(
            secret in any::<[u8; 32]>(),
            n in 1usize..=40,
            t_frac in 0.0f64..1.0,
            seed in any::<u64>(),
            pick in any::<u64>(),
        ) {
            let t = 1 + ((n as f64 * t_frac) as usize).min(n - 1);
            // Points spread over the whole range, not just 1..=n.
            let xs: Vec<u8> = (0..n).map(|i| (255 - i * 6) as u8).collect();
            let shares = split(&secret, t, &xs, stream(seed)).unwrap();
            prop_assert_eq!(shares.len(), n);
            let mut order: Vec<usize> = (0..n).collect();
            crate::Rng::new(pick).shuffle(&mut order);
            let subset: Vec<Share<32>> = order[..t].iter().map(|&i| shares[i].clone()).collect();
            prop_assert_eq!(combine(&subset).unwrap(), secret);
            // More shares than needed, all from one sharing, also work.
            prop_assert_eq!(combine(&shares).unwrap(), secret);
            if t > 1 {
                prop_assert_ne!(combine(&subset[..t - 1]).unwrap(), secret);
            }
        }
    }
}
