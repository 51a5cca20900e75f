//! Errors of the memory crate.

use mesh_types::{ErrorKind, HasKind, NodeId};

/// Why a memory operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A vector of the wrong dimension.
    #[error("vector of {found} dimensions, the index holds {expected}")]
    Dimension {
        /// The index's dimension.
        expected: usize,
        /// The vector's.
        found: usize,
    },
    /// A vector with a NaN or infinite component.
    #[error("vector with a non-finite component")]
    NonFinite,
    /// The zero vector (it has no direction to compare by cosine).
    #[error("zero vector")]
    ZeroVector,
    /// The index holds as many vectors as its ids can number.
    #[error("index full")]
    Full,
    /// A setting out of range.
    #[error("invalid setting: {0}")]
    Invalid(String),
    /// A text, name or id that must not be empty was.
    #[error("empty {what}")]
    Empty {
        /// Which input.
        what: &'static str,
    },
    /// A text, name or id longer than its bound.
    #[error("{what} of {len} bytes exceeds the limit of {max}")]
    TooLong {
        /// Which input.
        what: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// More entries (metadata pairs, query words) than allowed.
    #[error("{count} {what} entries exceed the limit of {max}")]
    TooMany {
        /// Which input.
        what: &'static str,
        /// How many were given.
        count: usize,
        /// The bound.
        max: usize,
    },
    /// A name, id or text with a character it may not contain.
    #[error("invalid {what}: {detail}")]
    BadName {
        /// Which input.
        what: &'static str,
        /// Why.
        detail: String,
    },
    /// A knowledge-graph operation named an entity the graph does not hold.
    #[error("unknown entity {id:?}")]
    UnknownEntity {
        /// The entity id.
        id: String,
    },
    /// An operation would exceed one of the memory's bounds (a limit, a depth, a degree,
    /// the number of entities a search may visit).
    #[error("{what} exceeds the bound of {max}")]
    BoundExceeded {
        /// Which bound.
        what: &'static str,
        /// The bound.
        max: u64,
    },
    /// The underlying store failed.
    #[error("storage failed while {op}: {source}")]
    Store {
        /// What the memory was doing.
        op: &'static str,
        /// The store's error.
        #[source]
        source: mesh_store::Error,
    },
    /// A stored record could not be decoded or breaks the memory's invariants.
    #[error("corrupt {what} record at key {key}: {detail}")]
    Corrupt {
        /// Which kind of record.
        what: &'static str,
        /// Its key, escaped.
        key: String,
        /// What was wrong.
        detail: String,
    },
    /// A text to embed that is empty or only whitespace (or only characters the tokenizer
    /// drops).
    #[error("text {index} of the batch is empty")]
    EmptyText {
        /// Its position in the batch.
        index: usize,
    },
    /// A text to embed longer than the limit ([`crate::embed::MAX_TEXT_BYTES`]).
    #[error("text {index} of the batch has {bytes} bytes, over the limit of {limit}")]
    TextTooLong {
        /// Its position in the batch.
        index: usize,
        /// Its length in bytes.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// A model file that is missing, unreadable or malformed.
    #[error("model file {}: {reason}", path.display())]
    Model {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The model's computation failed (a bug, or memory exhausted).
    #[error("embedding computation failed: {0}")]
    Inference(String),
    /// A sync message or delta from a peer that could not be decoded.
    #[error("malformed {what}: {detail}")]
    Malformed {
        /// What was being decoded.
        what: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// A sync delta whose signature does not verify against its writer's key.
    #[error("bad signature on delta {seq} of {writer:?} in namespace {namespace}")]
    BadSignature {
        /// The namespace (`owner/name`).
        namespace: String,
        /// The writer it claims.
        writer: NodeId,
        /// Its sequence number.
        seq: u64,
    },
    /// A sync delta from a writer that is neither the namespace's owner nor granted write
    /// access by it.
    #[error("{writer:?} may not write to namespace {namespace}")]
    Stranger {
        /// The namespace (`owner/name`).
        namespace: String,
        /// The writer.
        writer: NodeId,
    },
    /// A grant (or another owner-only change) signed by someone other than the owner.
    #[error("{writer:?} does not own namespace {namespace}")]
    NotOwner {
        /// The namespace (`owner/name`).
        namespace: String,
        /// Who signed it.
        writer: NodeId,
    },
    /// A delta or digest for a namespace this replica does not subscribe to, or that its
    /// owner does not share with the peer.
    #[error("namespace {namespace} is not shared with {peer:?}")]
    NotShared {
        /// The namespace (`owner/name`).
        namespace: String,
        /// The peer.
        peer: NodeId,
    },
    /// A writer signed two different deltas with the same sequence number; the first one
    /// received is kept.
    #[error("{writer:?} signed two different deltas numbered {seq} in namespace {namespace}")]
    Equivocation {
        /// The namespace (`owner/name`).
        namespace: String,
        /// The writer.
        writer: NodeId,
        /// The sequence number.
        seq: u64,
    },
}

impl HasKind for Error {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Full
            | Self::TextTooLong { .. }
            | Self::TooLong { .. }
            | Self::TooMany { .. }
            | Self::BoundExceeded { .. } => ErrorKind::TooLarge,
            Self::UnknownEntity { .. } => ErrorKind::NotFound,
            Self::Store { source, .. } => source.kind(),
            Self::Corrupt { .. } => ErrorKind::Corrupt,
            Self::Model { .. } => ErrorKind::Corrupt,
            Self::Inference(_) => ErrorKind::Internal,
            Self::Malformed { .. } => ErrorKind::Malformed,
            Self::BadSignature { .. }
            | Self::Stranger { .. }
            | Self::NotOwner { .. }
            | Self::NotShared { .. } => ErrorKind::Unauthorized,
            Self::Equivocation { .. } => ErrorKind::Conflict,
            _ => ErrorKind::InvalidInput,
        }
    }
}

/// Results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
