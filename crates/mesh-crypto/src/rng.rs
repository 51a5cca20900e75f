//! Operating-system randomness.

use ring::rand::{SecureRandom, SystemRandom};

use crate::error::{Error, Result};

/// `N` bytes from the operating system's cryptographic random number generator.
pub fn random_array<const N: usize>() -> Result<[u8; N]> {
    let mut out = [0u8; N];
    fill(&mut out)?;
    Ok(out)
}

pub(crate) fn fill(out: &mut [u8]) -> Result<()> {
    SystemRandom::new().fill(out).map_err(|_| Error::Rng)
}
