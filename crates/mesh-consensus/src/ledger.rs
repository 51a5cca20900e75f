//! The ledger as a light client sees it: verify a chain of committed blocks from the genesis
//! validator set, without running a replica.

use mesh_types::Digest;

use crate::error::{Error, Result};
use crate::message::{CommittedBlock, Phase};
use crate::replica::genesis_hash;
use crate::scheme::{BlsScheme, Scheme};
use crate::validators::ValidatorSet;

/// Follows a ledger block by block, checking each block's commit certificate against the
/// validator set and its link to the block before.
pub struct LightClient {
    set: ValidatorSet,
    scheme: Box<dyn Scheme>,
    height: u64,
    head: Digest,
}

impl std::fmt::Debug for LightClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LightClient")
            .field("height", &self.height)
            .field("head", &self.head)
            .finish_non_exhaustive()
    }
}

impl LightClient {
    /// Starts at the genesis of `set`, checking BLS certificates.
    pub fn new(set: ValidatorSet) -> Self {
        Self::with_scheme(set, Box::new(BlsScheme::verifier()))
    }

    /// Starts at the genesis of `set`, checking certificates with `scheme`.
    pub fn with_scheme(set: ValidatorSet, scheme: Box<dyn Scheme>) -> Self {
        let head = genesis_hash(&set);
        Self {
            set,
            scheme,
            height: 0,
            head,
        }
    }

    /// Checks and accepts the next block.
    pub fn push(&mut self, block: &CommittedBlock) -> Result<()> {
        let expected = self.height + 1;
        if block.seq() != expected {
            return Err(Error::invalid(
                "ledger",
                format!(
                    "block at height {} where {expected} was expected",
                    block.seq()
                ),
            ));
        }
        if block.prev != self.head {
            return Err(Error::invalid(
                "ledger",
                format!("block {expected} does not name the previous block's hash"),
            ));
        }
        if block.cert.phase != Phase::Commit || block.cert.digest != block.batch.digest() {
            return Err(Error::invalid(
                "ledger",
                format!("block {expected}: certificate does not certify its batch"),
            ));
        }
        block
            .cert
            .verify(&self.set, self.scheme.as_ref())
            .map_err(|_| Error::Verify {
                what: "block commit certificate",
            })?;
        self.height = expected;
        self.head = block.hash();
        Ok(())
    }

    /// Height of the last accepted block.
    pub fn height(&self) -> u64 {
        self.height
    }

    /// Hash of the last accepted block (the genesis hash at height 0).
    pub fn head(&self) -> Digest {
        self.head
    }
}

/// Verifies a whole chain from genesis; returns its height and head hash.
pub fn verify_chain<'a>(
    set: &ValidatorSet,
    blocks: impl IntoIterator<Item = &'a CommittedBlock>,
) -> Result<(u64, Digest)> {
    let mut lc = LightClient::new(set.clone());
    for b in blocks {
        lc.push(b)?;
    }
    Ok((lc.height(), lc.head()))
}

/// Verifies the ledger held in `storage` from the genesis validator set it recorded, calling
/// `progress(height)` every 1,000 blocks; returns the genesis set, the height and the head.
pub fn verify_storage(
    storage: &impl crate::Storage,
    mut progress: impl FnMut(u64),
) -> Result<(ValidatorSet, u64, Digest)> {
    let genesis = storage
        .load_genesis()?
        .ok_or_else(|| Error::invalid("ledger", "no genesis validator set recorded"))?;
    let mut r = mesh_types::wire::Reader::new(&genesis);
    let set = ValidatorSet::decode(&mut r)?;
    let mut lc = LightClient::new(set.clone());
    let mut from = 1;
    loop {
        let blocks = storage.blocks(from, 256, 64 * 1024 * 1024)?;
        if blocks.is_empty() {
            break;
        }
        for b in &blocks {
            lc.push(b)?;
            if lc.height().is_multiple_of(1_000) {
                progress(lc.height());
            }
        }
        from += blocks.len() as u64;
    }
    Ok((set, lc.height(), lc.head()))
}
