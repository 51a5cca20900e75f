//! Model versioning: content-addressed model ids, lineage records, and the compatibility
//! check an aggregator runs before merging an update into the global model.
//!
//! A [`ModelId`] is the BLAKE3 hash (in derive-key mode with the context [`ID_CONTEXT`], so
//! it can never collide with another kind of BLAKE3 digest in the mesh) of the canonical
//! encoding of the [`Architecture`] ([`architecture_bytes`]), the parameter count as a `u64`
//! and the parameters as little-endian `f32`s in [`Model`](crate::Model)'s flat order. Two
//! models have the same id exactly when they have the same architecture and bit-identical
//! parameters.
//!
//! A [`Lineage`] records where a model came from: its id and architecture, the id of the model
//! it was aggregated from (none for an initial model), the round, and what produced it (the
//! aggregator's name and how many clients contributed). Its encoding (all integers
//! little-endian):
//!
//! | field | bytes |
//! |---|---|
//! | format version ([`LINEAGE_VERSION`]) | 1 |
//! | model id | 32 |
//! | architecture ([`architecture_bytes`]) | 17 or 25 |
//! | parent flag (0 or 1), then the parent id when 1 | 1 (+ 32) |
//! | round | 8 |
//! | aggregator name length (1 to [`MAX_AGGREGATOR_NAME`]), then the name (printable ASCII) | 1 + length |
//! | contributing clients | 4 |
//!
//! [`Lineage::decode`] accepts only what [`Lineage::encode`] writes, refuses anything longer
//! than [`MAX_LINEAGE_LEN`] before reading it, and bounds every architecture dimension by
//! [`MAX_ARCHITECTURE_DIM`] (and the parameter count by [`MAX_PARAMETERS`]) so no decoded
//! architecture can overflow a size computation.
//!
//! [`Global::check`] is the compatibility check: an update may be merged only if it claims the
//! global model's id as its base, the global architecture, and that architecture's parameter
//! count; anything else is a typed [`Error`].

use mesh_types::Digest;

use crate::model::Architecture;

/// The BLAKE3 derive-key context of model ids.
pub const ID_CONTEXT: &str = "agentmesh 2026 model id v1";
/// The lineage format version this build writes and reads.
pub const LINEAGE_VERSION: u8 = 1;
/// The longest aggregator name in a lineage record.
pub const MAX_AGGREGATOR_NAME: usize = 64;
/// The largest architecture dimension a decoded record may carry.
pub const MAX_ARCHITECTURE_DIM: u64 = 1 << 20;
/// The most parameters a decoded architecture may have (2^30: 4 GiB of `f32`).
pub const MAX_PARAMETERS: u64 = 1 << 30;
/// The longest lineage encoding.
pub const MAX_LINEAGE_LEN: usize = 1 + 32 + 25 + 1 + 32 + 8 + 1 + MAX_AGGREGATOR_NAME + 4;

const ARCH_LOGISTIC: u8 = 1;
const ARCH_MLP: u8 = 2;
const ARCH_CNN: u8 = 3;

/// Why a model version, a lineage record or a merge was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Parameters of another length than the architecture's.
    #[error("{found} parameters for an architecture of {expected}")]
    ParameterCount {
        /// The architecture's count (the global model's, for a merge).
        expected: usize,
        /// The count found.
        found: usize,
    },
    /// An update of another architecture than the global model's.
    #[error("update for architecture {found:?}, the global model is {expected:?}")]
    ArchitectureMismatch {
        /// The global model's.
        expected: Architecture,
        /// The update's.
        found: Architecture,
    },
    /// An update computed from another model than the global one.
    #[error("update based on model {found}, the global model is {expected}")]
    BaseMismatch {
        /// The global model's id.
        expected: ModelId,
        /// The update's base.
        found: ModelId,
    },
    /// Parameters whose id is not the one recorded.
    #[error("parameters hash to {found}, the record names {expected}")]
    IdMismatch {
        /// The recorded id.
        expected: ModelId,
        /// The parameters' id.
        found: ModelId,
    },
    /// A lineage record that cannot be encoded or decoded.
    #[error("malformed lineage record: {detail}")]
    Malformed {
        /// What is wrong.
        detail: String,
    },
    /// A lineage record longer than [`MAX_LINEAGE_LEN`].
    #[error("lineage record of {len} bytes exceeds {MAX_LINEAGE_LEN}")]
    TooLarge {
        /// Its length.
        len: usize,
    },
    /// A lineage format version this build does not read.
    #[error("unsupported lineage format version {0}")]
    Version(u8),
}

fn malformed<T>(detail: impl Into<String>) -> Result<T, Error> {
    Err(Error::Malformed {
        detail: detail.into(),
    })
}

/// A model's content address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModelId(pub Digest);

impl std::fmt::Display for ModelId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl ModelId {
    /// The id of a model of `architecture` with these flat parameters (which must number
    /// `architecture.num_parameters()`).
    pub fn of(architecture: &Architecture, parameters: &[f32]) -> Result<Self, Error> {
        let expected = architecture.num_parameters();
        if parameters.len() != expected {
            return Err(Error::ParameterCount {
                expected,
                found: parameters.len(),
            });
        }
        let mut h = blake3::Hasher::new_derive_key(ID_CONTEXT);
        h.update(&architecture_bytes(architecture));
        h.update(&(parameters.len() as u64).to_le_bytes());
        let mut buf = [0u8; 4096];
        for chunk in parameters.chunks(buf.len() / 4) {
            let bytes = &mut buf[..chunk.len() * 4];
            for (b, p) in bytes.chunks_exact_mut(4).zip(chunk) {
                b.copy_from_slice(&p.to_le_bytes());
            }
            h.update(bytes);
        }
        Ok(Self(Digest(*h.finalize().as_bytes())))
    }

    /// The 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0.0
    }
}

/// The canonical encoding of an architecture: a kind tag (1 logistic regression, 2 MLP, 3 CNN)
/// and its dimensions as `u64` little-endian, in declaration order.
pub fn architecture_bytes(architecture: &Architecture) -> Vec<u8> {
    let (tag, dims): (u8, Vec<usize>) = match *architecture {
        Architecture::Logistic { inputs, classes } => (ARCH_LOGISTIC, vec![inputs, classes]),
        Architecture::Mlp {
            inputs,
            hidden,
            classes,
        } => (ARCH_MLP, vec![inputs, hidden, classes]),
        Architecture::Cnn {
            side,
            channels,
            classes,
        } => (ARCH_CNN, vec![side, channels, classes]),
    };
    let mut out = Vec::with_capacity(1 + 8 * dims.len());
    out.push(tag);
    for d in dims {
        out.extend_from_slice(&(d as u64).to_le_bytes());
    }
    out
}

/// The parameter count of an architecture, computed without overflow (`None` beyond u64).
fn checked_parameters(architecture: &Architecture) -> Option<u64> {
    let d = |x: usize| u64::try_from(x).ok();
    match *architecture {
        Architecture::Logistic { inputs, classes } => d(inputs)?
            .checked_mul(d(classes)?)?
            .checked_add(d(classes)?),
        Architecture::Mlp {
            inputs,
            hidden,
            classes,
        } => {
            let first = d(inputs)?
                .checked_mul(d(hidden)?)?
                .checked_add(d(hidden)?)?;
            let second = d(hidden)?
                .checked_mul(d(classes)?)?
                .checked_add(d(classes)?)?;
            first.checked_add(second)
        }
        Architecture::Cnn {
            side,
            channels,
            classes,
        } => {
            let half = d(side)? / 2;
            let pooled = half.checked_mul(half)?.checked_mul(d(channels)?)?;
            let conv = d(channels)?.checked_mul(10)?;
            pooled
                .checked_mul(d(classes)?)?
                .checked_add(d(classes)?)?
                .checked_add(conv)
        }
    }
}

/// Where a model came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lineage {
    /// The model's id.
    pub model: ModelId,
    /// Its architecture.
    pub architecture: Architecture,
    /// The model it was aggregated from (`None` for an initial model).
    pub parent: Option<ModelId>,
    /// The round that produced it (0 for an initial model).
    pub round: u64,
    /// The aggregation rule that produced it (printable ASCII, 1 to
    /// [`MAX_AGGREGATOR_NAME`] bytes), e.g. `fedavg` or `secagg-fedavg`.
    pub aggregator: String,
    /// How many clients' updates went into it.
    pub clients: u32,
}

impl Lineage {
    /// The record of a model of `architecture` with `parameters`, computing its id.
    pub fn new(
        architecture: Architecture,
        parameters: &[f32],
        parent: Option<ModelId>,
        round: u64,
        aggregator: &str,
        clients: u32,
    ) -> Result<Self, Error> {
        check_name(aggregator)?;
        Ok(Self {
            model: ModelId::of(&architecture, parameters)?,
            architecture,
            parent,
            round,
            aggregator: aggregator.to_owned(),
            clients,
        })
    }

    /// Checks that `parameters` are the recorded model's.
    pub fn verify(&self, parameters: &[f32]) -> Result<(), Error> {
        let found = ModelId::of(&self.architecture, parameters)?;
        if found != self.model {
            return Err(Error::IdMismatch {
                expected: self.model,
                found,
            });
        }
        Ok(())
    }

    /// The canonical encoding (see the module docs). Refuses an aggregator name that is
    /// empty, too long or not printable ASCII.
    pub fn encode(&self) -> Result<Vec<u8>, Error> {
        check_name(&self.aggregator)?;
        let mut out = Vec::with_capacity(MAX_LINEAGE_LEN);
        out.push(LINEAGE_VERSION);
        out.extend_from_slice(self.model.as_bytes());
        out.extend_from_slice(&architecture_bytes(&self.architecture));
        match &self.parent {
            Some(p) => {
                out.push(1);
                out.extend_from_slice(p.as_bytes());
            }
            None => out.push(0),
        }
        out.extend_from_slice(&self.round.to_le_bytes());
        out.push(self.aggregator.len() as u8);
        out.extend_from_slice(self.aggregator.as_bytes());
        out.extend_from_slice(&self.clients.to_le_bytes());
        Ok(out)
    }

    /// Decodes a record, refusing anything [`encode`](Self::encode) would not write.
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.len() > MAX_LINEAGE_LEN {
            return Err(Error::TooLarge { len: bytes.len() });
        }
        let mut r = Reader { buf: bytes, pos: 0 };
        let version = r.u8()?;
        if version != LINEAGE_VERSION {
            return Err(Error::Version(version));
        }
        let model = ModelId(Digest(r.array()?));
        let architecture = r.architecture()?;
        let parent = match r.u8()? {
            0 => None,
            1 => Some(ModelId(Digest(r.array()?))),
            flag => return malformed(format!("parent flag {flag}")),
        };
        let round = u64::from_le_bytes(r.array()?);
        let len = usize::from(r.u8()?);
        let name = r.bytes(len)?;
        let aggregator = std::str::from_utf8(name)
            .map_err(|_| Error::Malformed {
                detail: "aggregator name is not UTF-8".into(),
            })?
            .to_owned();
        check_name(&aggregator)?;
        let clients = u32::from_le_bytes(r.array()?);
        if r.pos != bytes.len() {
            return malformed(format!("{} trailing bytes", bytes.len() - r.pos));
        }
        Ok(Self {
            model,
            architecture,
            parent,
            round,
            aggregator,
            clients,
        })
    }
}

fn check_name(name: &str) -> Result<(), Error> {
    if name.is_empty()
        || name.len() > MAX_AGGREGATOR_NAME
        || !name.bytes().all(|b| b.is_ascii_graphic())
    {
        return malformed(format!(
            "aggregator name of {} bytes must be 1 to {MAX_AGGREGATOR_NAME} printable ASCII \
             characters",
            name.len()
        ));
    }
    Ok(())
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], Error> {
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        let Some(taken) = rest.get(..n) else {
            return malformed(format!("truncated at byte {}", self.pos));
        };
        self.pos += n;
        Ok(taken)
    }

    fn u8(&mut self) -> Result<u8, Error> {
        Ok(self.array::<1>()?[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.bytes(N)?);
        Ok(a)
    }

    fn dim(&mut self) -> Result<usize, Error> {
        let d = u64::from_le_bytes(self.array()?);
        if d == 0 || d > MAX_ARCHITECTURE_DIM {
            return malformed(format!(
                "architecture dimension {d} outside 1 to {MAX_ARCHITECTURE_DIM}"
            ));
        }
        usize::try_from(d).or_else(|_| malformed("architecture dimension too large"))
    }

    fn architecture(&mut self) -> Result<Architecture, Error> {
        let architecture = match self.u8()? {
            ARCH_LOGISTIC => Architecture::Logistic {
                inputs: self.dim()?,
                classes: self.dim()?,
            },
            ARCH_MLP => Architecture::Mlp {
                inputs: self.dim()?,
                hidden: self.dim()?,
                classes: self.dim()?,
            },
            ARCH_CNN => Architecture::Cnn {
                side: self.dim()?,
                channels: self.dim()?,
                classes: self.dim()?,
            },
            tag => return malformed(format!("architecture tag {tag}")),
        };
        match checked_parameters(&architecture) {
            Some(n) if n <= MAX_PARAMETERS => Ok(architecture),
            _ => malformed(format!(
                "{architecture:?} has more than {MAX_PARAMETERS} parameters"
            )),
        }
    }
}

/// What an update claims about itself: the model it was computed from, the architecture and
/// how many parameters it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpdateInfo {
    /// The global model the client started from.
    pub base: ModelId,
    /// The architecture the client trained.
    pub architecture: Architecture,
    /// The update's length.
    pub parameters: usize,
}

/// The global model as an aggregator knows it: its id and architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Global {
    /// Its id.
    pub id: ModelId,
    /// Its architecture.
    pub architecture: Architecture,
}

impl Global {
    /// The global model with these parameters.
    pub fn of(architecture: Architecture, parameters: &[f32]) -> Result<Self, Error> {
        Ok(Self {
            id: ModelId::of(&architecture, parameters)?,
            architecture,
        })
    }

    /// The compatibility check before merging: the update must have been computed from this
    /// model, for this architecture, with its parameter count.
    pub fn check(&self, update: &UpdateInfo) -> Result<(), Error> {
        if update.architecture != self.architecture {
            return Err(Error::ArchitectureMismatch {
                expected: self.architecture,
                found: update.architecture,
            });
        }
        let expected = self.architecture.num_parameters();
        if update.parameters != expected {
            return Err(Error::ParameterCount {
                expected,
                found: update.parameters,
            });
        }
        if update.base != self.id {
            return Err(Error::BaseMismatch {
                expected: self.id,
                found: update.base,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MLP: Architecture = Architecture::Mlp {
        inputs: 2,
        hidden: 3,
        classes: 4,
    };
    // The same number of parameters (25) as MLP.
    const LOGISTIC: Architecture = Architecture::Logistic {
        inputs: 4,
        classes: 5,
    };

    fn params(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = crate::Rng::new(seed);
        (0..n).map(|_| rng.normal() as f32).collect()
    }

    #[test]
    fn ids_name_exactly_the_architecture_and_the_parameter_bits() {
        let p = params(25, 1);
        let id = ModelId::of(&MLP, &p).unwrap();
        assert_eq!(id, ModelId::of(&MLP, &p.clone()).unwrap());
        assert_ne!(id, ModelId::of(&LOGISTIC, &p).unwrap());
        for i in [0, 12, 24] {
            let mut q = p.clone();
            q[i] = f32::from_bits(q[i].to_bits() ^ 1);
            assert_ne!(id, ModelId::of(&MLP, &q).unwrap(), "{i}");
        }
        // 0.0 and -0.0 differ in their bits, so in their ids.
        let zeros = vec![0.0f32; 25];
        let mut negative = zeros.clone();
        negative[3] = -0.0;
        assert_ne!(
            ModelId::of(&MLP, &zeros).unwrap(),
            ModelId::of(&MLP, &negative).unwrap()
        );
        assert_eq!(
            ModelId::of(&MLP, &p[..24]),
            Err(Error::ParameterCount {
                expected: 25,
                found: 24
            })
        );
        // Pinned: the id of the all-zero MLP; any change of the encoding changes it.
        let mut h = blake3::Hasher::new_derive_key(ID_CONTEXT);
        h.update(&[2]);
        for d in [2u64, 3, 4, 25] {
            h.update(&d.to_le_bytes());
        }
        h.update(&[0; 100]);
        assert_eq!(
            ModelId::of(&MLP, &zeros).unwrap().as_bytes(),
            h.finalize().as_bytes()
        );
        // The id is the real model's: Model's flat parameters hash the same way.
        let model = crate::Model::from_parameters(MLP, &p).unwrap();
        assert_eq!(ModelId::of(&MLP, &model.parameters().unwrap()).unwrap(), id);
    }

    fn lineage() -> Lineage {
        let parent = ModelId::of(&MLP, &params(25, 2)).unwrap();
        Lineage::new(MLP, &params(25, 3), Some(parent), 17, "secagg-fedavg", 10).unwrap()
    }

    #[test]
    fn lineage_records_round_trip_and_verify_their_model() {
        let cnn = Architecture::Cnn {
            side: 8,
            channels: 4,
            classes: 10,
        };
        let initial =
            Lineage::new(cnn, &params(cnn.num_parameters(), 4), None, 0, "init", 0).unwrap();
        for l in [lineage(), initial] {
            let bytes = l.encode().unwrap();
            assert!(bytes.len() <= MAX_LINEAGE_LEN);
            assert_eq!(Lineage::decode(&bytes).unwrap(), l);
            for cut in 0..bytes.len() {
                assert!(Lineage::decode(&bytes[..cut]).is_err(), "cut at {cut}");
            }
            let mut long = bytes.clone();
            long.push(0);
            assert!(matches!(
                Lineage::decode(&long),
                Err(Error::Malformed { .. })
            ));
        }
        let l = lineage();
        l.verify(&params(25, 3)).unwrap();
        assert!(matches!(
            l.verify(&params(25, 4)),
            Err(Error::IdMismatch { .. })
        ));
        assert!(matches!(
            l.verify(&params(24, 3)),
            Err(Error::ParameterCount { .. })
        ));
    }

    #[test]
    fn malformed_lineage_records_are_typed_errors() {
        let good = lineage().encode().unwrap();
        let mut v = good.clone();
        v[0] = 2;
        assert_eq!(Lineage::decode(&v), Err(Error::Version(2)));
        assert_eq!(
            Lineage::decode(&[1; MAX_LINEAGE_LEN + 1]),
            Err(Error::TooLarge {
                len: MAX_LINEAGE_LEN + 1
            })
        );
        // Architecture tag, a zero and a huge dimension, a parent flag of 2.
        let at_arch = 33;
        for (offset, value) in [(at_arch, 9u8), (at_arch + 1, 0), (at_arch + 8, 0x10)] {
            let mut v = good.clone();
            if offset == at_arch + 1 {
                v[offset..offset + 8].copy_from_slice(&0u64.to_le_bytes());
            } else {
                v[offset] = value;
            }
            assert!(
                matches!(Lineage::decode(&v), Err(Error::Malformed { .. })),
                "{offset}"
            );
        }
        let mut v = good.clone();
        v[at_arch + 25] = 2;
        assert!(matches!(Lineage::decode(&v), Err(Error::Malformed { .. })));
        // Aggregator names: empty, not printable, too long; all refused on both sides.
        let name_at = at_arch + 25 + 33 + 8;
        let mut v = good.clone();
        v[name_at + 1] = b' ';
        assert!(matches!(Lineage::decode(&v), Err(Error::Malformed { .. })));
        for name in ["", "fed avg", "é", &"x".repeat(MAX_AGGREGATOR_NAME + 1)] {
            let l = Lineage {
                aggregator: name.to_owned(),
                ..lineage()
            };
            assert!(
                matches!(l.encode(), Err(Error::Malformed { .. })),
                "{name:?}"
            );
        }
        let longest = Lineage {
            aggregator: "x".repeat(MAX_AGGREGATOR_NAME),
            ..lineage()
        };
        assert_eq!(longest.encode().unwrap().len(), MAX_LINEAGE_LEN);
        // Dimensions that are each in range but whose product is too many parameters.
        let huge = Lineage {
            architecture: Architecture::Mlp {
                inputs: 1 << 20,
                hidden: 1 << 20,
                classes: 1,
            },
            ..lineage()
        };
        assert!(matches!(
            Lineage::decode(&huge.encode().unwrap()),
            Err(Error::Malformed { .. })
        ));
    }

    #[test]
    fn merging_checks_base_architecture_and_parameter_count() {
        let p = params(25, 5);
        let global = Global::of(MLP, &p).unwrap();
        let good = UpdateInfo {
            base: global.id,
            architecture: MLP,
            parameters: 25,
        };
        global.check(&good).unwrap();
        let stale = ModelId::of(&MLP, &params(25, 6)).unwrap();
        assert_eq!(
            global.check(&UpdateInfo {
                base: stale,
                ..good
            }),
            Err(Error::BaseMismatch {
                expected: global.id,
                found: stale
            })
        );
        assert_eq!(
            global.check(&UpdateInfo {
                architecture: LOGISTIC,
                ..good
            }),
            Err(Error::ArchitectureMismatch {
                expected: MLP,
                found: LOGISTIC
            })
        );
        assert_eq!(
            global.check(&UpdateInfo {
                parameters: 26,
                ..good
            }),
            Err(Error::ParameterCount {
                expected: 25,
                found: 26
            })
        );
    }

    proptest! {
        /// Arbitrary bytes never panic, and whatever decodes re-encodes to the same bytes.
        #[test]
        fn arbitrary_lineage_bytes_decode_canonically_or_fail(
            bytes in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            if let Ok(l) = Lineage::decode(&bytes) {
                prop_assert_eq!(l.encode().unwrap(), bytes);
            }
        }

        /// A valid record with one byte changed or cut decodes canonically or fails.
        #[test]
        fn mutated_lineage_records_decode_canonically_or_fail(
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
            cut in any::<bool>(),
        ) {
            let mut bytes = lineage().encode().unwrap();
            let i = at.index(bytes.len());
            if cut {
                bytes.truncate(i);
            } else {
                bytes[i] = byte;
            }
            if let Ok(l) = Lineage::decode(&bytes) {
                prop_assert_eq!(l.encode().unwrap(), bytes);
            }
        }
    }
}
