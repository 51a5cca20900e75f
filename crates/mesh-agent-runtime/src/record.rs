//! [`AgentRecord`]: an agent's signed registration, committed through consensus so every
//! node of the mesh can answer "where is this DID, and what can it do".

use mesh_identity::{Did, Identity};
use mesh_types::Timestamp;
use mesh_types::wire::{self, Reader};

use crate::error::{Error, Result, malformed, wire as wire_err};

/// The domain tag of a record's signing bytes.
const DOMAIN: &[u8] = b"agentmesh/agent-record/v1\0";
/// The prefix that marks a consensus request (a ledger payload) as an agent registration.
pub const LEDGER_TAG: &[u8] = b"mesh.agent.v1\0";
/// Longest agent name, in bytes.
pub const MAX_NAME_LEN: usize = 64;
/// Most capabilities one record lists.
pub const MAX_CAPABILITIES: usize = 32;
/// Longest capability, in bytes.
pub const MAX_CAPABILITY_LEN: usize = 64;
/// Most addresses one record lists.
pub const MAX_ADDRS: usize = 8;
/// Longest address (a multiaddress in text form), in bytes.
pub const MAX_ADDR_LEN: usize = 256;
/// Longest encoded record, in bytes.
pub const MAX_RECORD_LEN: usize = 16 * 1024;
const MAX_DID_LEN: usize = 128;

/// An agent's registration: who it is, what it offers, where it listens, and through which
/// node it joined. Signed by the agent; a newer `issued` replaces an older record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRecord {
    /// The agent.
    pub did: Did,
    /// A human-readable name (`[A-Za-z0-9._-]`, 1 to [`MAX_NAME_LEN`] bytes).
    pub name: String,
    /// What the agent offers, such as `chat` or `tool/search` (`[a-z0-9._/-]`).
    pub capabilities: Vec<String>,
    /// Multiaddresses the agent listens on, each ending in `/p2p/<its peer id>`.
    pub addrs: Vec<String>,
    /// The libp2p peer id of the node it joined through (its home node).
    pub node: String,
    /// When the agent signed it.
    pub issued: Timestamp,
    /// The agent's Ed25519 signature over everything above.
    pub signature: [u8; 64],
}

fn check_text(what: &'static str, s: &str, max: usize, ok: fn(u8) -> bool) -> Result<()> {
    if s.is_empty() || s.len() > max || !s.bytes().all(ok) {
        return Err(malformed(
            what,
            format!("{s:?}: use 1 to {max} allowed characters"),
        ));
    }
    Ok(())
}

fn name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')
}

fn capability_char(b: u8) -> bool {
    matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'/' | b'-')
}

fn addr_char(b: u8) -> bool {
    b.is_ascii_graphic()
}

impl AgentRecord {
    /// Builds and signs a record for `identity`.
    pub fn sign(
        identity: &Identity,
        name: &str,
        capabilities: Vec<String>,
        addrs: Vec<String>,
        node: &str,
        issued: Timestamp,
    ) -> Result<Self> {
        let mut record = Self {
            did: identity.did().clone(),
            name: name.to_owned(),
            capabilities,
            addrs,
            node: node.to_owned(),
            issued,
            signature: [0; 64],
        };
        record.check_fields()?;
        record.signature = identity.sign(&record.signing_bytes()).0;
        Ok(record)
    }

    fn check_fields(&self) -> Result<()> {
        check_text("agent name", &self.name, MAX_NAME_LEN, name_char)?;
        if self.capabilities.len() > MAX_CAPABILITIES {
            return Err(Error::TooLarge {
                what: "capability list",
                len: self.capabilities.len() as u64,
                max: MAX_CAPABILITIES as u64,
            });
        }
        for c in &self.capabilities {
            check_text("capability", c, MAX_CAPABILITY_LEN, capability_char)?;
        }
        if self.addrs.len() > MAX_ADDRS {
            return Err(Error::TooLarge {
                what: "address list",
                len: self.addrs.len() as u64,
                max: MAX_ADDRS as u64,
            });
        }
        for a in &self.addrs {
            check_text("agent address", a, MAX_ADDR_LEN, addr_char)?;
        }
        check_text("home node", &self.node, MAX_ADDR_LEN, addr_char)?;
        Ok(())
    }

    fn signing_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(DOMAIN);
        wire::put_len_prefixed(&mut out, self.did.as_str().as_bytes());
        wire::put_len_prefixed(&mut out, self.name.as_bytes());
        wire::put_varint(&mut out, self.capabilities.len() as u64);
        for c in &self.capabilities {
            wire::put_len_prefixed(&mut out, c.as_bytes());
        }
        wire::put_varint(&mut out, self.addrs.len() as u64);
        for a in &self.addrs {
            wire::put_len_prefixed(&mut out, a.as_bytes());
        }
        wire::put_len_prefixed(&mut out, self.node.as_bytes());
        wire::put_varint(&mut out, self.issued.0);
        out
    }

    /// Checks the signature against the record's DID and every field limit.
    pub fn verify(&self) -> Result<()> {
        self.check_fields()?;
        self.did
            .verifying_key()?
            .verify(
                &self.signing_bytes(),
                &mesh_crypto::ed25519::Signature(self.signature),
            )
            .map_err(|_| mesh_identity::Error::BadSignature {
                what: "agent record",
            })?;
        Ok(())
    }

    /// The wire encoding: the signing bytes, then the signature.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.signing_bytes();
        out.extend_from_slice(&self.signature);
        out
    }

    /// The consensus request that registers this record: [`LEDGER_TAG`] and the encoding.
    pub fn to_ledger_payload(&self) -> Vec<u8> {
        let mut out = LEDGER_TAG.to_vec();
        out.extend_from_slice(&self.to_bytes());
        out
    }

    /// The record in a ledger payload, if the payload is a registration at all (`None` for
    /// other requests; an error for a registration that does not decode or verify).
    pub fn from_ledger_payload(payload: &[u8]) -> Option<Result<Self>> {
        let body = payload.strip_prefix(LEDGER_TAG)?;
        Some(Self::from_bytes(body).and_then(|r| r.verify().map(|()| r)))
    }

    /// Decodes [`Self::to_bytes`], enforcing every limit (does not verify the signature).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.len() > MAX_RECORD_LEN {
            return Err(Error::TooLarge {
                what: "agent record",
                len: bytes.len() as u64,
                max: MAX_RECORD_LEN as u64,
            });
        }
        let e = wire_err("agent record");
        let mut r = Reader::new(bytes);
        if r.bytes(DOMAIN.len()).map_err(&e)? != DOMAIN {
            return Err(malformed("agent record", "unknown domain tag or version"));
        }
        let text = |r: &mut Reader<'_>, what: &'static str, max: usize| -> Result<String> {
            let raw = r
                .len_prefixed(what, max)
                .map_err(wire_err("agent record"))?;
            String::from_utf8(raw.to_vec())
                .map_err(|_| malformed("agent record", format!("{what} is not UTF-8")))
        };
        let did = Did::parse(&text(&mut r, "did", MAX_DID_LEN)?)?;
        let name = text(&mut r, "name", MAX_NAME_LEN)?;
        let n = r.varint_len("capabilities", MAX_CAPABILITIES).map_err(&e)?;
        let mut capabilities = Vec::with_capacity(n);
        for _ in 0..n {
            capabilities.push(text(&mut r, "capability", MAX_CAPABILITY_LEN)?);
        }
        let n = r.varint_len("addresses", MAX_ADDRS).map_err(&e)?;
        let mut addrs = Vec::with_capacity(n);
        for _ in 0..n {
            addrs.push(text(&mut r, "address", MAX_ADDR_LEN)?);
        }
        let node = text(&mut r, "node", MAX_ADDR_LEN)?;
        let issued = Timestamp(r.varint().map_err(&e)?);
        let signature = r.array::<64>().map_err(&e)?;
        r.finish().map_err(&e)?;
        let record = Self {
            did,
            name,
            capabilities,
            addrs,
            node,
            issued,
            signature,
        };
        record.check_fields()?;
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn record(identity: &Identity) -> AgentRecord {
        AgentRecord::sign(
            identity,
            "alice",
            vec!["chat".into(), "tool/search".into()],
            vec!["/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWexample".into()],
            "12D3KooWnode",
            Timestamp(1_000),
        )
        .unwrap()
    }

    #[test]
    fn round_trips_and_verifies() {
        let id = Identity::generate(Timestamp(1)).unwrap();
        let r = record(&id);
        let back = AgentRecord::from_bytes(&r.to_bytes()).unwrap();
        assert_eq!(back, r);
        back.verify().unwrap();
        let payload = r.to_ledger_payload();
        assert_eq!(
            AgentRecord::from_ledger_payload(&payload).unwrap().unwrap(),
            r
        );
        assert!(AgentRecord::from_ledger_payload(b"some other request").is_none());
    }

    #[test]
    fn a_changed_field_breaks_the_signature() {
        let id = Identity::generate(Timestamp(1)).unwrap();
        let mut r = record(&id);
        r.capabilities.push("admin".into());
        assert!(matches!(
            r.verify(),
            Err(Error::Identity(mesh_identity::Error::BadSignature { .. }))
        ));
        // A record signed by someone else under this DID.
        let other = Identity::generate(Timestamp(1)).unwrap();
        let mut forged = record(&other);
        forged.did = id.did().clone();
        assert!(forged.verify().is_err());
        let payload = forged.to_ledger_payload();
        assert!(AgentRecord::from_ledger_payload(&payload).unwrap().is_err());
    }

    #[test]
    fn bad_fields_are_refused() {
        let id = Identity::generate(Timestamp(1)).unwrap();
        let sign = |name: &str, caps: Vec<String>, addrs: Vec<String>| {
            AgentRecord::sign(&id, name, caps, addrs, "node", Timestamp(1))
        };
        assert!(sign("", vec![], vec![]).is_err());
        assert!(sign("white space", vec![], vec![]).is_err());
        assert!(sign(&"a".repeat(65), vec![], vec![]).is_err());
        assert!(sign("ok", vec!["UPPER".into()], vec![]).is_err());
        assert!(sign("ok", vec!["c".into(); 33], vec![]).is_err());
        assert!(sign("ok", vec![], vec!["/a".into(); 9]).is_err());
        assert!(sign("ok", vec![], vec!["x".repeat(257)]).is_err());
        assert!(sign("ok", vec![], vec![]).is_ok());
    }

    #[test]
    fn truncated_or_padded_bytes_are_refused() {
        let id = Identity::generate(Timestamp(1)).unwrap();
        let bytes = record(&id).to_bytes();
        for cut in 0..bytes.len() {
            assert!(
                AgentRecord::from_bytes(&bytes[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let mut padded = bytes.clone();
        padded.push(0);
        assert!(AgentRecord::from_bytes(&padded).is_err());
        assert!(AgentRecord::from_bytes(&vec![0; MAX_RECORD_LEN + 1]).is_err());
    }
}
