//! The node's side of the HTTP API: [`mesh_api::Backend`] over the transport and the
//! consensus driver, and the event stream the node loop feeds.

use std::sync::Arc;

use mesh_api::types::{
    AgentInfo, ConsensusStatus, Counter, Event, Ledger, LedgerBlock, LedgerRequest, NodeStatus,
    Peer, Receipt,
};
use mesh_api::{ApiError, Backend};
use mesh_consensus::RequestKind;
use mesh_transport::{Multiaddr, Transport};
use tokio::sync::{broadcast, watch};

use crate::consensus;
use crate::error::Error;

/// Events buffered per API subscriber before it starts missing some.
pub(crate) const EVENT_CAPACITY: usize = 1024;

/// What the API reads and drives.
pub(crate) struct NodeBackend {
    pub(crate) peer: String,
    pub(crate) did: String,
    pub(crate) transport: Transport,
    pub(crate) consensus: Option<consensus::Handle>,
    pub(crate) listen: watch::Receiver<Vec<Multiaddr>>,
    pub(crate) events: broadcast::Sender<Event>,
    pub(crate) started: std::time::Instant,
    pub(crate) registry: Arc<super::agents::Registry>,
    pub(crate) membership: Arc<super::membership::Shared>,
    #[cfg(feature = "learning")]
    pub(crate) learning: Option<Arc<super::learning::Shared>>,
}

impl NodeBackend {
    fn consensus(&self) -> Result<&consensus::Handle, ApiError> {
        self.consensus.as_ref().ok_or(ApiError::NotAValidator)
    }
}

/// The API's view of a driver error.
fn api_error(e: Error) -> ApiError {
    match e {
        Error::Busy { .. } => ApiError::Busy(e.to_string()),
        Error::Stopped => ApiError::Unavailable("the consensus driver has stopped".into()),
        e => ApiError::Internal(e.to_string()),
    }
}

fn transport_error(e: mesh_transport::Error) -> ApiError {
    ApiError::Unavailable(format!("the transport: {e}"))
}

fn consensus_status(s: &consensus::Status) -> ConsensusStatus {
    let c = &s.driver;
    let counters = [
        ("refused_messages", c.refused_messages),
        ("unknown_peers", c.unknown_peers),
        ("refused_submissions", c.refused_submissions),
        ("submissions", c.submissions),
        ("relayed", c.relayed),
        ("dropped_sends", c.dropped_sends),
        ("failed_sends", c.failed_sends),
    ];
    ConsensusStatus {
        node: s.node.to_string(),
        view: s.view,
        changing_view: s.changing_view,
        primary: s.primary.to_string(),
        height: s.executed,
        head: s.head.to_string(),
        low_watermark: s.low_watermark,
        epoch: s.epoch,
        voter: s.voter,
        connected: s.connected,
        waiting: s.waiting,
        counters: counters
            .into_iter()
            .map(|(name, value)| Counter {
                name: name.into(),
                value,
            })
            .collect(),
    }
}

fn ledger_block(b: &consensus::CommittedBlock) -> LedgerBlock {
    LedgerBlock {
        height: b.cert.seq,
        view: b.cert.view,
        digest: b.cert.digest.to_string(),
        prev: b.prev.to_string(),
        signers: b.cert.signers.iter().collect(),
        requests: b
            .batch
            .requests()
            .iter()
            .map(|r| LedgerRequest {
                client: r.client.to_string(),
                id: r.id,
                kind: match r.kind {
                    RequestKind::App => "app",
                    RequestKind::Change => "change",
                }
                .into(),
                hex: hex::encode(&r.payload),
                text: std::str::from_utf8(&r.payload).ok().map(str::to_owned),
            })
            .collect(),
    }
}

impl Backend for NodeBackend {
    async fn status(&self) -> Result<NodeStatus, ApiError> {
        let peers = self
            .transport
            .connected_peers()
            .await
            .map_err(transport_error)?;
        Ok(NodeStatus {
            peer_id: self.peer.clone(),
            did: self.did.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            uptime_s: self.started.elapsed().as_secs(),
            listen: self
                .listen
                .borrow()
                .iter()
                .map(ToString::to_string)
                .collect(),
            peers: peers.len(),
            consensus: self
                .consensus
                .as_ref()
                .map(|c| consensus_status(&c.status())),
        })
    }

    async fn peers(&self) -> Result<Vec<Peer>, ApiError> {
        peers(&self.transport).await
    }

    async fn submit(&self, payload: Vec<u8>) -> Result<Receipt, ApiError> {
        let c = self.consensus()?.submit(payload).await.map_err(api_error)?;
        Ok(Receipt {
            client: c.client.to_string(),
            id: c.id,
            height: c.seq,
            view: c.view,
        })
    }

    async fn ledger(&self, from: u64, limit: usize) -> Result<Ledger, ApiError> {
        let handle = self.consensus()?;
        let height = handle.status().executed;
        let blocks = if from > height {
            Vec::new()
        } else {
            handle.blocks(from, limit).await.map_err(api_error)?
        };
        Ok(Ledger {
            blocks: blocks.iter().map(ledger_block).collect(),
            height,
        })
    }

    async fn members(&self) -> Result<Vec<mesh_api::types::Member>, ApiError> {
        let view = self
            .membership
            .members
            .read()
            .unwrap_or_else(|p| p.into_inner());
        Ok(view
            .iter()
            .map(|(peer, v)| mesh_api::types::Member {
                peer_id: peer.clone(),
                state: v.state.to_owned(),
                incarnation: v.incarnation,
            })
            .collect())
    }

    #[cfg(feature = "learning")]
    async fn start_run(
        &self,
        run: mesh_api::types::StartRun,
    ) -> Result<mesh_api::types::RunInfo, ApiError> {
        let shared = self.learning.as_ref().ok_or(ApiError::NotAValidator)?;
        super::learning::start(shared, self.consensus()?, run).await
    }

    #[cfg(feature = "learning")]
    async fn runs(&self) -> Result<Vec<mesh_api::types::RunInfo>, ApiError> {
        let shared = self.learning.as_ref().ok_or(ApiError::NotAValidator)?;
        Ok(shared.runs())
    }

    async fn agents(&self) -> Result<Vec<AgentInfo>, ApiError> {
        Ok(self
            .registry
            .all()
            .into_iter()
            .map(|r| AgentInfo {
                did: r.did.to_string(),
                name: r.name,
                capabilities: r.capabilities,
                addrs: r.addrs,
                node: r.node,
                issued_ms: r.issued.0,
            })
            .collect())
    }

    fn events(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    async fn metrics(&self) -> Result<String, ApiError> {
        self.transport.metrics_text().await.map_err(transport_error)
    }
}

/// The peers `transport` is connected to now.
pub(crate) async fn peers(transport: &Transport) -> Result<Vec<Peer>, ApiError> {
    let peers = transport.connected_peers().await.map_err(transport_error)?;
    Ok(peers
        .into_iter()
        .map(|p| Peer {
            peer_id: p.to_string(),
        })
        .collect())
}

/// Starts the API server for `backend` on `addr`.
pub(crate) fn serve<B: Backend>(
    addr: std::net::SocketAddr,
    token: Option<String>,
    backend: Arc<B>,
) -> crate::Result<mesh_api::Server> {
    let listener = mesh_api::bind(addr).map_err(|e| match e {
        mesh_api::BindError::InUse { addr } => Error::AddressInUse {
            addr: format!("{addr} (the HTTP API)"),
        },
        mesh_api::BindError::Other { addr, source } => Error::Config(format!(
            "cannot listen for the HTTP API on {addr}: {source}"
        )),
    })?;
    let config = mesh_api::ServerConfig {
        token,
        ..mesh_api::ServerConfig::default()
    };
    mesh_api::Server::spawn(listener, backend, config)
        .map_err(|e| Error::Config(format!("cannot serve the HTTP API on {addr}: {e}")))
}
