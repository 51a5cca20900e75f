//! Shared pieces of the persistent stores: input checks, the record encodings' building
//! blocks and the key helpers.
//!
//! Records are a version byte followed by fields written with `mesh_types::wire`'s varints
//! and length prefixes. Every decoder reads with a [`Reader`], checks each length against the
//! same bound the writer enforced, re-runs the input checks on what it read (a record that
//! could not have been written is corrupt) and refuses trailing bytes.

use std::collections::BTreeMap;

use mesh_types::wire::{Reader, WireError, put_len_prefixed, put_varint};

use crate::error::{Error, Result};

/// Version byte that starts every record this crate writes.
pub(crate) const RECORD_VERSION: u8 = 1;

/// Longest name (entity type, relation type, metadata or attribute key), in bytes.
pub const MAX_NAME_BYTES: usize = 64;
/// Most key/value pairs in an episode's metadata or an entity's or relation's attributes.
pub const MAX_PAIRS: usize = 32;
/// Longest metadata or attribute value, in bytes.
pub const MAX_VALUE_BYTES: usize = 4 * 1024;

/// Bounded key/value pairs: episode metadata, entity and relation attributes.
pub type Attributes = BTreeMap<String, String>;

/// Checks a name: 1 to [`MAX_NAME_BYTES`] bytes from `[A-Za-z0-9_.:-]`.
pub(crate) fn check_name(what: &'static str, name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::Empty { what });
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(Error::TooLong {
            what,
            len: name.len(),
            max: MAX_NAME_BYTES,
        });
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-')))
    {
        return Err(Error::BadName {
            what,
            detail: format!("character {c:?}: use [A-Za-z0-9_.:-]"),
        });
    }
    Ok(())
}

/// Checks free text: 1 to `max` bytes, no NUL (the key separator) and no other control
/// character except tab, newline and carriage return.
pub(crate) fn check_text(
    what: &'static str,
    text: &str,
    max: usize,
    allow_newlines: bool,
) -> Result<()> {
    if text.is_empty() {
        return Err(Error::Empty { what });
    }
    if text.len() > max {
        return Err(Error::TooLong {
            what,
            len: text.len(),
            max,
        });
    }
    let allowed = |c: char| allow_newlines && matches!(c, '\t' | '\n' | '\r');
    if let Some(c) = text.chars().find(|&c| c.is_control() && !allowed(c)) {
        return Err(Error::BadName {
            what,
            detail: format!("control character {c:?}"),
        });
    }
    Ok(())
}

/// Checks metadata or attributes: at most [`MAX_PAIRS`] pairs, keys are names, values are
/// text of at most [`MAX_VALUE_BYTES`] (may be empty).
pub(crate) fn check_pairs(what: &'static str, pairs: &Attributes) -> Result<()> {
    if pairs.len() > MAX_PAIRS {
        return Err(Error::TooMany {
            what,
            count: pairs.len(),
            max: MAX_PAIRS,
        });
    }
    for (k, v) in pairs {
        check_name(what, k)?;
        if !v.is_empty() {
            check_text(what, v, MAX_VALUE_BYTES, true)?;
        }
    }
    Ok(())
}

pub(crate) fn put_str(out: &mut Vec<u8>, s: &str) {
    put_len_prefixed(out, s.as_bytes());
}

pub(crate) fn put_pairs(out: &mut Vec<u8>, pairs: &Attributes) {
    put_varint(out, pairs.len() as u64);
    for (k, v) in pairs {
        put_str(out, k);
        put_str(out, v);
    }
}

/// A decoding failure, before it is given the record's name.
#[derive(Debug)]
pub(crate) enum DecodeError {
    Wire(WireError),
    Invalid(String),
}

impl From<WireError> for DecodeError {
    fn from(e: WireError) -> Self {
        Self::Wire(e)
    }
}

impl From<Error> for DecodeError {
    fn from(e: Error) -> Self {
        Self::Invalid(e.to_string())
    }
}

impl DecodeError {
    /// The crate error for a record called `what` stored under `key`.
    pub(crate) fn at(self, what: &'static str, key: &[u8]) -> Error {
        let detail = match self {
            Self::Wire(e) => e.to_string(),
            Self::Invalid(s) => s,
        };
        Error::Corrupt {
            what,
            key: show_key(key),
            detail,
        }
    }
}

pub(crate) type Decoded<T> = std::result::Result<T, DecodeError>;

/// A key for error messages: printable ASCII as is, other bytes escaped, at most 80 bytes.
pub(crate) fn show_key(key: &[u8]) -> String {
    let shown: String = key
        .iter()
        .take(80)
        .flat_map(|&b| std::ascii::escape_default(b))
        .map(char::from)
        .collect();
    if key.len() > 80 {
        format!("{shown}...")
    } else {
        shown
    }
}

pub(crate) fn read_version(r: &mut Reader<'_>) -> Decoded<()> {
    let v = r.u8()?;
    if v != RECORD_VERSION {
        return Err(DecodeError::Invalid(format!("unknown record version {v}")));
    }
    Ok(())
}

pub(crate) fn read_str<'a>(r: &mut Reader<'a>, what: &'static str, max: usize) -> Decoded<&'a str> {
    let bytes = r.len_prefixed(what, max)?;
    std::str::from_utf8(bytes).map_err(|_| DecodeError::Invalid(format!("{what} is not UTF-8")))
}

pub(crate) fn read_pairs(r: &mut Reader<'_>, what: &'static str) -> Decoded<Attributes> {
    let n = r.varint_len(what, MAX_PAIRS)?;
    let mut pairs = Attributes::new();
    let mut last: Option<&str> = None;
    for _ in 0..n {
        let k = read_str(r, what, MAX_NAME_BYTES)?;
        let v = read_str(r, what, MAX_VALUE_BYTES)?;
        if last.is_some_and(|l| l >= k) {
            return Err(DecodeError::Invalid(format!("{what} keys out of order")));
        }
        last = Some(k);
        pairs.insert(k.to_owned(), v.to_owned());
    }
    check_pairs(what, &pairs)?;
    Ok(pairs)
}

/// A one-field record: the version byte and a varint.
pub(crate) fn encode_u64(value: u64) -> Vec<u8> {
    let mut out = vec![RECORD_VERSION];
    put_varint(&mut out, value);
    out
}

pub(crate) fn decode_u64(bytes: &[u8]) -> Decoded<u64> {
    let mut r = Reader::new(bytes);
    read_version(&mut r)?;
    let v = r.varint()?;
    r.finish()?;
    Ok(v)
}

/// `prefix || part || 0x00 || ...`: keys made of parts that never contain NUL.
pub(crate) fn key(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + parts.iter().map(|p| p.len() + 1).sum::<usize>());
    k.push(tag);
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            k.push(0);
        }
        k.extend_from_slice(p);
    }
    k
}

pub(crate) use mesh_store::prefix_successor as prefix_end;

/// Wraps a storage error with what this crate was doing.
pub(crate) fn store(op: &'static str) -> impl FnOnce(mesh_store::Error) -> Error {
    move |source| Error::Store { op, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_text() {
        check_name("n", "works_at:v1.2-x").unwrap();
        assert!(matches!(check_name("n", ""), Err(Error::Empty { .. })));
        assert!(matches!(
            check_name("n", &"a".repeat(65)),
            Err(Error::TooLong { len: 65, .. })
        ));
        assert!(matches!(check_name("n", "a b"), Err(Error::BadName { .. })));
        check_text("t", "line\nline\ttab", 100, true).unwrap();
        assert!(check_text("t", "a\nb", 100, false).is_err());
        assert!(check_text("t", "nul\0", 100, true).is_err());
        assert!(matches!(
            check_text("t", "abcd", 3, true),
            Err(Error::TooLong { .. })
        ));
    }

    #[test]
    fn pairs_round_trip_and_reject_bad_input() {
        let mut p = Attributes::new();
        p.insert("a".into(), "x".into());
        p.insert("b".into(), String::new());
        let mut out = Vec::new();
        put_pairs(&mut out, &p);
        let mut r = Reader::new(&out);
        assert_eq!(read_pairs(&mut r, "m").unwrap(), p);
        r.finish().unwrap();

        // Keys out of order.
        let mut bad = vec![2];
        for k in ["b", "a"] {
            put_str(&mut bad, k);
            put_str(&mut bad, "v");
        }
        assert!(read_pairs(&mut Reader::new(&bad), "m").is_err());
        // Too many pairs claimed.
        let mut bad = Vec::new();
        put_varint(&mut bad, 1000);
        assert!(read_pairs(&mut Reader::new(&bad), "m").is_err());
        // Too many pairs given.
        let many: Attributes = (0..33).map(|i| (format!("k{i}"), String::new())).collect();
        assert!(matches!(
            check_pairs("m", &many),
            Err(Error::TooMany { count: 33, .. })
        ));
    }

    #[test]
    fn keys() {
        assert_eq!(key(b'X', &[b"ab", b"c"]), b"Xab\0c".to_vec());
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff"), None);
        assert_eq!(show_key(b"E\x00\x01"), "E\\x00\\x01");
        assert_eq!(decode_u64(&encode_u64(300)).unwrap(), 300);
        assert!(decode_u64(&[2, 1]).is_err());
        assert!(decode_u64(&[1, 1, 0]).is_err());
    }
}
