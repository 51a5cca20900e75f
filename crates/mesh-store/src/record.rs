//! Checksummed values: `crc32(payload) as u32 LE ++ payload`.
//!
//! The database engine checksums its pages; this second, per-record checksum catches damage
//! that happens between engine and caller, and lets us name the record that is bad.

pub(crate) const CHECKSUM_LEN: usize = 4;

pub(crate) fn seal(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(CHECKSUM_LEN + payload.len());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// The payload if the checksum matches, else a description of the damage.
pub(crate) fn open(sealed: &[u8]) -> Result<&[u8], String> {
    let Some((sum, payload)) = sealed.split_first_chunk::<CHECKSUM_LEN>() else {
        return Err(format!(
            "record of {} bytes is shorter than its checksum",
            sealed.len()
        ));
    };
    let expected = u32::from_le_bytes(*sum);
    let actual = crc32fast::hash(payload);
    if expected != actual {
        return Err(format!(
            "checksum mismatch (stored {expected:08x}, computed {actual:08x})"
        ));
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_and_damage() {
        let sealed = seal(b"abc");
        assert_eq!(open(&sealed).unwrap(), b"abc");
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x10;
            assert!(open(&bad).is_err(), "flip at byte {i} must be caught");
        }
        assert!(open(&sealed[..3]).is_err());
        assert_eq!(open(&seal(b"")).unwrap(), b"");
    }
}
