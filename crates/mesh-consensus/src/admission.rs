//! Proof of computation: what a candidate validator shows before it may be admitted.
//!
//! A proof is a nonce such that Argon2id (memory-hard, so bulk minting on GPUs or ASICs gains
//! little) of the nonce, salted with a challenge bound to the candidate's DID and the current
//! epoch, falls below a target set by the validator set's [`Puzzle`]. Checking a proof costs
//! one Argon2id evaluation; minting one costs `2^difficulty` of them on average, and a proof
//! is worthless for another DID or another epoch. A candidate is admitted only by a committed
//! reconfiguration that carries a proof verifying against the puzzle in force.

use mesh_types::Digest;

use crate::error::{Error, Result};

/// Bounds on puzzle parameters, so a bad configuration cannot make verification itself a
/// denial of service (memory) or proofs trivial.
pub const MIN_MEMORY_KIB: u32 = 8 * 1024;
/// The largest memory cost a puzzle may ask for (256 MiB).
pub const MAX_MEMORY_KIB: u32 = 256 * 1024;
/// The most Argon2 passes a puzzle may ask for.
pub const MAX_PASSES: u32 = 8;
/// The highest difficulty (leading zero bits) a puzzle may ask for.
pub const MAX_DIFFICULTY: u8 = 40;

/// The puzzle the validator set sets for an epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Puzzle {
    /// The epoch proofs are bound to.
    pub epoch: u64,
    /// Leading zero bits the Argon2id output must have.
    pub difficulty: u8,
    /// Argon2 memory cost in KiB.
    pub memory_kib: u32,
    /// Argon2 passes.
    pub passes: u32,
}

impl Puzzle {
    /// Checks the parameters against the bounds.
    pub fn validate(&self) -> Result<()> {
        if !(MIN_MEMORY_KIB..=MAX_MEMORY_KIB).contains(&self.memory_kib) {
            return Err(Error::invalid(
                "puzzle",
                format!(
                    "memory {} KiB outside {MIN_MEMORY_KIB}..={MAX_MEMORY_KIB}",
                    self.memory_kib
                ),
            ));
        }
        if !(1..=MAX_PASSES).contains(&self.passes) {
            return Err(Error::invalid(
                "puzzle",
                format!("{} passes, allowed 1..={MAX_PASSES}", self.passes),
            ));
        }
        if self.difficulty > MAX_DIFFICULTY {
            return Err(Error::invalid(
                "puzzle",
                format!("difficulty {} above {MAX_DIFFICULTY}", self.difficulty),
            ));
        }
        Ok(())
    }

    /// The salt binding proofs to `did` and this epoch.
    fn challenge(&self, did: &str) -> [u8; 16] {
        let d = Digest::of_parts([
            b"agentmesh/admission/v1".as_slice(),
            &self.epoch.to_le_bytes(),
            &(did.len() as u64).to_le_bytes(),
            did.as_bytes(),
        ]);
        let mut salt = [0u8; 16];
        salt.copy_from_slice(&d.as_bytes()[..16]);
        salt
    }

    fn evaluate(&self, did: &str, nonce: u64) -> Result<[u8; 32]> {
        let out = mesh_crypto::kdf::argon2id(
            &nonce.to_le_bytes(),
            &self.challenge(did),
            self.memory_kib,
            self.passes,
            1,
        )?;
        Ok(*out)
    }

    /// Checks that `proof` solves this puzzle for `did`.
    pub fn verify(&self, did: &str, proof: &Proof) -> Result<()> {
        self.validate()?;
        let out = self.evaluate(did, proof.nonce)?;
        if leading_zero_bits(&out) >= u32::from(self.difficulty) {
            Ok(())
        } else {
            Err(Error::Verify {
                what: "proof of computation",
            })
        }
    }

    /// Tries nonces `start..start + attempts` and returns the first that solves the puzzle
    /// for `did`, calling `progress(tried)` after each attempt (return `false` to stop).
    pub fn mint(
        &self,
        did: &str,
        start: u64,
        attempts: u64,
        mut progress: impl FnMut(u64) -> bool,
    ) -> Result<Option<Proof>> {
        self.validate()?;
        for i in 0..attempts {
            let nonce = start.wrapping_add(i);
            let out = self.evaluate(did, nonce)?;
            if leading_zero_bits(&out) >= u32::from(self.difficulty) {
                return Ok(Some(Proof { nonce }));
            }
            if !progress(i + 1) {
                break;
            }
        }
        Ok(None)
    }
}

/// A solution to a [`Puzzle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proof {
    /// The nonce.
    pub nonce: u64,
}

fn leading_zero_bits(bytes: &[u8]) -> u32 {
    let mut n = 0;
    for b in bytes {
        if *b == 0 {
            n += 8;
        } else {
            return n + b.leading_zeros();
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn puzzle(difficulty: u8) -> Puzzle {
        Puzzle {
            epoch: 3,
            difficulty,
            memory_kib: MIN_MEMORY_KIB,
            passes: 1,
        }
    }

    #[test]
    fn proofs_verify_and_are_bound_to_did_and_epoch() {
        let p = puzzle(4);
        let did = "did:key:z6MkpTHR8VNsBxYAAWHut2Geadd9jSwuBV8xRoAnwWsdvktH";
        let proof = p
            .mint(did, 0, 1_000, |_| true)
            .unwrap()
            .expect("2^4 expected attempts");
        p.verify(did, &proof).unwrap();
        // For another DID or epoch the nonce passes only by chance (1 in 16 here): among
        // eight others of each, some must refuse it (all eight passing: 1 in 2^32).
        assert!((0..8).any(|k| p.verify(&format!("{did}{k}"), &proof).is_err()));
        assert!((4..12).any(|epoch| Puzzle { epoch, ..p }.verify(did, &proof).is_err()));
    }

    #[test]
    fn difficulty_is_enforced_and_parameters_bounded() {
        let p = puzzle(4);
        let did = "did:key:zabc";
        // Find a nonce that does not solve it, and check it is refused.
        let mut refused = false;
        for nonce in 0..8 {
            if p.evaluate(did, nonce)
                .map(|o| leading_zero_bits(&o))
                .unwrap()
                < 4
            {
                assert!(p.verify(did, &Proof { nonce }).is_err());
                refused = true;
                break;
            }
        }
        assert!(refused);
        assert!(Puzzle { memory_kib: 1, ..p }.validate().is_err());
        assert!(
            Puzzle {
                memory_kib: MAX_MEMORY_KIB + 1,
                ..p
            }
            .validate()
            .is_err()
        );
        assert!(Puzzle { passes: 0, ..p }.validate().is_err());
        assert!(
            Puzzle {
                difficulty: MAX_DIFFICULTY + 1,
                ..p
            }
            .validate()
            .is_err()
        );
        // Minting stops when asked.
        let mut calls = 0;
        let none = puzzle(MAX_DIFFICULTY).mint(did, 0, 100, |_| {
            calls += 1;
            calls < 3
        });
        assert_eq!(none.unwrap(), None);
        assert_eq!(calls, 3);
        assert_eq!(leading_zero_bits(&[0, 0x1f]), 11);
    }
}
