//! The JSON bodies of the API, shared by the server, the client and the node.
//!
//! Binary values (digests, payloads, node ids) travel as lowercase hex. Every type here is
//! what the [OpenAPI document](crate::openapi) describes.

use serde::{Deserialize, Serialize};

/// `GET /v1/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The node's libp2p peer id.
    pub peer_id: String,
    /// The node's DID (`did:key:...`).
    pub did: String,
    /// The crate version of the node.
    pub version: String,
    /// Seconds since the node started.
    pub uptime_s: u64,
    /// Multiaddresses the node listens on, each ending in `/p2p/<peer id>`.
    pub listen: Vec<String>,
    /// Peers connected now.
    pub peers: usize,
    /// The consensus replica, if this node is a validator.
    pub consensus: Option<ConsensusStatus>,
}

/// The consensus part of [`NodeStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsensusStatus {
    /// This validator's node id (hex of its Ed25519 key).
    pub node: String,
    /// The view (or the view being changed to).
    pub view: u64,
    /// Whether a view change is under way.
    pub changing_view: bool,
    /// The primary of `view` (node id).
    pub primary: String,
    /// The height of the last executed block.
    pub height: u64,
    /// The chain hash after it (hex).
    pub head: String,
    /// The last stable checkpoint.
    pub low_watermark: u64,
    /// The validator set's epoch.
    pub epoch: u64,
    /// Whether this node votes in the set in force.
    pub voter: bool,
    /// Validators connected (not counting this one).
    pub connected: usize,
    /// Clients waiting for an outcome.
    pub waiting: usize,
    /// Counters, by name (messages refused, requests accepted, sends dropped, ...).
    pub counters: Vec<Counter>,
}

/// A named counter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counter {
    /// Its name (`snake_case`; exported to `/metrics` as `mesh_consensus_<name>_total`).
    pub name: String,
    /// Its value.
    pub value: u64,
}

/// One entry of `GET /v1/peers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    /// The peer's libp2p peer id.
    pub peer_id: String,
}

/// `POST /v1/consensus/requests`: exactly one of the two fields.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitRequest {
    /// The payload as UTF-8 text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The payload as hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hex: Option<String>,
}

/// The answer to [`SubmitRequest`]: where the request executed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The client the request was ordered under (node id, hex).
    pub client: String,
    /// The request's id (per client).
    pub id: u64,
    /// The height of the block it executed in.
    pub height: u64,
    /// The view of that block's commit certificate.
    pub view: u64,
}

/// `GET /v1/ledger`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    /// Blocks in height order, from the `from` asked for.
    pub blocks: Vec<LedgerBlock>,
    /// The height of the last executed block at the time of the answer.
    pub height: u64,
}

/// A committed block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerBlock {
    /// Its height.
    pub height: u64,
    /// The view of its commit certificate.
    pub view: u64,
    /// The batch digest (hex).
    pub digest: String,
    /// The hash of the block before it (hex).
    pub prev: String,
    /// Indices (in the validator set) of the certificate's signers.
    pub signers: Vec<usize>,
    /// Its requests, in order.
    pub requests: Vec<LedgerRequest>,
}

/// A request in a [`LedgerBlock`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerRequest {
    /// The client (node id, hex).
    pub client: String,
    /// The client's id for it.
    pub id: u64,
    /// `app` or `change` (a reconfiguration).
    pub kind: String,
    /// The payload (hex).
    pub hex: String,
    /// The payload as text, when it is UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// One entry of `GET /v1/members`: a peer in the node's membership view (SWIM).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Its peer id.
    pub peer_id: String,
    /// `alive`, `suspected`, `dead` or `left`.
    pub state: String,
    /// Its incarnation (raised by the member to refute a suspicion, and at every restart).
    pub incarnation: u64,
}

/// One entry of `GET /v1/agents`: a registration committed through consensus.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentInfo {
    /// The agent's DID.
    pub did: String,
    /// Its name.
    pub name: String,
    /// What it offers.
    pub capabilities: Vec<String>,
    /// Where it listens (multiaddresses ending in its peer id).
    pub addrs: Vec<String>,
    /// The peer id of the node it joined through.
    pub node: String,
    /// When it signed the registration (ms since the Unix epoch).
    pub issued_ms: u64,
}

/// `POST /v1/messages` (served by an agent): an end-to-end encrypted message to another
/// agent.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendMessage {
    /// The recipient's DID.
    pub to: String,
    /// The message, as UTF-8 text.
    pub text: String,
    /// The message type (default `chat`; `[a-z0-9._/-]`, 1 to 64 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// The answer to [`SendMessage`]: the message is stored and will be delivered (retried
/// until the recipient acknowledges it or its ttl runs out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageReceipt {
    /// The envelope id (hex).
    pub id: String,
    /// Its position in the sender's outbox.
    pub seq: u64,
}

/// A message in `GET /v1/messages`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageView {
    /// Position in the inbox (or outbox).
    pub seq: u64,
    /// The envelope id (hex).
    pub id: String,
    /// The other agent's DID (sender of a received message, recipient of a sent one).
    pub peer: String,
    /// The message type.
    pub kind: String,
    /// When the sender signed it (ms since the Unix epoch).
    pub timestamp_ms: u64,
    /// The body as text, when it is UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The body (hex).
    pub hex: String,
}

/// `GET /v1/messages`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Messages {
    /// Messages in order from the `from` asked for.
    pub messages: Vec<MessageView>,
    /// How many messages the box holds (the next position).
    pub total: u64,
}

/// Which box `GET /v1/messages` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageBox {
    /// Received messages.
    #[default]
    Inbox,
    /// Sent messages.
    Outbox,
}

/// `POST /v1/learning/runs`: a federated run over the validators, on the digits data set.
/// Every field is optional.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartRun {
    /// `logistic`, `mlp` (default) or `cnn`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Rounds (global models) to train, 1..=1000; default 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rounds: Option<u64>,
    /// Local epochs per round, 1..=100; default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epochs: Option<u32>,
    /// The local SGD learning rate; default 0.1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learning_rate: Option<f64>,
    /// Top-k compression of the updates: the fraction of coordinates sent (with error
    /// feedback), in (0, 1]; default none (dense updates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<f64>,
    /// The seed of the initial model and of the data partition; default from the clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Seconds the aggregator waits for updates (and then for a commit) before retrying a
    /// round, 1..=3600; default 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round_timeout_s: Option<u64>,
}

/// One finished round of a federated run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundInfo {
    /// The round (1 for the first model after the initial one).
    pub round: u64,
    /// The adopted global model's content hash (hex).
    pub model: String,
    /// The mean held-out accuracy the accepting validators measured.
    pub accuracy: f64,
    /// The ledger height of the committed model record.
    pub height: u64,
}

/// A federated run as a node sees it (`GET /v1/learning/runs[/{id}]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    /// The run id: the hash of its plan (hex).
    pub id: String,
    /// The model.
    pub model: String,
    /// Rounds planned.
    pub rounds: u64,
    /// This node's roles: `trainer`, `validator`, `aggregator`.
    pub roles: Vec<String>,
    /// The ledger height of the committed run record.
    pub height: u64,
    /// `running`, `finished` or `failed`.
    pub state: String,
    /// Why it failed here, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The rounds finished so far.
    pub finished_rounds: Vec<RoundInfo>,
}

/// An event on the `GET /v1/events` WebSocket: one JSON text message each, tagged by
/// `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A peer connected.
    PeerUp {
        /// Its peer id.
        peer_id: String,
    },
    /// A peer's last connection closed.
    PeerDown {
        /// Its peer id.
        peer_id: String,
    },
    /// A block committed and executed here.
    BlockCommitted {
        /// Its height.
        height: u64,
        /// The view of its certificate.
        view: u64,
        /// Requests in it.
        requests: usize,
        /// Requests that executed (the others repeated earlier ones).
        executed: usize,
    },
    /// A member's state changed in the node's membership view.
    Member {
        /// Its peer id.
        peer_id: String,
        /// `alive`, `suspected`, `dead` or `left`.
        state: String,
        /// The incarnation the change is about.
        incarnation: u64,
    },
    /// An alert rule of the node fired or resolved.
    Alert {
        /// The rule, such as `peer-down`.
        name: String,
        /// `fired` or `resolved`.
        state: String,
        /// The watched gauge's value at that moment.
        value: f64,
    },
    /// An agent received (decrypted and verified) a message.
    MessageReceived {
        /// The envelope id (hex).
        id: String,
        /// The sender's DID.
        from: String,
        /// The message type.
        kind: String,
        /// Its position in the inbox.
        seq: u64,
    },
    /// A federated round finished here: its model was committed and adopted.
    RoundFinished {
        /// The run id (hex).
        run: String,
        /// The round.
        round: u64,
        /// The adopted model's content hash (hex).
        model: String,
        /// The mean held-out accuracy of the accepting validators.
        accuracy: f64,
        /// The ledger height of the model record.
        height: u64,
    },
    /// This subscriber fell behind and missed `missed` events (the stream goes on).
    Lagged {
        /// How many.
        missed: u64,
    },
}

/// The body of every error answer (HTTP 4xx and 5xx).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// A stable machine-readable code (`bad_request`, `not_found`, `not_a_validator`,
    /// `busy`, `unauthorized`, `payload_too_large`, `unavailable`, `internal`, ...).
    pub code: String,
    /// A sentence for people.
    pub message: String,
}
