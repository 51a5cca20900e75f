//! The crypto error type.

use mesh_types::{ErrorKind, HasKind};

/// A crypto result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a cryptographic operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Key, signature or message bytes have the wrong length.
    #[error("{what} must be {expected} bytes, got {got}")]
    Length {
        /// What was being parsed.
        what: &'static str,
        /// Expected length.
        expected: usize,
        /// Actual length.
        got: usize,
    },
    /// Bytes of the right length do not encode a valid key or signature.
    #[error("invalid {what}: {detail}")]
    Invalid {
        /// What was being parsed.
        what: &'static str,
        /// Why it is invalid.
        detail: &'static str,
    },
    /// A signature did not verify.
    #[error("{what} signature verification failed")]
    Verify {
        /// Which signature.
        what: &'static str,
    },
    /// A batch of signatures did not verify; `index` is the first bad one when it was located.
    #[error("batch verification failed (first bad item: {index:?})")]
    BatchVerify {
        /// Index of the first invalid item, if it was located.
        index: Option<usize>,
    },
    /// Authenticated decryption failed: wrong key, or tampered data.
    #[error("decryption failed: wrong key or tampered {what}")]
    Decrypt {
        /// What was being decrypted.
        what: &'static str,
    },
    /// A Diffie-Hellman result was all zeros (a low-order public key).
    #[error("key agreement produced a non-contributory result (low-order public key)")]
    NonContributory,
    /// The passphrase does not open the sealed data (or the data was altered).
    #[error("wrong passphrase, or the sealed key data is damaged")]
    WrongPassphrase,
    /// A sealed file or encoded message is malformed.
    #[error("malformed {what}: {detail}")]
    Malformed {
        /// What was being decoded.
        what: &'static str,
        /// What is wrong with it.
        detail: String,
    },
    /// An input exceeds a hard limit.
    #[error("{what} of {len} exceeds the limit of {max}")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Its size.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// The format version is not supported by this build.
    #[error("unsupported {what} version {found}")]
    Version {
        /// What was versioned.
        what: &'static str,
        /// The version found.
        found: u32,
    },
    /// A Noise handshake or transport step failed.
    #[error("noise: {detail}")]
    Noise {
        /// The failing step.
        detail: String,
    },
    /// A ratchet session could not decrypt: the message is a replay, too old, or from a
    /// chain the session has dropped.
    #[error("ratchet: message {index} was already received or its key was discarded")]
    Replay {
        /// The message's index in its chain.
        index: u64,
    },
    /// A ratchet session operation failed.
    #[error("ratchet: {detail}")]
    Session {
        /// What failed.
        detail: String,
    },
    /// A derivation path or parameter is invalid.
    #[error("invalid derivation: {detail}")]
    Derivation {
        /// What is wrong.
        detail: String,
    },
    /// The operating system's random number generator failed.
    #[error("the system random number generator failed")]
    Rng,
}

impl HasKind for Error {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Length { .. } | Self::Invalid { .. } | Self::Malformed { .. } => {
                ErrorKind::Malformed
            }
            Self::Version { .. } => ErrorKind::Malformed,
            Self::Verify { .. }
            | Self::BatchVerify { .. }
            | Self::Decrypt { .. }
            | Self::WrongPassphrase
            | Self::Replay { .. } => ErrorKind::Unauthorized,
            Self::NonContributory => ErrorKind::Unauthorized,
            Self::TooLarge { .. } => ErrorKind::TooLarge,
            Self::Noise { .. } | Self::Session { .. } => ErrorKind::Unauthorized,
            Self::Derivation { .. } => ErrorKind::InvalidInput,
            Self::Rng => ErrorKind::Internal,
        }
    }
}

pub(crate) fn array<const N: usize>(what: &'static str, bytes: &[u8]) -> Result<[u8; N]> {
    <[u8; N]>::try_from(bytes).map_err(|_| Error::Length {
        what,
        expected: N,
        got: bytes.len(),
    })
}
