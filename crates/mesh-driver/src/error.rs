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
    /// A setting has a value that cannot work (from the file, the environment or a flag).
    #[error("invalid setting `{key}` (from {origin}): {detail}")]
    Setting {
        /// The setting's name (`listen`, `mdns`, ...).
        key: &'static str,
        /// Where the value came from (a file, an environment variable, a flag).
        origin: String,
        /// Why it cannot work.
        detail: String,
    },
    /// The configuration file cannot be read, is not valid TOML, or names an unknown key.
    #[error("configuration file {path}: {detail}")]
    ConfigFile {
        /// The file.
        path: PathBuf,
        /// What is wrong (for an unknown key, the key).
        detail: String,
    },
    /// The data directory cannot be created, read or written.
    #[error("data directory {path}: cannot {op}: {detail}")]
    DataDir {
        /// The directory (or the file in it).
        path: PathBuf,
        /// What the node was doing.
        op: &'static str,
        /// Why it failed.
        detail: String,
    },
    /// The data directory has no identity.
    #[error("no identity at {path}: create one with `mesh-node init`")]
    NoIdentity {
        /// Where the identity file was looked for.
        path: PathBuf,
    },
    /// `init` found an identity already there and left it alone.
    #[error("an identity exists already at {path}; refusing to overwrite it")]
    IdentityExists {
        /// The identity file.
        path: PathBuf,
    },
    /// No passphrase for the identity: neither the environment variable nor the key file.
    #[error("no passphrase for {path}: set {var} or put it in {key_file} (mode 0600)")]
    NoPassphrase {
        /// The identity file.
        path: PathBuf,
        /// The environment variable consulted.
        var: &'static str,
        /// The key file consulted.
        key_file: PathBuf,
    },
    /// The passphrase does not open the identity.
    #[error("wrong passphrase for {path}")]
    WrongPassphrase {
        /// The identity file.
        path: PathBuf,
    },
    /// The identity (or its key file) could not be created, read or checked.
    #[error("identity {path}: {source}")]
    Identity {
        /// The identity file.
        path: PathBuf,
        /// The identity library's complaint.
        #[source]
        source: mesh_identity::Error,
    },
    /// A genesis file or a node's public information is malformed or inconsistent.
    #[error("genesis {path}: {detail}")]
    Genesis {
        /// The file (or the node's data directory).
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The genesis names this node with keys other than its own.
    #[error("genesis {path} does not match this node ({did}): {detail}")]
    GenesisMismatch {
        /// The genesis file.
        path: PathBuf,
        /// This node's DID.
        did: String,
        /// What differs.
        detail: String,
    },
    /// Agent messaging refused or failed.
    #[error("agent {what}: {source}")]
    Agent {
        /// What the agent was doing.
        what: &'static str,
        /// The mailbox's complaint.
        #[source]
        source: mesh_agent_runtime::Error,
    },
    /// A listen address is taken by another socket.
    #[error("cannot listen on {addr}: the port is in use (is another node running?)")]
    AddressInUse {
        /// The address.
        addr: String,
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
            Self::Setting { .. } | Self::ConfigFile { .. } => ErrorKind::InvalidInput,
            Self::DataDir { .. } => ErrorKind::Io,
            Self::NoIdentity { .. } => ErrorKind::NotFound,
            Self::IdentityExists { .. } => ErrorKind::Conflict,
            Self::NoPassphrase { .. } => ErrorKind::InvalidInput,
            Self::WrongPassphrase { .. } => ErrorKind::Unauthorized,
            Self::Identity { source, .. } => source.kind(),
            Self::Genesis { .. } | Self::GenesisMismatch { .. } => ErrorKind::InvalidInput,
            Self::AddressInUse { .. } => ErrorKind::Io,
            Self::Agent { source, .. } => source.kind(),
        }
    }
}

/// Results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
