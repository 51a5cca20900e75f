//! HKDF-SHA256 (RFC 5869), HMAC and SHA-2 digests, on `ring`.

use ring::{digest, hkdf, hmac};

use crate::error::{Error, Result};

/// The most bytes HKDF-SHA256 can produce (255 blocks of 32 bytes).
pub const HKDF_SHA256_MAX_OUTPUT: usize = 255 * 32;

struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// HKDF-SHA256: extract with `salt` from `ikm`, expand with the concatenation of `info` into
/// `out` (at most [`HKDF_SHA256_MAX_OUTPUT`] bytes).
pub fn hkdf_sha256(salt: &[u8], ikm: &[u8], info: &[&[u8]], out: &mut [u8]) -> Result<()> {
    if out.len() > HKDF_SHA256_MAX_OUTPUT {
        return Err(Error::TooLarge {
            what: "HKDF output",
            len: out.len() as u64,
            max: HKDF_SHA256_MAX_OUTPUT as u64,
        });
    }
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(ikm);
    let okm = prk
        .expand(info, Len(out.len()))
        .map_err(|_| Error::Derivation {
            detail: "HKDF expand rejected the output length".into(),
        })?;
    okm.fill(out).map_err(|_| Error::Derivation {
        detail: "HKDF fill failed".into(),
    })
}

/// HMAC-SHA256 of `data` under `key`.
pub fn hmac_sha256(key: &[u8], data: &[&[u8]]) -> [u8; 32] {
    hmac_to(hmac::HMAC_SHA256, key, data)
}

/// HMAC-SHA512 of `data` under `key`.
pub fn hmac_sha512(key: &[u8], data: &[&[u8]]) -> [u8; 64] {
    hmac_to(hmac::HMAC_SHA512, key, data)
}

fn hmac_to<const N: usize>(alg: hmac::Algorithm, key: &[u8], data: &[&[u8]]) -> [u8; N] {
    let key = hmac::Key::new(alg, key);
    let mut ctx = hmac::Context::with_key(&key);
    for d in data {
        ctx.update(d);
    }
    let tag = ctx.sign();
    let mut out = [0u8; N];
    out.copy_from_slice(tag.as_ref());
    out
}

/// Argon2id (version 0x13) of `password` with `salt` into 32 bytes: the
/// memory-hard function behind sealed key files and proofs of computation. `memory_kib` and
/// `passes` are the Argon2 `m` and `t` costs.
pub fn argon2id(
    password: &[u8],
    salt: &[u8],
    memory_kib: u32,
    passes: u32,
    parallelism: u32,
) -> Result<zeroize::Zeroizing<[u8; 32]>> {
    let params = argon2::Params::new(memory_kib, passes, parallelism, Some(32)).map_err(|e| {
        Error::Derivation {
            detail: format!("Argon2 parameters: {e}"),
        }
    })?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = zeroize::Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(password, salt, &mut out[..])
        .map_err(|e| Error::Derivation {
            detail: format!("Argon2id: {e}"),
        })?;
    Ok(out)
}

/// SHA-256 of the concatenation of `data`.
pub fn sha256(data: &[&[u8]]) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    for d in data {
        ctx.update(d);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_known_answers() {
        let mut big = vec![0u8; HKDF_SHA256_MAX_OUTPUT + 1];
        assert!(matches!(
            hkdf_sha256(b"", b"k", &[], &mut big),
            Err(Error::TooLarge { .. })
        ));
        // SHA-256("abc"), FIPS 180-2 appendix B.1.
        let abc = sha256(&[b"ab", b"c"]);
        assert_eq!(
            abc[..4],
            [0xba, 0x78, 0x16, 0xbf],
            "SHA-256(abc) starts ba7816bf"
        );
        // HMAC-SHA256 RFC 4231 test case 2 ("Jefe").
        let mac = hmac_sha256(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(mac[..4], [0x5b, 0xdc, 0xc1, 0x46]);
    }
}
