//! A node's or agent's identity, and its file `identity.json`.
//!
//! One Ed25519 key is the identity: its `did:key`, its libp2p PeerId, and the key that signs
//! envelopes, grants and consensus messages. A BLS key for quorum certificates is bound to it
//! by a proof of possession. Keys rotate by [`Identity::rotate`], which records a signed
//! [`KeyRotation`].
//!
//! The file is JSON with the public parts in the clear and the secrets sealed with a
//! passphrase (Argon2id + ChaCha20-Poly1305, `mesh_crypto::sealed`). It is written
//! atomically (temporary file, fsync, rename, directory fsync) with mode 0600. An unencrypted
//! file is possible only by asking for [`Protection::Unencrypted`], and is refused on load if
//! other users can read it.

use std::fs::{self, File, OpenOptions};
use std::io::{IsTerminal as _, Read as _, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use mesh_crypto::bls::{BlsPublicKey, BlsSecretKey, BlsSignature};
use mesh_crypto::ed25519::{Signature, SigningKey, VerifyingKey};
use mesh_crypto::sealed::{self, SealParams};
use mesh_types::Timestamp;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::did::{Did, peer_id_string};
use crate::error::{Error, Result};
use crate::rotation::{KeyRotation, verify_chain};

/// The environment variable the passphrase is read from.
pub const PASSPHRASE_ENV: &str = "MESH_PASSPHRASE";
/// The largest identity file accepted.
pub const MAX_FILE_LEN: u64 = 1024 * 1024;
const FORMAT_VERSION: u32 = 1;
const SECRETS_LEN: usize = 64;

/// How the secrets in an identity file are protected.
#[derive(Clone)]
pub enum Protection {
    /// Sealed with a passphrase.
    Passphrase(Zeroizing<String>),
    /// Stored in the clear (only when explicitly asked for: tests, throwaway nodes).
    Unencrypted,
}

impl std::fmt::Debug for Protection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Passphrase(_) => f.write_str("Protection::Passphrase(..)"),
            Self::Unencrypted => f.write_str("Protection::Unencrypted"),
        }
    }
}

impl Protection {
    /// A passphrase.
    pub fn passphrase(p: impl Into<String>) -> Self {
        Self::Passphrase(Zeroizing::new(p.into()))
    }

    /// The passphrase from the environment variable `var`, or else from a prompt on the
    /// terminal; fails with [`Error::NoPassphrase`] when neither is available.
    pub fn from_env_or_prompt(var: &str, prompt: &str) -> Result<Self> {
        if let Some(p) = std::env::var_os(var) {
            let p = p.into_string().map_err(|_| Error::NoPassphrase {
                var: var.to_owned(),
                detail: "the variable is not valid UTF-8".into(),
            })?;
            return Ok(Self::passphrase(p));
        }
        if !std::io::stdin().is_terminal() {
            return Err(Error::NoPassphrase {
                var: var.to_owned(),
                detail: "standard input is not a terminal".into(),
            });
        }
        let p = rpassword::prompt_password(prompt).map_err(|e| Error::NoPassphrase {
            var: var.to_owned(),
            detail: e.to_string(),
        })?;
        Ok(Self::passphrase(p))
    }
}

/// An identity with its secrets.
pub struct Identity {
    signing: SigningKey,
    bls: BlsSecretKey,
    did: Did,
    origin: Did,
    created: Timestamp,
    rotations: Vec<KeyRotation>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("did", &self.did)
            .field("rotations", &self.rotations.len())
            .finish()
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct IdentityFile {
    version: u32,
    did: String,
    peer_id: String,
    origin_did: String,
    bls_public_key: String,
    bls_proof_of_possession: String,
    created_ms: u64,
    secrets: SecretsFile,
    rotations: Vec<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretsFile {
    protection: String,
    data: String,
}

impl Identity {
    /// A new identity with fresh random keys.
    pub fn generate(created: Timestamp) -> Result<Self> {
        Ok(Self::from_keys(
            SigningKey::generate()?,
            BlsSecretKey::generate()?,
            created,
        ))
    }

    /// An identity from given keys (deterministic: tests and derived identities).
    pub fn from_keys(signing: SigningKey, bls: BlsSecretKey, created: Timestamp) -> Self {
        let did = Did::from_key(&signing.verifying_key());
        Self {
            signing,
            bls,
            origin: did.clone(),
            did,
            created,
            rotations: Vec::new(),
        }
    }

    /// The current DID.
    pub fn did(&self) -> &Did {
        &self.did
    }

    /// The DID this identity started with (before any rotation).
    pub fn origin(&self) -> &Did {
        &self.origin
    }

    /// The libp2p PeerId, in text form.
    pub fn peer_id(&self) -> String {
        peer_id_string(&self.signing.verifying_key())
    }

    /// The Ed25519 public key.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.signing.verifying_key()
    }

    /// The Ed25519 signing key.
    pub fn signing_key(&self) -> &SigningKey {
        &self.signing
    }

    /// Signs `message` with the Ed25519 key.
    pub fn sign(&self, message: &[u8]) -> Signature {
        self.signing.sign(message)
    }

    /// The X25519 key-agreement secret derived from the Ed25519 key; its public key is
    /// [`Did::key_agreement_key`]. Used as the Noise static key of end-to-end sessions.
    pub fn key_agreement_secret(&self) -> mesh_crypto::x25519::X25519Secret {
        self.signing.to_x25519_secret()
    }

    /// The BLS secret key.
    pub fn bls_secret(&self) -> &BlsSecretKey {
        &self.bls
    }

    /// The BLS public key.
    pub fn bls_public(&self) -> BlsPublicKey {
        self.bls.public_key()
    }

    /// The BLS proof of possession.
    pub fn bls_proof_of_possession(&self) -> BlsSignature {
        self.bls.prove_possession()
    }

    /// When the identity was created.
    pub fn created(&self) -> Timestamp {
        self.created
    }

    /// The rotations made so far.
    pub fn rotations(&self) -> &[KeyRotation] {
        &self.rotations
    }

    /// Replaces the Ed25519 key with a fresh one and returns the signed rotation record. The new
    /// key exists only in memory until saved: use [`Self::rotate_and_save`], or save before
    /// publishing the record, or a crash in between loses the key the mesh now expects.
    pub fn rotate(&mut self, now: Timestamp) -> Result<KeyRotation> {
        self.rotate_to(SigningKey::generate()?, now)
    }

    /// Rotates, saves the identity to `path`, and only then returns the record to publish.
    pub fn rotate_and_save(
        &mut self,
        now: Timestamp,
        path: &Path,
        protection: &Protection,
    ) -> Result<KeyRotation> {
        let previous = (self.signing.clone(), self.did.clone());
        let record = self.rotate(now)?;
        if let Err(e) = self.save(path, protection) {
            // Not saved: keep using the old key, as the file still does.
            self.signing = previous.0;
            self.did = previous.1;
            self.rotations.pop();
            return Err(e);
        }
        Ok(record)
    }

    /// Replaces the Ed25519 key with `new` (deterministic form of [`Self::rotate`]).
    pub fn rotate_to(&mut self, new: SigningKey, now: Timestamp) -> Result<KeyRotation> {
        let record = KeyRotation::sign(&self.signing, &new, self.rotations.len() as u64 + 1, now);
        record.verify()?;
        self.signing = new;
        self.did = Did::from_key(&self.signing.verifying_key());
        self.rotations.push(record.clone());
        Ok(record)
    }

    /// Writes the identity to `path` atomically with mode 0600.
    pub fn save(&self, path: &Path, protection: &Protection) -> Result<()> {
        self.save_with(path, protection, SealParams::default())
    }

    /// [`Self::save`] with explicit sealing cost parameters.
    pub fn save_with(
        &self,
        path: &Path,
        protection: &Protection,
        params: SealParams,
    ) -> Result<()> {
        let mut secrets = Zeroizing::new(Vec::with_capacity(SECRETS_LEN));
        secrets.extend_from_slice(&self.signing.seed()[..]);
        secrets.extend_from_slice(&self.bls.to_bytes()[..]);
        let secrets = match protection {
            Protection::Passphrase(p) => SecretsFile {
                protection: "argon2id-chacha20poly1305".into(),
                data: hex::encode(sealed::seal(&secrets, p.as_bytes(), params)?),
            },
            Protection::Unencrypted => SecretsFile {
                protection: "none".into(),
                data: hex::encode(&secrets[..]),
            },
        };
        let file = IdentityFile {
            version: FORMAT_VERSION,
            did: self.did.to_string(),
            peer_id: self.peer_id(),
            origin_did: self.origin.to_string(),
            bls_public_key: hex::encode(self.bls_public().to_bytes()),
            bls_proof_of_possession: hex::encode(self.bls_proof_of_possession().to_bytes()),
            created_ms: self.created.0,
            secrets,
            rotations: self
                .rotations
                .iter()
                .map(|r| hex::encode(r.to_bytes()))
                .collect(),
        };
        let mut json = serde_json::to_vec_pretty(&file).map_err(|e| Error::File {
            path: path.to_owned(),
            detail: format!("encoding: {e}"),
        })?;
        json.push(b'\n');
        write_atomically(path, &json)
    }

    /// Reads and checks an identity file: the format, the passphrase, and that every public
    /// field matches the secrets (a file edited by hand or damaged is refused).
    pub fn load(path: &Path, protection: &Protection) -> Result<Self> {
        let file_err = |detail: String| Error::File {
            path: path.to_owned(),
            detail,
        };
        let mut f = File::open(path).map_err(|e| Error::Io {
            path: path.to_owned(),
            op: "opening",
            source: e,
        })?;
        let meta = f.metadata().map_err(|e| Error::Io {
            path: path.to_owned(),
            op: "reading metadata",
            source: e,
        })?;
        if meta.len() > MAX_FILE_LEN {
            return Err(file_err(format!(
                "{} bytes, above the {MAX_FILE_LEN}-byte limit",
                meta.len()
            )));
        }
        // Bounded even if the file grows while being read (or is not a regular file).
        let mut text = Zeroizing::new(Vec::with_capacity(meta.len() as usize));
        (&mut f)
            .take(MAX_FILE_LEN + 1)
            .read_to_end(&mut text)
            .map_err(|e| Error::Io {
                path: path.to_owned(),
                op: "reading",
                source: e,
            })?;
        if text.len() as u64 > MAX_FILE_LEN {
            return Err(file_err(format!("above the {MAX_FILE_LEN}-byte limit")));
        }
        let file: IdentityFile = serde_json::from_slice(&text)
            .map_err(|e| file_err(format!("not a valid identity file: {e}")))?;
        if file.version != FORMAT_VERSION {
            return Err(file_err(format!(
                "format version {} is not supported (this build reads {FORMAT_VERSION})",
                file.version
            )));
        }
        let data =
            hex::decode(&file.secrets.data).map_err(|_| file_err("secrets are not hex".into()))?;
        let secrets: Zeroizing<Vec<u8>> = match (file.secrets.protection.as_str(), protection) {
            ("argon2id-chacha20poly1305", Protection::Passphrase(p)) => {
                match sealed::open(&data, p.as_bytes()) {
                    Ok(s) => s,
                    Err(mesh_crypto::Error::WrongPassphrase) => {
                        return Err(Error::WrongPassphrase {
                            path: path.to_owned(),
                        });
                    }
                    Err(e) => return Err(file_err(format!("sealed secrets: {e}"))),
                }
            }
            ("argon2id-chacha20poly1305", Protection::Unencrypted) => {
                return Err(file_err(
                    "the secrets are sealed: a passphrase is needed".into(),
                ));
            }
            // A passphrase was given: an unencrypted file is refused, not silently accepted
            // (someone able to replace the file must not be able to plant their own key).
            ("none", Protection::Passphrase(_)) => {
                return Err(file_err(
                    "the secrets are not encrypted, but a passphrase was given; re-save it sealed"
                        .into(),
                ));
            }
            ("none", Protection::Unencrypted) => {
                if meta.permissions().mode() & 0o077 != 0 {
                    return Err(file_err(format!(
                        "unencrypted identity readable by other users (mode {:o}); run chmod 600",
                        meta.permissions().mode() & 0o777
                    )));
                }
                Zeroizing::new(data)
            }
            (other, _) => return Err(file_err(format!("unknown secret protection {other:?}"))),
        };
        if secrets.len() != SECRETS_LEN {
            return Err(file_err(format!(
                "secrets are {} bytes, expected {SECRETS_LEN}",
                secrets.len()
            )));
        }
        let mut seed = Zeroizing::new([0u8; 32]);
        seed.copy_from_slice(&secrets[..32]);
        let mut bls = Zeroizing::new([0u8; 32]);
        bls.copy_from_slice(&secrets[32..]);
        let signing = SigningKey::from_seed(&seed);
        let bls =
            BlsSecretKey::from_bytes(&bls).map_err(|e| file_err(format!("BLS secret: {e}")))?;
        let did = Did::from_key(&signing.verifying_key());
        let origin = Did::parse(&file.origin_did).map_err(|e| file_err(e.to_string()))?;
        let mut rotations = Vec::with_capacity(file.rotations.len());
        for r in &file.rotations {
            let bytes =
                hex::decode(r).map_err(|_| file_err("a rotation record is not hex".into()))?;
            rotations.push(KeyRotation::from_bytes(&bytes).map_err(|e| file_err(e.to_string()))?);
        }
        let current = verify_chain(&origin, &rotations)
            .map_err(|e| file_err(format!("rotation chain: {e}")))?;
        let checks = [
            (
                current == did,
                "the rotation chain does not end at the stored key",
            ),
            (
                file.did == did.as_str(),
                "the DID does not match the secret key",
            ),
            (
                file.peer_id == peer_id_string(&signing.verifying_key()),
                "the PeerId does not match the secret key",
            ),
            (
                file.bls_public_key == hex::encode(bls.public_key().to_bytes()),
                "the BLS public key does not match the secret key",
            ),
            (
                file.bls_proof_of_possession == hex::encode(bls.prove_possession().to_bytes()),
                "the BLS proof of possession does not match the secret key",
            ),
        ];
        if let Some((_, detail)) = checks.iter().find(|(ok, _)| !ok) {
            return Err(file_err((*detail).to_owned()));
        }
        Ok(Self {
            signing,
            bls,
            did,
            origin,
            created: Timestamp(file.created_ms),
            rotations,
        })
    }
}

fn write_atomically(path: &Path, data: &[u8]) -> Result<()> {
    let io = |op: &'static str, p: &Path| {
        let p: PathBuf = p.to_owned();
        move |e| Error::Io {
            path: p,
            op,
            source: e,
        }
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir).map_err(io("creating the directory", &dir))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "identity".into());
    // An unpredictable name, created exclusively (O_EXCL does not follow a planted symlink),
    // so concurrent saves and other users cannot interfere with the temporary file.
    let suffix = mesh_crypto::random_array::<8>()?;
    let suffix: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
    let tmp = dir.join(format!(".{name}.tmp-{suffix}"));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io("creating", &tmp))?;
        f.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(io("setting permissions", &tmp))?;
        f.write_all(data).map_err(io("writing", &tmp))?;
        f.sync_all().map_err(io("syncing", &tmp))?;
        drop(f);
        fs::rename(&tmp, path).map_err(io("renaming into place", path))?;
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io("syncing the directory", &dir))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}
