//! Errors of the node library.

use std::path::PathBuf;

use mesh_types::wire::WireError;
use mesh_types::{ErrorKind, HasKind};

/// Why a driver operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration cannot work.
    #[error("invalid driver configuration: {0}")]
    Config(String),
    /// The store in the data directory could not be opened, read or written.
    #[error("store in {dir}: {source}")]
    Store {
        /// The data directory.
        dir: PathBuf,
        /// The store's complaint.
        #[source]
        source: mesh_store::Error,
    },
    /// The consensus core refused an input or could not start.
    #[error("consensus refused {step}: {source}")]
    Consensus {
        /// What the driver was doing.
        step: &'static str,
        /// The core's complaint.
        #[source]
        source: mesh_consensus::Error,
    },
    /// The replica's storage failed: the driver stopped (fail-stop). Restart it over the same
    /// data directory once the disk is healthy.
    #[error("consensus storage failed while {step}; the replica stopped: {source}")]
    Storage {
        /// What the driver was doing.
        step: &'static str,
        /// The core's complaint (always [`mesh_consensus::Error::Storage`]).
        #[source]
        source: mesh_consensus::Error,
    },
    /// The transport failed.
    #[error("transport failed {what}: {source}")]
    Transport {
        /// What the driver was doing.
        what: &'static str,
        /// The transport's complaint.
        #[source]
        source: mesh_transport::Error,
    },
    /// A bounded queue is full; retry later.
    #[error("{what} is full ({capacity} entries); retry later")]
    Busy {
        /// Which queue.
        what: &'static str,
        /// Its bound.
        capacity: usize,
    },
    /// Bytes from a peer could not be decoded.
    #[error("malformed {what}: {source}")]
    Malformed {
        /// What was being decoded.
        what: &'static str,
        /// The decoder's complaint.
        #[source]
        source: WireError,
    },
    /// A peer answered something this driver does not understand.
    #[error("unexpected {what}: {detail}")]
    Unexpected {
        /// What was being decoded.
        what: &'static str,
        /// Why.
        detail: String,
    },
    /// The driver has stopped (shut down, or failed: its [`Join`](crate::consensus::Join)
    /// says why).
    #[error("the driver has stopped")]
    Stopped,
    /// The driver's thread or runtime could not be started, or its thread panicked.
    #[error("driver thread: {detail}")]
    Thread {
        /// What went wrong.
        detail: String,
    },
}

impl Error {
    pub(crate) fn malformed(what: &'static str) -> impl FnOnce(WireError) -> Self {
        move |source| Self::Malformed { what, source }
    }
}

impl HasKind for Error {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Config(_) => ErrorKind::InvalidInput,
            Self::Store { source, .. } => source.kind(),
            Self::Consensus { source, .. } | Self::Storage { source, .. } => source.kind(),
            Self::Transport { source, .. } => source.kind(),
            Self::Busy { .. } => ErrorKind::Busy,
            Self::Malformed { source, .. } => source.kind(),
            Self::Unexpected { .. } => ErrorKind::Malformed,
            Self::Stopped => ErrorKind::Closed,
            Self::Thread { .. } => ErrorKind::Internal,
        }
    }
}

/// Results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
