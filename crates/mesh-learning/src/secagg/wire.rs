//! The secure-aggregation messages and their one canonical encoding.
//!
//! Every message starts with a header: `u8` format version ([`VERSION`]), `u8` kind tag,
//! `u64` round (little-endian) and the 32-byte id of the model the round started from. Then,
//! per kind (ids are one byte; every list has a `u8` count and strictly increasing ids):
//!
//! | kind | tag | body |
//! |---|---|---|
//! | [`AdvertiseKeys`] | 1 | sender, channel public key (32), mask public key (32), self-mask commitment (32) |
//! | [`KeyList`] | 2 | `u8` signed flag (0 or 1; 1 needs at least one entry), count, then per client: id, channel key, mask key, commitment, and when signed the client's 64-byte signature of its [`AdvertiseKeys`] |
//! | [`ShareKeys`] | 3 | sender, count, then per recipient: id, ciphertext ([`CIPHERTEXT_LEN`]) |
//! | [`RoutedShares`] | 4 | recipient, count, then per sender: id, ciphertext |
//! | [`MaskedInput`] | 5 | sender, `u32` dimension, then that many `u32` |
//! | [`UnmaskRequest`] | 6 | count and ids of the survivors, count and ids of the dropped |
//! | [`UnmaskShares`] | 7 | sender, count, (id, 32-byte self-mask share) per survivor, count, (id, 32-byte mask-key share) per dropped client |
//!
//! Signed form ([`encode_signed`], [`split_signed`]): the encoding followed by the sender's
//! 64-byte Ed25519 signature over [`SIGNATURE_DOMAIN`] followed by the BLAKE3 hash of the
//! encoding (hashing first keeps the signed bytes small for megabyte inputs).
//!
//! [`Message::decode`] accepts exactly what [`Message::encode`] produces: anything else
//! (another version, an unknown tag, a truncated or oversized body, an id of 255, ids not
//! strictly increasing, trailing bytes) is a [`WireError`], never a panic, and nothing is
//! allocated beyond what the bytes present can fill.

/// The format version this build writes and reads.
pub const VERSION: u8 = 1;
/// The header's length: version, tag, round, model id.
pub const HEADER_LEN: usize = 1 + 1 + 8 + 32;
/// The length of one encrypted pair of shares: two 32-byte shares and the AEAD tag.
pub const CIPHERTEXT_LEN: usize = 64 + mesh_crypto::aead::TAG_LEN;
/// The largest client id (ids are Shamir points minus one, and points are non-zero bytes).
pub const MAX_CLIENT_ID: u8 = 254;
/// The most coordinates a masked input may carry whatever the caller's limit (2^28: a 1 GiB
/// message).
pub const MAX_DIM: usize = 1 << 28;

/// The domain tag that starts the bytes a client signs.
pub const SIGNATURE_DOMAIN: &[u8] = b"agentmesh/secagg-message/v1";
/// The length of the signature that ends a signed message.
pub const SIGNATURE_LEN: usize = mesh_crypto::ed25519::SIGNATURE_LEN;

const TAG_ADVERTISE: u8 = 1;
const TAG_KEY_LIST: u8 = 2;
const TAG_SHARE_KEYS: u8 = 3;
const TAG_ROUTED: u8 = 4;
const TAG_MASKED: u8 = 5;
const TAG_UNMASK_REQUEST: u8 = 6;
const TAG_UNMASK_SHARES: u8 = 7;

/// A client's index within the session (0 to [`MAX_CLIENT_ID`]).
pub type ClientId = u8;

/// Why bytes are not a secure-aggregation message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The bytes ended before the message did.
    #[error("truncated message: needed {needed} more bytes at offset {offset}")]
    Truncated {
        /// Where reading stopped.
        offset: usize,
        /// How many bytes were missing.
        needed: usize,
    },
    /// A format version this build does not read.
    #[error("unsupported format version {0}")]
    Version(u8),
    /// A kind tag naming no message.
    #[error("unknown message tag {0}")]
    UnknownTag(u8),
    /// A flag byte other than 0 or 1, or a signed flag on an empty list.
    #[error("invalid flag {0}")]
    Flag(u8),
    /// A client id of 255.
    #[error("client id {0} is out of range")]
    ClientId(u8),
    /// A list's ids do not strictly increase.
    #[error("{what}: entry {position} does not increase")]
    NotIncreasing {
        /// Which list.
        what: &'static str,
        /// Which entry (from 0).
        position: usize,
    },
    /// A masked input longer than the limit.
    #[error("dimension {found} exceeds the limit of {max}")]
    TooLarge {
        /// The declared dimension.
        found: u64,
        /// The limit.
        max: usize,
    },
    /// Bytes follow the message.
    #[error("{0} trailing bytes")]
    Trailing(usize),
}

/// What every message carries first: which aggregation it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Header {
    /// The training round.
    pub round: u64,
    /// The id of the global model the round's updates start from.
    pub model: [u8; 32],
}

/// One client's public keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublicKeys {
    /// X25519 key of the encrypted channel to the other clients (share delivery).
    pub channel: [u8; 32],
    /// X25519 key from which the pairwise mask seeds are agreed.
    pub mask: [u8; 32],
    /// Commitment to the self-mask seed (BLAKE3, see the module docs), so the server can check
    /// a reconstructed seed.
    pub commitment: [u8; 32],
}

/// Round 0, client to server: the sender's public keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdvertiseKeys {
    /// Session.
    pub header: Header,
    /// The sending client.
    pub sender: ClientId,
    /// Its keys.
    pub keys: PublicKeys,
}

/// Round 0, server to every client that advertised: all advertised keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyList {
    /// Session.
    pub header: Header,
    /// The clients that advertised (strictly increasing ids) and their keys.
    pub clients: Vec<(ClientId, PublicKeys)>,
    /// Empty, or per client (in the same order) its signature of its [`AdvertiseKeys`]
    /// message ([`encode_signed`]), so that the others can check the server forwarded its
    /// keys unchanged.
    pub signatures: Vec<[u8; SIGNATURE_LEN]>,
}

impl KeyList {
    /// The signed form of client `id`'s advertisement of `keys` in this list's session: what
    /// its signature in the list covers.
    pub fn advertisement(&self, id: ClientId, keys: PublicKeys) -> Message {
        Message::AdvertiseKeys(AdvertiseKeys {
            header: self.header,
            sender: id,
            keys,
        })
    }
}

/// Round 1, client to server: the sender's encrypted shares, one per other client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareKeys {
    /// Session.
    pub header: Header,
    /// The sending client.
    pub sender: ClientId,
    /// Per recipient (strictly increasing ids), the sealed pair of shares.
    pub ciphertexts: Vec<(ClientId, [u8; CIPHERTEXT_LEN])>,
}

/// Round 1, server to one client: the shares other clients encrypted for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutedShares {
    /// Session.
    pub header: Header,
    /// The client these are for.
    pub recipient: ClientId,
    /// Per sender (strictly increasing ids), its sealed pair of shares for the recipient.
    pub ciphertexts: Vec<(ClientId, [u8; CIPHERTEXT_LEN])>,
}

/// Round 2, client to server: the masked, encoded update.
#[derive(Clone, PartialEq, Eq)]
pub struct MaskedInput {
    /// Session.
    pub header: Header,
    /// The sending client.
    pub sender: ClientId,
    /// `x + PRG(b) + sum of the pairwise masks`, modulo 2^32.
    pub masked: Vec<u32>,
}

impl std::fmt::Debug for MaskedInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MaskedInput")
            .field("header", &self.header)
            .field("sender", &self.sender)
            .field("dim", &self.masked.len())
            .finish()
    }
}

/// Round 3, server to every survivor: who sent a masked input and who dropped after sharing
/// keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnmaskRequest {
    /// Session.
    pub header: Header,
    /// Clients whose masked inputs the server holds: it asks for shares of their self-masks.
    pub survivors: Vec<ClientId>,
    /// Clients that shared keys but sent no input: it asks for shares of their mask keys.
    pub dropped: Vec<ClientId>,
}

/// Round 3, client to server: the shares the request asked for.
#[derive(Clone, PartialEq, Eq)]
pub struct UnmaskShares {
    /// Session.
    pub header: Header,
    /// The sending client.
    pub sender: ClientId,
    /// Per survivor, the sender's share of its self-mask seed.
    pub self_mask_shares: Vec<(ClientId, [u8; 32])>,
    /// Per dropped client, the sender's share of its mask secret key.
    pub mask_key_shares: Vec<(ClientId, [u8; 32])>,
}

impl std::fmt::Debug for UnmaskShares {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids = |v: &[(ClientId, [u8; 32])]| v.iter().map(|e| e.0).collect::<Vec<_>>();
        f.debug_struct("UnmaskShares")
            .field("header", &self.header)
            .field("sender", &self.sender)
            .field("self_mask_shares_of", &ids(&self.self_mask_shares))
            .field("mask_key_shares_of", &ids(&self.mask_key_shares))
            .finish()
    }
}

/// Any secure-aggregation message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Message {
    /// Client to server, round 0.
    AdvertiseKeys(AdvertiseKeys),
    /// Server to clients, round 0.
    KeyList(KeyList),
    /// Client to server, round 1.
    ShareKeys(ShareKeys),
    /// Server to one client, round 1.
    RoutedShares(RoutedShares),
    /// Client to server, round 2.
    MaskedInput(MaskedInput),
    /// Server to clients, round 3.
    UnmaskRequest(UnmaskRequest),
    /// Client to server, round 3.
    UnmaskShares(UnmaskShares),
}

impl Message {
    /// The message's header.
    pub fn header(&self) -> &Header {
        match self {
            Self::AdvertiseKeys(m) => &m.header,
            Self::KeyList(m) => &m.header,
            Self::ShareKeys(m) => &m.header,
            Self::RoutedShares(m) => &m.header,
            Self::MaskedInput(m) => &m.header,
            Self::UnmaskRequest(m) => &m.header,
            Self::UnmaskShares(m) => &m.header,
        }
    }

    /// The sending client of a client-to-server message.
    pub fn sender(&self) -> Option<ClientId> {
        match self {
            Self::AdvertiseKeys(m) => Some(m.sender),
            Self::ShareKeys(m) => Some(m.sender),
            Self::MaskedInput(m) => Some(m.sender),
            Self::UnmaskShares(m) => Some(m.sender),
            Self::KeyList(_) | Self::RoutedShares(_) | Self::UnmaskRequest(_) => None,
        }
    }

    /// The kind's name, for errors and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::AdvertiseKeys(_) => "advertise-keys",
            Self::KeyList(_) => "key-list",
            Self::ShareKeys(_) => "share-keys",
            Self::RoutedShares(_) => "routed-shares",
            Self::MaskedInput(_) => "masked-input",
            Self::UnmaskRequest(_) => "unmask-request",
            Self::UnmaskShares(_) => "unmask-shares",
        }
    }

    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        let (tag, header) = match self {
            Self::AdvertiseKeys(m) => (TAG_ADVERTISE, &m.header),
            Self::KeyList(m) => (TAG_KEY_LIST, &m.header),
            Self::ShareKeys(m) => (TAG_SHARE_KEYS, &m.header),
            Self::RoutedShares(m) => (TAG_ROUTED, &m.header),
            Self::MaskedInput(m) => (TAG_MASKED, &m.header),
            Self::UnmaskRequest(m) => (TAG_UNMASK_REQUEST, &m.header),
            Self::UnmaskShares(m) => (TAG_UNMASK_SHARES, &m.header),
        };
        out.push(VERSION);
        out.push(tag);
        out.extend_from_slice(&header.round.to_le_bytes());
        out.extend_from_slice(&header.model);
        match self {
            Self::AdvertiseKeys(m) => {
                out.push(m.sender);
                put_keys(&mut out, &m.keys);
            }
            Self::KeyList(m) => {
                let signed = !m.signatures.is_empty();
                out.push(u8::from(signed));
                out.push(m.clients.len() as u8);
                for (i, (id, keys)) in m.clients.iter().enumerate() {
                    out.push(*id);
                    put_keys(&mut out, keys);
                    if signed {
                        out.extend_from_slice(m.signatures.get(i).unwrap_or(&[0; SIGNATURE_LEN]));
                    }
                }
            }
            Self::ShareKeys(ShareKeys {
                sender: party,
                ciphertexts,
                ..
            })
            | Self::RoutedShares(RoutedShares {
                recipient: party,
                ciphertexts,
                ..
            }) => {
                out.push(*party);
                out.push(ciphertexts.len() as u8);
                for (id, ct) in ciphertexts {
                    out.push(*id);
                    out.extend_from_slice(ct);
                }
            }
            Self::MaskedInput(m) => {
                out.push(m.sender);
                out.extend_from_slice(&(m.masked.len() as u32).to_le_bytes());
                for v in &m.masked {
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
            Self::UnmaskRequest(m) => {
                for list in [&m.survivors, &m.dropped] {
                    out.push(list.len() as u8);
                    out.extend_from_slice(list);
                }
            }
            Self::UnmaskShares(m) => {
                out.push(m.sender);
                for list in [&m.self_mask_shares, &m.mask_key_shares] {
                    out.push(list.len() as u8);
                    for (id, share) in list {
                        out.push(*id);
                        out.extend_from_slice(share);
                    }
                }
            }
        }
        out
    }

    fn encoded_len(&self) -> usize {
        HEADER_LEN
            + match self {
                Self::AdvertiseKeys(_) => 1 + 96,
                Self::KeyList(m) => {
                    let signature = if m.signatures.is_empty() {
                        0
                    } else {
                        SIGNATURE_LEN
                    };
                    2 + m.clients.len() * (97 + signature)
                }
                Self::ShareKeys(ShareKeys { ciphertexts, .. })
                | Self::RoutedShares(RoutedShares { ciphertexts, .. }) => {
                    2 + ciphertexts.len() * (1 + CIPHERTEXT_LEN)
                }
                Self::MaskedInput(m) => 5 + 4 * m.masked.len(),
                Self::UnmaskRequest(m) => 2 + m.survivors.len() + m.dropped.len(),
                Self::UnmaskShares(m) => {
                    3 + 33 * (m.self_mask_shares.len() + m.mask_key_shares.len())
                }
            }
    }

    /// Decodes one message. Masked inputs may have at most `max_dim` coordinates (and never
    /// more than [`MAX_DIM`]). Lists are bounded by their one-byte counts.
    pub fn decode(bytes: &[u8], max_dim: usize) -> Result<Self, WireError> {
        let mut r = Reader::new(bytes);
        let version = r.u8()?;
        if version != VERSION {
            return Err(WireError::Version(version));
        }
        let tag = r.u8()?;
        if !(TAG_ADVERTISE..=TAG_UNMASK_SHARES).contains(&tag) {
            return Err(WireError::UnknownTag(tag));
        }
        let header = Header {
            round: u64::from_le_bytes(r.array()?),
            model: r.array()?,
        };
        let message = match tag {
            TAG_ADVERTISE => Self::AdvertiseKeys(AdvertiseKeys {
                header,
                sender: r.id()?,
                keys: r.keys()?,
            }),
            TAG_KEY_LIST => {
                let flag = r.u8()?;
                let signed = match flag {
                    0 => false,
                    1 => true,
                    f => return Err(WireError::Flag(f)),
                };
                let entries = r.list("key list", |r| {
                    let keys = r.keys()?;
                    let signature = if signed { Some(r.array()?) } else { None };
                    Ok((keys, signature))
                })?;
                if signed && entries.is_empty() {
                    return Err(WireError::Flag(flag));
                }
                let mut clients = Vec::with_capacity(entries.len());
                let mut signatures = Vec::new();
                for (id, (keys, signature)) in entries {
                    clients.push((id, keys));
                    signatures.extend(signature);
                }
                Self::KeyList(KeyList {
                    header,
                    clients,
                    signatures,
                })
            }
            TAG_SHARE_KEYS => Self::ShareKeys(ShareKeys {
                header,
                sender: r.id()?,
                ciphertexts: r.list("share ciphertexts", |r| r.array())?,
            }),
            TAG_ROUTED => Self::RoutedShares(RoutedShares {
                header,
                recipient: r.id()?,
                ciphertexts: r.list("routed ciphertexts", |r| r.array())?,
            }),
            TAG_MASKED => {
                let sender = r.id()?;
                let dim = u32::from_le_bytes(r.array()?);
                let max = max_dim.min(MAX_DIM);
                if dim as usize > max {
                    return Err(WireError::TooLarge {
                        found: u64::from(dim),
                        max,
                    });
                }
                // Checked before allocating: the values must all be present.
                let body = r.bytes(dim as usize * 4)?;
                let masked = body
                    .chunks_exact(4)
                    .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                Self::MaskedInput(MaskedInput {
                    header,
                    sender,
                    masked,
                })
            }
            TAG_UNMASK_REQUEST => Self::UnmaskRequest(UnmaskRequest {
                header,
                survivors: r
                    .list("survivors", |_| Ok(()))?
                    .into_iter()
                    .map(|e| e.0)
                    .collect(),
                dropped: r
                    .list("dropped", |_| Ok(()))?
                    .into_iter()
                    .map(|e| e.0)
                    .collect(),
            }),
            _ => Self::UnmaskShares(UnmaskShares {
                header,
                sender: r.id()?,
                self_mask_shares: r.list("self-mask shares", |r| r.array())?,
                mask_key_shares: r.list("mask-key shares", |r| r.array())?,
            }),
        };
        if r.remaining() != 0 {
            return Err(WireError::Trailing(r.remaining()));
        }
        Ok(message)
    }
}

/// The bytes a signature covers: the domain tag and the BLAKE3 hash of the encoding.
pub fn signed_bytes(encoding: &[u8]) -> Vec<u8> {
    let mut out = SIGNATURE_DOMAIN.to_vec();
    out.extend_from_slice(blake3::hash(encoding).as_bytes());
    out
}

/// The encoding of `message` followed by `key`'s signature of it.
pub fn encode_signed(message: &Message, key: &mesh_crypto::ed25519::SigningKey) -> Vec<u8> {
    let mut out = message.encode();
    let signature = key.sign(&signed_bytes(&out));
    out.extend_from_slice(&signature.0);
    out
}

/// Splits a signed message into its encoding and its signature (not checked here).
pub fn split_signed(bytes: &[u8]) -> Result<(&[u8], [u8; SIGNATURE_LEN]), WireError> {
    let at = bytes
        .len()
        .checked_sub(SIGNATURE_LEN)
        .ok_or_else(|| WireError::Truncated {
            offset: bytes.len(),
            needed: SIGNATURE_LEN.saturating_sub(bytes.len()),
        })?;
    let (encoding, tail) = bytes.split_at(at);
    let mut signature = [0u8; SIGNATURE_LEN];
    signature.copy_from_slice(tail);
    Ok((encoding, signature))
}

fn put_keys(out: &mut Vec<u8>, keys: &PublicKeys) {
    out.extend_from_slice(&keys.channel);
    out.extend_from_slice(&keys.mask);
    out.extend_from_slice(&keys.commitment);
}

/// `mesh_types::wire::Reader` with this module's errors, and the secure-aggregation fields.
struct Reader<'a> {
    inner: mesh_types::wire::Reader<'a>,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self {
            inner: mesh_types::wire::Reader::new(buf),
        }
    }

    fn remaining(&self) -> usize {
        self.inner.remaining()
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let (offset, remaining) = (self.inner.position(), self.remaining());
        self.inner.bytes(n).map_err(|_| WireError::Truncated {
            offset,
            needed: n.saturating_sub(remaining),
        })
    }

    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.array::<1>()?[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.bytes(N)?);
        Ok(a)
    }

    fn id(&mut self) -> Result<ClientId, WireError> {
        let id = self.u8()?;
        if id > MAX_CLIENT_ID {
            return Err(WireError::ClientId(id));
        }
        Ok(id)
    }

    fn keys(&mut self) -> Result<PublicKeys, WireError> {
        Ok(PublicKeys {
            channel: self.array()?,
            mask: self.array()?,
            commitment: self.array()?,
        })
    }

    /// A `u8` count, then that many entries of an id and an item, ids strictly increasing.
    fn list<T>(
        &mut self,
        what: &'static str,
        mut item: impl FnMut(&mut Self) -> Result<T, WireError>,
    ) -> Result<Vec<(ClientId, T)>, WireError> {
        let count = self.u8()?;
        let mut out = Vec::with_capacity(usize::from(count));
        let mut prev: Option<ClientId> = None;
        for position in 0..usize::from(count) {
            let id = self.id()?;
            if prev.is_some_and(|p| p >= id) {
                return Err(WireError::NotIncreasing { what, position });
            }
            prev = Some(id);
            out.push((id, item(self)?));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header() -> Header {
        Header {
            round: 0x0102_0304_0506_0708,
            model: [0xab; 32],
        }
    }

    fn keys(i: u8) -> PublicKeys {
        PublicKeys {
            channel: [i; 32],
            mask: [i.wrapping_add(1); 32],
            commitment: [i.wrapping_add(2); 32],
        }
    }

    pub(crate) fn samples() -> Vec<Message> {
        let header = header();
        vec![
            Message::AdvertiseKeys(AdvertiseKeys {
                header,
                sender: 3,
                keys: keys(3),
            }),
            Message::KeyList(KeyList {
                header,
                clients: vec![(0, keys(0)), (4, keys(4)), (254, keys(9))],
                signatures: Vec::new(),
            }),
            Message::KeyList(KeyList {
                header,
                clients: vec![(1, keys(1)), (2, keys(2))],
                signatures: vec![[0x11; SIGNATURE_LEN], [0x22; SIGNATURE_LEN]],
            }),
            Message::ShareKeys(ShareKeys {
                header,
                sender: 1,
                ciphertexts: vec![(0, [5; CIPHERTEXT_LEN]), (2, [6; CIPHERTEXT_LEN])],
            }),
            Message::RoutedShares(RoutedShares {
                header,
                recipient: 2,
                ciphertexts: vec![(1, [7; CIPHERTEXT_LEN])],
            }),
            Message::MaskedInput(MaskedInput {
                header,
                sender: 7,
                masked: vec![0, 1, u32::MAX, 0xdead_beef],
            }),
            Message::UnmaskRequest(UnmaskRequest {
                header,
                survivors: vec![0, 1, 5],
                dropped: vec![2],
            }),
            Message::UnmaskShares(UnmaskShares {
                header,
                sender: 5,
                self_mask_shares: vec![(0, [1; 32]), (1, [2; 32]), (5, [3; 32])],
                mask_key_shares: vec![(2, [4; 32])],
            }),
        ]
    }

    #[test]
    fn every_kind_round_trips_and_every_prefix_is_truncated() {
        for m in samples() {
            let bytes = m.encode();
            assert_eq!(bytes.len(), m.encoded_len(), "{}", m.kind());
            assert_eq!(Message::decode(&bytes, 16).unwrap(), m);
            for cut in 0..bytes.len() {
                assert!(
                    matches!(
                        Message::decode(&bytes[..cut], 16),
                        Err(WireError::Truncated { .. })
                    ),
                    "{} cut at {cut}",
                    m.kind()
                );
            }
            let mut long = bytes.clone();
            long.push(0);
            assert_eq!(Message::decode(&long, 16), Err(WireError::Trailing(1)));
        }
    }

    #[test]
    fn malformed_messages_are_typed_errors() {
        let advertise = samples()[0].encode();
        let mut v = advertise.clone();
        v[0] = 2;
        assert_eq!(Message::decode(&v, 16), Err(WireError::Version(2)));
        for tag in [0, 8, 255] {
            let mut v = advertise.clone();
            v[1] = tag;
            assert_eq!(Message::decode(&v, 16), Err(WireError::UnknownTag(tag)));
        }
        let mut v = advertise.clone();
        v[HEADER_LEN] = 255;
        assert_eq!(Message::decode(&v, 16), Err(WireError::ClientId(255)));
        // The key list's ids must increase: swap in a repeated id.
        let mut v = samples()[1].encode();
        v[HEADER_LEN + 2 + 97] = 0;
        assert_eq!(
            Message::decode(&v, 16),
            Err(WireError::NotIncreasing {
                what: "key list",
                position: 1
            })
        );
        // A masked input above the caller's limit, and one claiming more values than present.
        // The key list's signed flag: 0 or 1, and 1 only on a non-empty list.
        let mut v = samples()[1].encode();
        v[HEADER_LEN] = 2;
        assert_eq!(Message::decode(&v, 16), Err(WireError::Flag(2)));
        let mut v = samples()[1].encode()[..HEADER_LEN + 2].to_vec();
        v[HEADER_LEN] = 1;
        v[HEADER_LEN + 1] = 0;
        assert_eq!(Message::decode(&v, 16), Err(WireError::Flag(1)));
        let masked = samples()[5].encode();
        assert_eq!(
            Message::decode(&masked, 3),
            Err(WireError::TooLarge { found: 4, max: 3 })
        );
        let mut v = masked[..HEADER_LEN + 1].to_vec();
        v.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            Message::decode(&v, usize::MAX),
            Err(WireError::TooLarge {
                found: u64::from(u32::MAX),
                max: MAX_DIM
            })
        );
        let mut v = masked[..HEADER_LEN + 1].to_vec();
        v.extend_from_slice(&1000u32.to_le_bytes());
        assert!(matches!(
            Message::decode(&v, 2000),
            Err(WireError::Truncated { needed: 4000, .. })
        ));
        // An unmask request whose dropped list repeats an id.
        let mut v = samples()[6].encode();
        // Its last byte is the one dropped id (2); count two and repeat it.
        let n = v.len();
        v[n - 2] = 2;
        v.push(2);
        assert!(matches!(
            Message::decode(&v, 16),
            Err(WireError::NotIncreasing {
                what: "dropped",
                ..
            })
        ));
    }

    #[test]
    fn signed_messages_split_into_encoding_and_signature() {
        let key = mesh_crypto::ed25519::SigningKey::from_seed(&[1; 32]);
        let m = &samples()[0];
        let signed = encode_signed(m, &key);
        let (encoding, signature) = split_signed(&signed).unwrap();
        assert_eq!(encoding, m.encode());
        key.verifying_key()
            .verify(
                &signed_bytes(encoding),
                &mesh_crypto::ed25519::Signature(signature),
            )
            .unwrap();
        for len in [0, 1, SIGNATURE_LEN - 1] {
            assert_eq!(
                split_signed(&signed[..len]),
                Err(WireError::Truncated {
                    offset: len,
                    needed: SIGNATURE_LEN - len
                })
            );
        }
        assert_eq!(split_signed(&signed[..SIGNATURE_LEN]).unwrap().0, b"");
    }

    proptest! {
        /// Arbitrary bytes never panic, and whatever decodes re-encodes to the same bytes.
        #[test]
        fn arbitrary_bytes_decode_canonically_or_fail(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            if let Ok(m) = Message::decode(&bytes, 64) {
                prop_assert_eq!(&m.encode(), &bytes);
            }
            if let Ok((encoding, _)) = split_signed(&bytes) {
                prop_assert_eq!(encoding.len() + SIGNATURE_LEN, bytes.len());
            }
        }

        /// Valid messages with one byte changed, cut or extended decode canonically or fail.
        #[test]
        fn mutated_messages_decode_canonically_or_fail(
            which in 0usize..8,
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
            cut in any::<bool>(),
        ) {
            let mut bytes = samples()[which].encode();
            let i = at.index(bytes.len());
            if cut {
                bytes.truncate(i);
            } else {
                bytes[i] = byte;
            }
            if let Ok(m) = Message::decode(&bytes, 64) {
                prop_assert_eq!(m.encode(), bytes);
            }
        }
    }
}
