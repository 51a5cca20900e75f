//! The node's agent registry: registrations committed through consensus, and the two request
//! protocols agents use to reach it.
//!
//! An agent sends its signed [`AgentRecord`] to the node it joins through on
//! [`REGISTER_PROTOCOL`]; a validator checks its signature, submits it to consensus and
//! answers once it has executed, with the height. A node that does not vote (a coordinator
//! following the ledger) forwards the record to the primary. Records are self-authenticating
//! (signed by the agent's DID, the newest `issued` wins), so whoever relays one cannot change
//! or roll it back. Every
//! node with a ledger derives the registry from the committed blocks (the newest `issued`
//! record per DID wins) and answers [`LOOKUP_PROTOCOL`] requests and `GET /v1/agents` from it.
//! The registry is rebuilt from the ledger at every start, and follows it by reading blocks
//! from the last height it applied, so a burst of commits cannot make it miss one.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use mesh_agent_runtime::AgentRecord;
use mesh_transport::{InboundRequest, Transport};

use crate::consensus;

/// Where agents register (request: an encoded record; answer: the height, 8 bytes BE).
pub const REGISTER_PROTOCOL: &str = "mesh/agent/register";
/// Where agents look others up (request: a DID; answer: its encoded record).
pub const LOOKUP_PROTOCOL: &str = "mesh/agent/lookup";
/// Most agents one registry holds (registrations beyond it are ignored and logged).
pub const MAX_AGENTS: usize = 100_000;
/// Blocks read per step while catching up with the ledger.
const PAGE: usize = 64;

/// Registrations by DID, derived from the ledger.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    records: RwLock<HashMap<String, AgentRecord>>,
}

impl Registry {
    fn apply(&self, record: AgentRecord) {
        let mut map = self.records.write().unwrap_or_else(|p| p.into_inner());
        let did = record.did.to_string();
        match map.get(&did) {
            Some(old) if old.issued >= record.issued => {}
            Some(_) => {
                map.insert(did, record);
            }
            None if map.len() >= MAX_AGENTS => {
                tracing::warn!(%did, "agent registry full: registration ignored");
            }
            None => {
                tracing::info!(%did, name = %record.name, "agent registered");
                map.insert(did, record);
            }
        }
    }

    pub(crate) fn get(&self, did: &str) -> Option<AgentRecord> {
        let map = self.records.read().unwrap_or_else(|p| p.into_inner());
        map.get(did).cloned()
    }

    pub(crate) fn all(&self) -> Vec<AgentRecord> {
        let map = self.records.read().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<_> = map.values().cloned().collect();
        all.sort_by(|a, b| a.did.cmp(&b.did));
        all
    }

    /// Applies the registrations in one committed block.
    fn apply_block(&self, block: &consensus::CommittedBlock) {
        for r in block.batch.requests() {
            match AgentRecord::from_ledger_payload(&r.payload) {
                None => {}
                Some(Ok(record)) => self.apply(record),
                Some(Err(e)) => {
                    tracing::warn!(height = block.cert.seq, error = %e, "bad agent registration in the ledger")
                }
            }
        }
    }
}

/// Follows the ledger into `registry` until `stop`: reads every block from height 1 on, then
/// each newly executed one.
pub(crate) async fn follow(
    registry: Arc<Registry>,
    handle: consensus::Handle,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut status = handle.watch_status();
    let mut applied = 0u64;
    loop {
        let executed = status.borrow_and_update().executed;
        while applied < executed {
            match handle.blocks(applied + 1, PAGE).await {
                Ok(blocks) if !blocks.is_empty() => {
                    for b in &blocks {
                        registry.apply_block(b);
                        applied = applied.max(b.cert.seq);
                    }
                }
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, from = applied + 1, "cannot read the ledger for the agent registry");
                    break;
                }
            }
        }
        tokio::select! {
            changed = status.changed() => if changed.is_err() { return },
            _ = stop.changed() => return,
        }
    }
}

/// Answers one agent request (spawned per request; never blocks the node loop).
pub(crate) async fn handle(
    request: InboundRequest,
    transport: Transport,
    registry: Arc<Registry>,
    consensus: Option<consensus::Handle>,
) {
    let answer = match request.protocol.as_str() {
        REGISTER_PROTOCOL => register(&request, &transport, &registry, consensus.as_ref()).await,
        LOOKUP_PROTOCOL => match std::str::from_utf8(&request.data) {
            Ok(did) => registry
                .get(did)
                .map(|r| r.to_bytes())
                .ok_or_else(|| format!("no agent {did} is registered")),
            Err(_) => Err("the lookup is not a UTF-8 DID".into()),
        },
        other => Err(format!("unknown agent protocol {other}")),
    };
    if let Err(e) = transport.respond(request.token, answer).await {
        tracing::debug!(error = %e, "cannot answer an agent request");
    }
}

async fn register(
    request: &InboundRequest,
    transport: &Transport,
    registry: &Registry,
    consensus: Option<&consensus::Handle>,
) -> Result<Vec<u8>, String> {
    let record = AgentRecord::from_bytes(&request.data).map_err(|e| e.to_string())?;
    record.verify().map_err(|e| e.to_string())?;
    if let Some(old) = registry.get(record.did.as_str())
        && old == record
    {
        return Ok(0u64.to_be_bytes().to_vec());
    }
    let Some(c) = consensus else {
        return Err("this node follows no ledger: register through a validator".into());
    };
    let status = c.status();
    if !status.voter {
        let primary = consensus::peer_id(&status.primary).map_err(|e| e.to_string())?;
        return transport
            .request(primary, REGISTER_PROTOCOL, request.data.clone())
            .await
            .map_err(|e| format!("forwarded to the primary: {e}"));
    }
    let committed = c
        .submit(record.to_ledger_payload())
        .await
        .map_err(|e| format!("not committed: {e}"))?;
    Ok(committed.seq.to_be_bytes().to_vec())
}
