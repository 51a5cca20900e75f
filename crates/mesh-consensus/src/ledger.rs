//! The ledger as a light client sees it: verify a chain of committed blocks from the genesis,
//! following reconfigurations, without running a replica.

use mesh_types::Digest;

use crate::error::{Error, Result};
use crate::message::{CommittedBlock, Phase, RequestKind};
use crate::reconfig::{Genesis, Governance};
use crate::scheme::{BlsScheme, Scheme};
use crate::validators::ValidatorSet;

/// Follows a ledger block by block, checking each block's commit certificate against the
/// validator set of its epoch and its link to the block before. It counts reconfiguration
/// proposals exactly as replicas do (see [`reconfig`](crate::reconfig)), so it knows which
/// set certifies each block.
pub struct LightClient {
    gov: Governance,
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
    /// Starts at `genesis`, checking BLS certificates.
    pub fn new(genesis: &Genesis) -> Self {
        Self::with_scheme(genesis, Box::new(BlsScheme::verifier()))
    }

    /// Starts at `genesis`, checking certificates with `scheme`.
    pub fn with_scheme(genesis: &Genesis, scheme: Box<dyn Scheme>) -> Self {
        Self {
            gov: Governance::new(genesis),
            scheme,
            height: 0,
            head: genesis.hash(),
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
            .verify(self.gov.set_for(expected), self.scheme.as_ref())
            .map_err(|_| Error::Verify {
                what: "block commit certificate",
            })?;
        for r in block.batch.requests() {
            if r.kind == RequestKind::Change {
                self.gov.propose(expected, r);
            }
        }
        self.gov.end_block(expected);
        self.height = expected;
        self.head = block.hash();
        Ok(())
    }

    /// The validator set in force after the last accepted block.
    pub fn validators(&self) -> &ValidatorSet {
        self.gov.set()
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
    genesis: &Genesis,
    blocks: impl IntoIterator<Item = &'a CommittedBlock>,
) -> Result<(u64, Digest)> {
    let mut lc = LightClient::new(genesis);
    for b in blocks {
        lc.push(b)?;
    }
    Ok((lc.height(), lc.head()))
}

/// What [`verify_storage`] found.
#[derive(Debug, Clone)]
pub struct VerifiedLedger {
    /// The genesis the ledger recorded.
    pub genesis: Genesis,
    /// Its height.
    pub height: u64,
    /// The hash of its last block (the genesis hash when empty).
    pub head: Digest,
    /// The validator set in force after the last block (after every reconfiguration).
    pub validators: ValidatorSet,
}

/// Verifies the ledger held in `storage` from the genesis it recorded, following every
/// reconfiguration, calling `progress(height)` every 1,000 blocks.
pub fn verify_storage(
    storage: &impl crate::Storage,
    mut progress: impl FnMut(u64),
) -> Result<VerifiedLedger> {
    let genesis = storage
        .load_genesis()?
        .ok_or_else(|| Error::invalid("ledger", "no genesis recorded"))?;
    let genesis = Genesis::decode(&genesis)?;
    let mut lc = LightClient::new(&genesis);
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
    Ok(VerifiedLedger {
        validators: lc.validators().clone(),
        height: lc.height(),
        head: lc.head(),
        genesis,
    })
}
