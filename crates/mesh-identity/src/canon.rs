//! Canonical byte encodings of signed statements.
//!
//! Every signed structure encodes as: a domain tag (`agentmesh/<what>/v1`, length-prefixed),
//! then its fields in a fixed order; variable-length fields carry a varint length. The
//! signature covers exactly these bytes, so two peers always agree on what was signed, and a
//! signature for one kind of statement can never be replayed as another.

use mesh_crypto::ed25519::Signature;
use mesh_types::wire::{self, Reader};

use crate::did::Did;
use crate::error::{Error, Result, malformed};

pub(crate) struct Writer {
    out: Vec<u8>,
}

impl Writer {
    pub(crate) fn new(domain: &str) -> Self {
        let mut out = Vec::with_capacity(256);
        wire::put_len_prefixed(&mut out, domain.as_bytes());
        Self { out }
    }

    pub(crate) fn bytes(&mut self, b: &[u8]) -> &mut Self {
        wire::put_len_prefixed(&mut self.out, b);
        self
    }

    pub(crate) fn fixed(&mut self, b: &[u8]) -> &mut Self {
        self.out.extend_from_slice(b);
        self
    }

    pub(crate) fn u64(&mut self, v: u64) -> &mut Self {
        wire::put_varint(&mut self.out, v);
        self
    }

    pub(crate) fn did(&mut self, d: &Did) -> &mut Self {
        self.bytes(d.as_str().as_bytes())
    }

    pub(crate) fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }
}

/// Reads the fields [`Writer`] wrote, with bounds.
pub(crate) struct Parser<'a> {
    what: &'static str,
    r: Reader<'a>,
}

impl<'a> Parser<'a> {
    pub(crate) fn new(what: &'static str, domain: &str, bytes: &'a [u8]) -> Result<Self> {
        let mut p = Self {
            what,
            r: Reader::new(bytes),
        };
        let tag = p.bytes(64)?;
        if tag != domain.as_bytes() {
            return Err(malformed(
                what,
                format!(
                    "domain tag {:?}, expected {domain:?}",
                    String::from_utf8_lossy(tag)
                ),
            ));
        }
        Ok(p)
    }

    fn err(&self, e: wire::WireError) -> Error {
        match e {
            wire::WireError::TooLarge { what, len, max } => Error::TooLarge { what, len, max },
            other => malformed(self.what, other.to_string()),
        }
    }

    pub(crate) fn bytes(&mut self, max: usize) -> Result<&'a [u8]> {
        let what = self.what;
        self.r.len_prefixed(what, max).map_err(|e| self.err(e))
    }

    pub(crate) fn fixed<const N: usize>(&mut self) -> Result<[u8; N]> {
        self.r.array::<N>().map_err(|e| self.err(e))
    }

    pub(crate) fn u64(&mut self) -> Result<u64> {
        self.r.varint().map_err(|e| self.err(e))
    }

    /// A varint element count, refused above `max`.
    pub(crate) fn count(&mut self, what: &'static str, max: usize) -> Result<usize> {
        let n = self.u64()?;
        if n > max as u64 {
            return Err(Error::TooLarge {
                what,
                len: n,
                max: max as u64,
            });
        }
        Ok(n as usize)
    }

    pub(crate) fn string(&mut self, max: usize) -> Result<&'a str> {
        let b = self.bytes(max)?;
        std::str::from_utf8(b).map_err(|_| malformed(self.what, "text is not UTF-8"))
    }

    pub(crate) fn did(&mut self) -> Result<Did> {
        Did::parse(self.string(128)?)
    }

    pub(crate) fn signature(&mut self) -> Result<Signature> {
        Ok(Signature(self.fixed::<64>()?))
    }

    pub(crate) fn finish(self) -> Result<()> {
        let what = self.what;
        self.r.finish().map_err(|e| malformed(what, e.to_string()))
    }
}
