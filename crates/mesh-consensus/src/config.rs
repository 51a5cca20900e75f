//! Replica configuration.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::message::Limits;

/// How client requests are authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RequestAuth {
    /// Requests are opaque; the driver sets `client` to the peer whose authenticated
    /// connection submitted them (as HotStuff and Narwhal do).
    #[default]
    Connection,
    /// Every request carries the client's Ed25519 signature; the primary and every replica
    /// batch-verify the signatures of each block before voting for it.
    Signed,
}

/// Configuration of a [`Replica`](crate::Replica). All replicas of a validator set must agree
/// on `checkpoint_interval`, `window`, `admission` (all three recorded in the ledger's
/// genesis, which a replica checks), `request_auth` and `limits`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// A checkpoint is taken every this many blocks (PBFT's K).
    pub checkpoint_interval: u64,
    /// Width of the watermark window: the primary proposes at most this far above the last
    /// stable checkpoint. A multiple of `checkpoint_interval`, at least twice it.
    pub window: u64,
    /// Most blocks proposed and not yet executed at once (the pipeline depth). Deeper
    /// pipelines hide network latency but, when each step is bound by CPU and fsync (four
    /// processes on one machine), split the load into many small blocks: measured with
    /// `cargo bench -p mesh-driver`, depth 8 committed 2.1k requests/s, depth 2 21.9k and
    /// depth 1 22.8k.
    pub max_inflight: u64,
    /// With a block already proposed and not executed, the primary proposes another only once
    /// this many requests wait (fewer wait for the open block to execute, and then go
    /// together). 1 pipelines every request at once.
    pub min_pipelined_batch: usize,
    /// Most requests waiting at one replica (its own clients' plus, at the primary, forwarded
    /// ones); beyond it [`Replica::handle_request`](crate::Replica::handle_request) answers
    /// busy.
    pub max_pending: usize,
    /// Most distinct clients remembered for deduplication; the least recently active one is
    /// forgotten beyond it.
    pub max_clients: usize,
    /// Requests remembered per client for deduplication (clients must number their requests
    /// increasingly; ids below the window count as executed).
    pub client_window: usize,
    /// How long a request or an open block may wait before this replica suspects the primary
    /// and asks for a view change.
    pub request_timeout: Duration,
    /// How long a view change may take before the next one is tried; doubles with each
    /// consecutive failure (up to 64 times).
    pub view_change_timeout: Duration,
    /// How often a stalled replica re-sends its latest votes and asks for what it misses.
    pub retransmit_interval: Duration,
    /// How long requests submitted at a backup may wait to be forwarded to the primary
    /// together (zero: each at once). Bundling saves the primary a message, a decode and a
    /// wake-up per request under load, for at most this much latency.
    pub forward_delay: Duration,
    /// Messages for views this replica has not entered yet that are kept for later.
    pub max_future_messages: usize,
    /// How requests are authenticated.
    pub request_auth: RequestAuth,
    /// Decoder bounds.
    pub limits: Limits,
    /// The admission puzzle at genesis (recorded in the ledger's genesis; later changed only
    /// by committed reconfiguration). Its `epoch` field is ignored.
    pub admission: crate::admission::Puzzle,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            checkpoint_interval: 16,
            window: 64,
            max_inflight: 2,
            min_pipelined_batch: 1_024,
            max_pending: 200_000,
            max_clients: 1_000_000,
            client_window: 1_024,
            request_timeout: Duration::from_secs(2),
            view_change_timeout: Duration::from_secs(2),
            retransmit_interval: Duration::from_millis(250),
            forward_delay: Duration::from_millis(1),
            max_future_messages: 4_096,
            request_auth: RequestAuth::Connection,
            limits: Limits::default(),
            // About 85 core-minutes to mint on average, 78 ms to check (see the crate README).
            admission: crate::admission::Puzzle {
                epoch: 0,
                difficulty: 16,
                memory_kib: 64 * 1024,
                passes: 1,
            },
        }
    }
}

impl Config {
    /// Checks the relations between the fields.
    pub fn validate(&self) -> Result<()> {
        let k = self.checkpoint_interval;
        if k == 0 || self.window < 2 * k || !self.window.is_multiple_of(k) {
            return Err(Error::Config(format!(
                "window ({}) must be a multiple of checkpoint_interval ({k}), at least twice it",
                self.window
            )));
        }
        if self.window as usize > self.limits.max_prepared {
            return Err(Error::Config(format!(
                "window ({}) above limits.max_prepared ({})",
                self.window, self.limits.max_prepared
            )));
        }
        if self.max_inflight == 0 || self.max_inflight > self.window {
            return Err(Error::Config(format!(
                "max_inflight ({}) must be 1..=window",
                self.max_inflight
            )));
        }
        if self.max_pending == 0
            || self.max_clients == 0
            || self.client_window == 0
            || self.min_pipelined_batch == 0
        {
            return Err(Error::Config("queue bounds must be positive".into()));
        }
        if self.request_timeout.is_zero()
            || self.view_change_timeout.is_zero()
            || self.retransmit_interval.is_zero()
        {
            return Err(Error::Config("timeouts must be positive".into()));
        }
        Ok(())
    }
}
