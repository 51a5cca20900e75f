//! Passphrase-sealed secrets ("sealed key files"): Argon2id derives a key from the passphrase,
//! ChaCha20-Poly1305 encrypts the secret, and the header is authenticated as associated data.
//!
//! Format, version 1 (all integers little-endian):
//!
//! ```text
//! "AMSEALED" | version u8 = 1 | kdf u8 = 1 (Argon2id v0x13) | m_cost KiB u32 | t_cost u32 |
//! parallelism u8 | salt [16] | nonce [12] | ciphertext || tag [16]
//! ```
//!
//! Decoding bounds the KDF parameters, so a hostile file cannot make the reader spend
//! unbounded memory or time.

use zeroize::Zeroizing;

use crate::aead::{AeadKey, NONCE_LEN, TAG_LEN};
use crate::error::{Error, Result};

const MAGIC: &[u8; 8] = b"AMSEALED";
const VERSION: u8 = 1;
const KDF_ARGON2ID: u8 = 1;
const SALT_LEN: usize = 16;
const HEADER_LEN: usize = 8 + 1 + 1 + 4 + 4 + 1 + SALT_LEN + NONCE_LEN;

/// The largest secret that can be sealed (64 KiB: keys, not files).
pub const MAX_SECRET_LEN: usize = 64 * 1024;
/// The most memory a sealed file may ask the reader to spend (1 GiB).
pub const MAX_M_COST_KIB: u32 = 1024 * 1024;
/// The most passes a sealed file may ask for.
pub const MAX_T_COST: u32 = 64;
/// The most lanes a sealed file may ask for.
pub const MAX_PARALLELISM: u8 = 16;
/// The most total work (memory in KiB times passes) a sealed file may ask for: 4 GiB-passes,
/// a few seconds on one core.
pub const MAX_COST: u64 = 4 * 1024 * 1024;

/// Argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealParams {
    /// Memory in KiB.
    pub m_cost_kib: u32,
    /// Passes over memory.
    pub t_cost: u32,
    /// Lanes.
    pub parallelism: u8,
}

impl Default for SealParams {
    /// 64 MiB, 3 passes, 1 lane (RFC 9106's second recommended option, scaled to a node
    /// that unlocks its key once at start).
    fn default() -> Self {
        Self {
            m_cost_kib: 64 * 1024,
            t_cost: 3,
            parallelism: 1,
        }
    }
}

impl SealParams {
    /// Cheap parameters for tests only: they protect nothing.
    pub const fn insecure_for_tests() -> Self {
        Self {
            m_cost_kib: 64,
            t_cost: 1,
            parallelism: 1,
        }
    }

    fn check(&self) -> Result<()> {
        let min_m = 8 * u32::from(self.parallelism.max(1));
        if self.parallelism == 0 || self.parallelism > MAX_PARALLELISM {
            return Err(malformed(format!(
                "parallelism {} outside 1..={MAX_PARALLELISM}",
                self.parallelism
            )));
        }
        if self.t_cost == 0 || self.t_cost > MAX_T_COST {
            return Err(malformed(format!(
                "t_cost {} outside 1..={MAX_T_COST}",
                self.t_cost
            )));
        }
        if u64::from(self.m_cost_kib) * u64::from(self.t_cost) > MAX_COST {
            return Err(malformed(format!(
                "cost {} KiB x {} passes above the limit of {MAX_COST} KiB-passes",
                self.m_cost_kib, self.t_cost
            )));
        }
        if self.m_cost_kib < min_m || self.m_cost_kib > MAX_M_COST_KIB {
            return Err(malformed(format!(
                "m_cost {} KiB outside {min_m}..={MAX_M_COST_KIB}",
                self.m_cost_kib
            )));
        }
        Ok(())
    }

    fn derive(&self, passphrase: &[u8], salt: &[u8; SALT_LEN]) -> Result<Zeroizing<[u8; 32]>> {
        crate::kdf::argon2id(
            passphrase,
            salt,
            self.m_cost_kib,
            self.t_cost,
            u32::from(self.parallelism),
        )
    }
}

fn malformed(detail: String) -> Error {
    Error::Malformed {
        what: "sealed key data",
        detail,
    }
}

/// Seals `secret` under `passphrase`.
pub fn seal(secret: &[u8], passphrase: &[u8], params: SealParams) -> Result<Vec<u8>> {
    if secret.len() > MAX_SECRET_LEN {
        return Err(Error::TooLarge {
            what: "sealed secret",
            len: secret.len() as u64,
            max: MAX_SECRET_LEN as u64,
        });
    }
    params.check()?;
    let salt = crate::random_array::<SALT_LEN>()?;
    let nonce = crate::random_array::<NONCE_LEN>()?;
    let mut out = Vec::with_capacity(HEADER_LEN + secret.len() + TAG_LEN);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.push(KDF_ARGON2ID);
    out.extend_from_slice(&params.m_cost_kib.to_le_bytes());
    out.extend_from_slice(&params.t_cost.to_le_bytes());
    out.push(params.parallelism);
    out.extend_from_slice(&salt);
    out.extend_from_slice(&nonce);
    let key = params.derive(passphrase, &salt)?;
    let sealed = AeadKey::new(&key).seal(&nonce, &out, secret)?;
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// The parameters a sealed blob was made with (to decide whether to re-seal with stronger
/// ones).
pub fn params_of(sealed: &[u8]) -> Result<SealParams> {
    parse_header(sealed).map(|h| h.params)
}

struct Header {
    params: SealParams,
    salt: [u8; SALT_LEN],
    nonce: [u8; NONCE_LEN],
}

fn parse_header(sealed: &[u8]) -> Result<Header> {
    if sealed.len() < HEADER_LEN + TAG_LEN {
        return Err(malformed(format!(
            "{} bytes is shorter than the smallest sealed file",
            sealed.len()
        )));
    }
    if &sealed[..8] != MAGIC {
        return Err(malformed("missing the AMSEALED magic".into()));
    }
    if sealed[8] != VERSION {
        return Err(Error::Version {
            what: "sealed key data",
            found: u32::from(sealed[8]),
        });
    }
    if sealed[9] != KDF_ARGON2ID {
        return Err(malformed(format!("unknown key derivation {}", sealed[9])));
    }
    let u32_at =
        |i: usize| u32::from_le_bytes([sealed[i], sealed[i + 1], sealed[i + 2], sealed[i + 3]]);
    let params = SealParams {
        m_cost_kib: u32_at(10),
        t_cost: u32_at(14),
        parallelism: sealed[18],
    };
    params.check()?;
    let mut salt = [0u8; SALT_LEN];
    salt.copy_from_slice(&sealed[19..19 + SALT_LEN]);
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&sealed[19 + SALT_LEN..HEADER_LEN]);
    if sealed.len() > HEADER_LEN + MAX_SECRET_LEN + TAG_LEN {
        return Err(Error::TooLarge {
            what: "sealed secret",
            len: (sealed.len() - HEADER_LEN - TAG_LEN) as u64,
            max: MAX_SECRET_LEN as u64,
        });
    }
    Ok(Header {
        params,
        salt,
        nonce,
    })
}

/// Opens data made by [`seal`]. A wrong passphrase or any altered byte gives
/// [`Error::WrongPassphrase`]; a malformed header gives [`Error::Malformed`] or
/// [`Error::Version`].
pub fn open(sealed: &[u8], passphrase: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    let header = parse_header(sealed)?;
    let key = header.params.derive(passphrase, &header.salt)?;
    let (aad, body) = sealed.split_at(HEADER_LEN);
    AeadKey::new(&key)
        .open(&header.nonce, aad, body)
        .map(Zeroizing::new)
        .map_err(|_| Error::WrongPassphrase)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_wrong_passphrase_and_damage() {
        let p = SealParams::insecure_for_tests();
        let sealed = seal(b"secret seed", b"pass", p).unwrap();
        assert_eq!(&open(&sealed, b"pass").unwrap()[..], b"secret seed");
        assert_eq!(open(&sealed, b"wrong"), Err(Error::WrongPassphrase));
        assert_eq!(params_of(&sealed).unwrap(), p);
        // Every byte matters: header bytes are authenticated, body bytes too.
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            assert!(open(&bad, b"pass").is_err(), "flip at {i} accepted");
        }
        assert!(matches!(
            open(&sealed[..20], b"pass"),
            Err(Error::Malformed { .. })
        ));
        let mut v2 = sealed.clone();
        v2[8] = 2;
        assert_eq!(
            open(&v2, b"pass"),
            Err(Error::Version {
                what: "sealed key data",
                found: 2
            })
        );
    }

    #[test]
    fn hostile_parameters_are_refused_before_any_work() {
        let mut sealed = seal(b"k", b"p", SealParams::insecure_for_tests()).unwrap();
        sealed[10..14].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(open(&sealed, b"p"), Err(Error::Malformed { .. })));
        let mut sealed = seal(b"k", b"p", SealParams::insecure_for_tests()).unwrap();
        sealed[18] = 0;
        assert!(matches!(open(&sealed, b"p"), Err(Error::Malformed { .. })));
        assert!(
            seal(
                &vec![0; MAX_SECRET_LEN + 1],
                b"p",
                SealParams::insecure_for_tests()
            )
            .is_err()
        );
    }
}
