//! What travels on the submission and relay protocols (replica-to-replica messages are
//! `mesh-consensus`'s own encoding).
//!
//! ```text
//! submission: version (1) | client (32 bytes) | id (varint) | payload (varint length + bytes)
//!             | signature flag (0, or 1 + 64 bytes)
//! relay:      version (1) | count (varint) | count × submission without its version byte
//! answer:     1 | seq (varint) | view (varint)    committed
//!             2                                   a duplicate of a request executed before
//! ```
//!
//! Decoders check every length against the consensus [`Limits`] before allocating and reject
//! trailing bytes.

use mesh_consensus::{Limits, Request};
use mesh_types::NodeId;
use mesh_types::wire::{Reader, put_varint};

use crate::error::{Error, Result};

const VERSION: u8 = 1;
const COMMITTED: u8 = 1;
const DUPLICATE: u8 = 2;

/// How a submitted request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It executed in the block at height `seq`, certified in view `view`.
    Committed(Committed),
    /// Its `(client, id)` executed before; it was not executed again.
    Duplicate,
}

/// Where a request executed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// The client the request was ordered under.
    pub client: NodeId,
    /// The request's id.
    pub id: u64,
    /// The height of its block.
    pub seq: u64,
    /// The view of the block's commit certificate.
    pub view: u64,
}

fn put_request(out: &mut Vec<u8>, r: &Request) {
    r.encode(out);
}

fn get_request(r: &mut Reader<'_>, limits: &Limits) -> Result<Request> {
    Request::decode(r, limits).map_err(|e| Error::Unexpected {
        what: "submitted request",
        detail: e.to_string(),
    })
}

fn version(r: &mut Reader<'_>, what: &'static str) -> Result<()> {
    match r.u8().map_err(Error::malformed(what))? {
        VERSION => Ok(()),
        other => Err(Error::Unexpected {
            what,
            detail: format!("version {other}"),
        }),
    }
}

/// Encodes a request for the submission protocol.
pub fn encode_submission(request: &Request) -> Vec<u8> {
    let mut out = Vec::with_capacity(request.payload.len() + 112);
    out.push(VERSION);
    put_request(&mut out, request);
    out
}

/// Decodes [`encode_submission`].
pub fn decode_submission(bytes: &[u8], limits: &Limits) -> Result<Request> {
    let mut r = Reader::new(bytes);
    version(&mut r, "submission")?;
    let request = get_request(&mut r, limits)?;
    r.finish().map_err(Error::malformed("submission"))?;
    Ok(request)
}

/// Encodes requests a validator relays to the others.
pub(crate) fn encode_relay(requests: &[Request]) -> Vec<u8> {
    let len: usize = requests.iter().map(|r| r.payload.len() + 112).sum();
    let mut out = Vec::with_capacity(len + 11);
    out.push(VERSION);
    put_varint(&mut out, requests.len() as u64);
    for r in requests {
        put_request(&mut out, r);
    }
    out
}

/// Decodes [`encode_relay`]: at most `limits.max_forward` requests.
pub(crate) fn decode_relay(bytes: &[u8], limits: &Limits) -> Result<Vec<Request>> {
    let mut r = Reader::new(bytes);
    version(&mut r, "relay")?;
    let n = r
        .varint_len("relayed requests", limits.max_forward)
        .map_err(Error::malformed("relay"))?;
    // Every request takes at least 35 bytes: never reserve more than the input could hold.
    let mut out = Vec::with_capacity(n.min(bytes.len() / 35 + 1));
    for _ in 0..n {
        out.push(get_request(&mut r, limits)?);
    }
    r.finish().map_err(Error::malformed("relay"))?;
    Ok(out)
}

/// Encodes the answer to a submission.
pub(crate) fn encode_outcome(outcome: &Outcome) -> Vec<u8> {
    let mut out = Vec::with_capacity(21);
    match outcome {
        Outcome::Committed(c) => {
            out.push(COMMITTED);
            put_varint(&mut out, c.seq);
            put_varint(&mut out, c.view);
        }
        Outcome::Duplicate => out.push(DUPLICATE),
    }
    out
}

/// Decodes the answer to the submission of `request`.
pub(crate) fn decode_outcome(bytes: &[u8], request: &Request) -> Result<Outcome> {
    let m = || Error::malformed("submission answer");
    let mut r = Reader::new(bytes);
    let outcome = match r.u8().map_err(m())? {
        COMMITTED => Outcome::Committed(Committed {
            client: request.client,
            id: request.id,
            seq: r.varint().map_err(m())?,
            view: r.varint().map_err(m())?,
        }),
        DUPLICATE => Outcome::Duplicate,
        other => {
            return Err(Error::Unexpected {
                what: "submission answer",
                detail: format!("tag {other}"),
            });
        }
    };
    r.finish().map_err(m())?;
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_crypto::ed25519::SigningKey;

    #[test]
    fn submissions_relays_and_answers_round_trip() {
        let limits = Limits::default();
        let key = SigningKey::from_seed(&[4; 32]);
        let plain = Request::new(NodeId([9; 32]), 300, b"hello".to_vec());
        let signed = Request::signed(&key, 7, vec![1; 1000]);
        for r in [&plain, &signed] {
            assert_eq!(
                &decode_submission(&encode_submission(r), &limits).unwrap(),
                r
            );
        }
        let both = vec![plain.clone(), signed];
        assert_eq!(decode_relay(&encode_relay(&both), &limits).unwrap(), both);
        assert_eq!(decode_relay(&encode_relay(&[]), &limits).unwrap(), vec![]);
        let c = Outcome::Committed(Committed {
            client: plain.client,
            id: plain.id,
            seq: 1 << 40,
            view: 3,
        });
        for o in [c, Outcome::Duplicate] {
            assert_eq!(decode_outcome(&encode_outcome(&o), &plain).unwrap(), o);
        }
    }

    #[test]
    fn bad_bytes_are_errors() {
        let limits = Limits {
            max_request_bytes: 10,
            max_forward: 2,
            ..Limits::default()
        };
        let r = Request::new(NodeId([1; 32]), 1, b"0123456789".to_vec());
        let good = encode_submission(&r);
        assert!(decode_submission(&good, &limits).is_ok());
        // Every truncation, a trailing byte, a wrong version, an oversized payload.
        for cut in 0..good.len() {
            assert!(
                decode_submission(&good[..cut], &limits).is_err(),
                "cut {cut}"
            );
        }
        let mut long = good.clone();
        long.push(0);
        assert!(decode_submission(&long, &limits).is_err());
        let mut other = good.clone();
        other[0] = 2;
        assert!(decode_submission(&other, &limits).is_err());
        let big = Request::new(NodeId([1; 32]), 1, vec![0; 11]);
        assert!(decode_submission(&encode_submission(&big), &limits).is_err());
        // A relay claiming more requests than allowed, or than it holds.
        let three = encode_relay(&[r.clone(), r.clone(), r.clone()]);
        assert!(decode_relay(&three, &limits).is_err());
        assert!(decode_relay(&[1, 2], &limits).is_err());
        assert!(decode_relay(&[1, 0xff, 0xff, 0xff, 0xff, 0x0f], &limits).is_err());
        assert!(decode_outcome(&[], &r).is_err());
        assert!(decode_outcome(&[3], &r).is_err());
        assert!(decode_outcome(&[2, 0], &r).is_err());
    }
}
