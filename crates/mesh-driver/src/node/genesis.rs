//! The genesis file and the public information it is built from.
//!
//! Each node writes its public information to `node.json` at [`init`](super::init): its DID,
//! peer id, BLS public key with its proof of possession, and the addresses it can be reached
//! at (from the listen addresses given at init that name a host and a port; edit the file
//! if the node is reached elsewhere). No secret is in it.
//!
//! A genesis ([`GenesisFile`], JSON) gathers several nodes' public information into the
//! validator set of epoch 0, with the consensus settings every validator must share:
//!
//! ```json
//! {
//!   "version": 1,
//!   "consensus": {
//!     "checkpoint_interval": 16, "window": 64, "request_auth": "connection",
//!     "admission": { "difficulty": 16, "memory_kib": 65536, "passes": 1 },
//!     "limits": { "max_request_bytes": 65536, ... }
//!   },
//!   "validators": [
//!     { "did": "did:key:z6Mk...", "peer_id": "12D3KooW...", "bls_public_key": "<hex>",
//!       "bls_proof_of_possession": "<hex>", "weight": 1, "address": "/ip4/10.0.0.1/tcp/7000" }
//!   ]
//! }
//! ```
//!
//! [`build`] makes one from [`PublicInfo`]s; [`Genesis::load`] reads one and checks
//! everything: the format, that each DID and peer id name the same key, each BLS key's proof
//! of possession (by `ValidatorSet::new`), duplicates, weights, addresses (a host and a
//! port, and any `/p2p/` suffix naming the validator), and the consensus settings. Nothing
//! in it is signed: a node trusts the genesis file its operator gives it.

use std::path::{Path, PathBuf};

use mesh_consensus::{Limits, RequestAuth, Validator, ValidatorSet};
use mesh_crypto::bls::{BlsPublicKey, BlsSignature};
use mesh_identity::{Did, Identity};
use mesh_transport::{Multiaddr, multiaddr::Protocol};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The version of `node.json` and of the genesis format this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;
/// The largest genesis or `node.json` file read.
const MAX_FILE_LEN: u64 = 4 * 1024 * 1024;

/// A node's public information (`node.json`): what others need to list it in a genesis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicInfo {
    /// [`FORMAT_VERSION`].
    pub version: u32,
    /// The node's `did:key`.
    pub did: String,
    /// Its libp2p peer id (the same key).
    pub peer_id: String,
    /// Its BLS public key, hex.
    pub bls_public_key: String,
    /// The proof of possession of that key, hex.
    pub bls_proof_of_possession: String,
    /// Multiaddresses it can be reached at (without `/p2p/`), best first.
    pub addresses: Vec<String>,
}

impl PublicInfo {
    /// The public information of `identity`, reachable at the dialable ones of `listen`.
    pub fn of(identity: &Identity, listen: &[Multiaddr]) -> Self {
        Self {
            version: FORMAT_VERSION,
            did: identity.did().to_string(),
            peer_id: identity.peer_id(),
            bls_public_key: hex::encode(identity.bls_public().to_bytes()),
            bls_proof_of_possession: hex::encode(identity.bls_proof_of_possession().to_bytes()),
            addresses: listen
                .iter()
                .filter(|a| dialable(a).is_ok())
                .map(ToString::to_string)
                .collect(),
        }
    }

    /// Reads `node.json` (a file, or a data directory holding one).
    pub fn load(path: &Path) -> Result<Self> {
        let path = if path.is_dir() {
            path.join(super::PUBLIC_FILE)
        } else {
            path.to_owned()
        };
        let info: Self = read_json(&path)?;
        if info.version != FORMAT_VERSION {
            return Err(Error::Genesis {
                path,
                detail: format!(
                    "format version {} is not supported (this build reads {FORMAT_VERSION})",
                    info.version
                ),
            });
        }
        Ok(info)
    }
}

/// The consensus settings all validators must share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Blocks between checkpoints.
    pub checkpoint_interval: u64,
    /// The watermark window (a multiple of `checkpoint_interval`, at least twice it).
    pub window: u64,
    /// How requests are authenticated: `connection` or `signed`.
    pub request_auth: String,
    /// The admission puzzle of epoch 0.
    pub admission: Puzzle,
    /// Decoder bounds.
    pub limits: LimitSettings,
}

/// The admission puzzle's parameters (`mesh_consensus::admission::Puzzle`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Puzzle {
    /// Leading zero bits required.
    pub difficulty: u8,
    /// Argon2 memory in KiB.
    pub memory_kib: u32,
    /// Argon2 passes.
    pub passes: u32,
}

/// The decoder bounds ([`mesh_consensus::Limits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)] // one to one with `mesh_consensus::Limits`
pub struct LimitSettings {
    pub max_request_bytes: usize,
    pub max_batch_requests: usize,
    pub max_batch_bytes: usize,
    pub max_forward: usize,
    pub max_blocks: usize,
    pub max_prepared: usize,
    pub max_validators: usize,
}

impl Default for Settings {
    /// The settings of the default replica configuration.
    fn default() -> Self {
        Self::of(&mesh_consensus::Config::default())
    }
}

impl Settings {
    /// The settings of `config` that validators must share.
    pub fn of(config: &mesh_consensus::Config) -> Self {
        let l = config.limits;
        Self {
            checkpoint_interval: config.checkpoint_interval,
            window: config.window,
            request_auth: match config.request_auth {
                RequestAuth::Connection => "connection".into(),
                RequestAuth::Signed => "signed".into(),
            },
            admission: Puzzle {
                difficulty: config.admission.difficulty,
                memory_kib: config.admission.memory_kib,
                passes: config.admission.passes,
            },
            limits: LimitSettings {
                max_request_bytes: l.max_request_bytes,
                max_batch_requests: l.max_batch_requests,
                max_batch_bytes: l.max_batch_bytes,
                max_forward: l.max_forward,
                max_blocks: l.max_blocks,
                max_prepared: l.max_prepared,
                max_validators: l.max_validators,
            },
        }
    }

    /// A replica configuration with these settings and the node-local ones of `base`.
    pub fn apply(
        &self,
        base: mesh_consensus::Config,
    ) -> std::result::Result<mesh_consensus::Config, String> {
        let l = self.limits;
        let config = mesh_consensus::Config {
            checkpoint_interval: self.checkpoint_interval,
            window: self.window,
            request_auth: match self.request_auth.as_str() {
                "connection" => RequestAuth::Connection,
                "signed" => RequestAuth::Signed,
                other => {
                    return Err(format!(
                        "request_auth {other:?} is neither \"connection\" nor \"signed\""
                    ));
                }
            },
            admission: mesh_consensus::admission::Puzzle {
                epoch: 0,
                difficulty: self.admission.difficulty,
                memory_kib: self.admission.memory_kib,
                passes: self.admission.passes,
            },
            limits: Limits {
                max_request_bytes: l.max_request_bytes,
                max_batch_requests: l.max_batch_requests,
                max_batch_bytes: l.max_batch_bytes,
                max_forward: l.max_forward,
                max_blocks: l.max_blocks,
                max_prepared: l.max_prepared,
                max_validators: l.max_validators,
            },
            ..base
        };
        config.validate().map_err(|e| e.to_string())?;
        config.admission.validate().map_err(|e| e.to_string())?;
        Ok(config)
    }
}

/// One validator of a genesis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// Its `did:key`.
    pub did: String,
    /// Its libp2p peer id (must be the DID's key).
    pub peer_id: String,
    /// Its BLS public key, hex.
    pub bls_public_key: String,
    /// The proof of possession of that key, hex.
    pub bls_proof_of_possession: String,
    /// Its voting weight, 0 ..= `mesh_consensus::MAX_WEIGHT`.
    pub weight: u32,
    /// Where the other validators dial it (a host and a port; `/p2p/<peer id>` optional).
    pub address: String,
}

/// A genesis file as written: see the [module docs](self).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisFile {
    /// [`FORMAT_VERSION`].
    pub version: u32,
    /// The settings every validator shares.
    pub consensus: Settings,
    /// The validator set of epoch 0, in order (indices name signers in certificates).
    pub validators: Vec<Member>,
}

impl GenesisFile {
    /// Writes the file as pretty JSON (refusing to replace an existing file).
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut json = serde_json::to_vec_pretty(self).map_err(|e| Error::Genesis {
            path: path.to_owned(),
            detail: format!("encoding: {e}"),
        })?;
        json.push(b'\n');
        super::write_new(path, &json, 0o644)
    }
}

/// A checked genesis: see [`Genesis::load`].
#[derive(Debug, Clone)]
pub struct Genesis {
    /// The validator set of epoch 0.
    pub validators: ValidatorSet,
    /// Each validator's address, ending in `/p2p/<peer id>`, in the set's order.
    pub addresses: Vec<Multiaddr>,
    /// The shared settings applied to the default replica configuration.
    pub consensus: mesh_consensus::Config,
}

/// Builds a genesis of `nodes`, each with weight 1 and its first address, and `settings`.
/// The result is checked as [`Genesis::load`] would.
pub fn build(nodes: &[PublicInfo], settings: Settings) -> Result<GenesisFile> {
    build_with(nodes, &[], settings)
}

/// Builds a genesis of the voting `nodes` (weight 1) followed by `observers` (weight 0:
/// members that follow the ledger as learners without voting, such as a coordinator).
pub fn build_with(
    nodes: &[PublicInfo],
    observers: &[PublicInfo],
    settings: Settings,
) -> Result<GenesisFile> {
    let here = PathBuf::from("(the genesis being built)");
    let mut validators = Vec::with_capacity(nodes.len() + observers.len());
    for (i, n) in nodes.iter().chain(observers).enumerate() {
        let address = n.addresses.first().ok_or_else(|| Error::Genesis {
            path: here.clone(),
            detail: format!(
                "{} has no address in its node.json (init it with --listen <host:port \
                 multiaddress>, or add one to its node.json)",
                n.did
            ),
        })?;
        validators.push(Member {
            did: n.did.clone(),
            peer_id: n.peer_id.clone(),
            bls_public_key: n.bls_public_key.clone(),
            bls_proof_of_possession: n.bls_proof_of_possession.clone(),
            weight: u32::from(i < nodes.len()),
            address: address.clone(),
        });
    }
    let file = GenesisFile {
        version: FORMAT_VERSION,
        consensus: settings,
        validators,
    };
    Genesis::check(&file, &here)?;
    Ok(file)
}

impl Genesis {
    /// Reads and checks a genesis file (see the [module docs](self)).
    pub fn load(path: &Path) -> Result<Self> {
        let file: GenesisFile = read_json(path)?;
        Self::check(&file, path)
    }

    /// Checks a genesis; `path` names it in errors.
    pub fn check(file: &GenesisFile, path: &Path) -> Result<Self> {
        let bad = |detail: String| Error::Genesis {
            path: path.to_owned(),
            detail,
        };
        if file.version != FORMAT_VERSION {
            return Err(bad(format!(
                "format version {} is not supported (this build reads {FORMAT_VERSION})",
                file.version
            )));
        }
        let consensus = file
            .consensus
            .apply(mesh_consensus::Config::default())
            .map_err(|e| bad(format!("consensus settings: {e}")))?;
        let mut members = Vec::with_capacity(file.validators.len());
        let mut addresses = Vec::with_capacity(file.validators.len());
        for (i, m) in file.validators.iter().enumerate() {
            let at = |detail: String| bad(format!("validator {i} ({}): {detail}", m.did));
            let did = Did::parse(&m.did).map_err(|e| at(e.to_string()))?;
            let key = did.verifying_key().map_err(|e| at(e.to_string()))?;
            if mesh_identity::did::peer_id_string(&key) != m.peer_id {
                return Err(at(format!("peer id {} is not the DID's key", m.peer_id)));
            }
            let bls = hex::decode(&m.bls_public_key)
                .ok()
                .and_then(|b| BlsPublicKey::from_slice(&b).ok())
                .ok_or_else(|| at("bls_public_key is not a BLS public key in hex".into()))?;
            if members.iter().any(|(v, _): &(Validator, _)| v.bls == bls) {
                return Err(at("its BLS key appears twice".into()));
            }
            let pop = hex::decode(&m.bls_proof_of_possession)
                .ok()
                .and_then(|b| BlsSignature::from_slice(&b).ok())
                .ok_or_else(
                    || at("bls_proof_of_possession is not a BLS signature in hex".into()),
                )?;
            let node = did.node_id();
            let peer = crate::consensus::peer_id(&node)?;
            let addr: Multiaddr = m
                .address
                .parse()
                .map_err(|e| at(format!("address {:?}: {e}", m.address)))?;
            let addr = with_peer(addr, peer).map_err(|e| at(format!("address: {e}")))?;
            dialable(&addr).map_err(|e| at(format!("address {addr}: {e}")))?;
            addresses.push(addr);
            members.push((
                Validator {
                    id: node,
                    bls,
                    weight: m.weight,
                },
                pop,
            ));
        }
        let validators = ValidatorSet::new(0, members).map_err(|e| bad(e.to_string()))?;
        Ok(Self {
            validators,
            addresses,
            consensus,
        })
    }

    /// Where `identity` is in the set: `Ok(Some(index))` if listed with its own keys,
    /// `Ok(None)` if not listed, and [`Error::GenesisMismatch`] if its node id is listed with
    /// another BLS key.
    pub fn position(&self, identity: &Identity, path: &Path) -> Result<Option<usize>> {
        let node = identity.did().node_id();
        let Some(i) = self.validators.index_of(&node) else {
            return Ok(None);
        };
        let listed = self.validators.members().get(i).map(|v| v.bls);
        if listed != Some(identity.bls_public()) {
            return Err(Error::GenesisMismatch {
                path: path.to_owned(),
                did: identity.did().to_string(),
                detail: format!(
                    "validator {i} has this node's DID but another BLS key (was the identity \
                     replaced after the genesis was made?)"
                ),
            });
        }
        Ok(Some(i))
    }
}

/// `addr` ending in `/p2p/<peer>`: appended if missing, refused if it names another peer.
fn with_peer(
    addr: Multiaddr,
    peer: mesh_transport::PeerId,
) -> std::result::Result<Multiaddr, String> {
    match addr.iter().find_map(|p| match p {
        Protocol::P2p(id) => Some(id),
        _ => None,
    }) {
        Some(id) if id == peer => Ok(addr),
        Some(id) => Err(format!(
            "ends in /p2p/{id}, not this validator's peer id {peer}"
        )),
        None => Ok(addr.with(Protocol::P2p(peer))),
    }
}

/// Whether others can dial `addr`: it names a host (not an unspecified IP) and a port (not 0).
pub(crate) fn dialable(addr: &Multiaddr) -> std::result::Result<(), String> {
    let mut host = false;
    let mut port = false;
    for p in addr.iter() {
        match p {
            Protocol::Ip4(ip) if !ip.is_unspecified() => host = true,
            Protocol::Ip6(ip) if !ip.is_unspecified() => host = true,
            Protocol::Dns(_) | Protocol::Dns4(_) | Protocol::Dns6(_) => host = true,
            Protocol::Tcp(p) | Protocol::Udp(p) if p != 0 => port = true,
            _ => {}
        }
    }
    match (host, port) {
        (true, true) => Ok(()),
        (false, _) => Err("names no host others can dial (an unspecified IP?)".into()),
        (true, false) => Err("names no port (port 0?)".into()),
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let bad = |detail: String| Error::Genesis {
        path: path.to_owned(),
        detail,
    };
    let meta = std::fs::metadata(path).map_err(|e| bad(format!("cannot read: {e}")))?;
    if meta.len() > MAX_FILE_LEN {
        return Err(bad(format!(
            "{} bytes, above the limit of {MAX_FILE_LEN}",
            meta.len()
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| bad(format!("cannot read: {e}")))?;
    serde_json::from_slice(&bytes).map_err(|e| bad(format!("not valid: {e}")))
}
