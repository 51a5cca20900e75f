//! The driver of the delivery core: sends what the [`Outbox`] says is due over the
//! [`Transport`], and turns inbound deliveries into exactly-once messages for the application.
//!
//! Sending: [`Messenger::send`] persists the message and returns; a background task delivers
//! it on the `mesh/deliver` protocol, retrying with backoff until the receiver acknowledges it
//! or its ttl expires, across restarts of either side.
//!
//! Receiving: pass every [`Event::Request`](crate::Event::Request) on [`DELIVER_PROTOCOL`] to
//! [`Messenger::handle_request`]. A new message comes back as [`Delivered`]; process it, then
//! call [`Messenger::ack`]. Only then is the sender told, and the id recorded as seen, so a
//! crash before the acknowledgement means a redelivery, never a loss. Duplicates are
//! acknowledged without being delivered again.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use mesh_store::Kv;
use mesh_types::wire::{self, Reader};
use mesh_types::{MessageId, Timestamp};
use tokio::sync::{Notify, Semaphore};

use crate::PeerId;
use crate::error::{Error, Result};
use crate::node::{InboundRequest, Transport};
use crate::outbox::{Outbox, OutboxConfig, Outgoing, Seen};

/// The application protocol deliveries travel on.
pub const DELIVER_PROTOCOL: &str = "mesh/deliver";
/// Deliveries in flight at once.
pub const MAX_IN_FLIGHT: usize = 64;

/// A message delivered to this node, to process and then [`Messenger::ack`].
#[derive(Debug)]
pub struct Delivered {
    /// The sender.
    pub from: PeerId,
    /// The message id.
    pub id: MessageId,
    /// The application protocol it is for.
    pub protocol: String,
    /// The payload.
    pub payload: Vec<u8>,
    expires: Timestamp,
    token: u64,
}

fn encode(m: &Outgoing) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + m.payload.len());
    out.extend_from_slice(m.id.as_bytes());
    wire::put_varint(&mut out, m.expires.0);
    wire::put_len_prefixed(&mut out, m.protocol.as_bytes());
    out.extend_from_slice(&m.payload);
    out
}

fn decode(bytes: &[u8]) -> Option<(MessageId, Timestamp, String, Vec<u8>)> {
    let mut r = Reader::new(bytes);
    let id = MessageId(r.array::<16>().ok()?);
    let expires = Timestamp(r.varint().ok()?);
    let protocol = std::str::from_utf8(r.len_prefixed("protocol", 64).ok()?)
        .ok()?
        .to_owned();
    let payload = r.bytes(r.remaining()).ok()?.to_vec();
    Some((id, expires, protocol, payload))
}

#[allow(clippy::disallowed_methods)] // the driver is where the wall clock is read
fn now() -> Timestamp {
    Timestamp::from_system_time(std::time::SystemTime::now())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct Shared<K: Kv> {
    transport: Transport,
    outbox: Mutex<Outbox<K>>,
    seen: Mutex<Seen<K>>,
    processing: Mutex<HashSet<MessageId>>,
    wake: Notify,
    stop: Notify,
}

/// Reliable, persistent, exactly-once messaging over a [`Transport`].
pub struct Messenger<K: Kv + 'static> {
    shared: Arc<Shared<K>>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl<K: Kv + 'static> std::fmt::Debug for Messenger<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Messenger(..)")
    }
}

impl<K: Kv + 'static> Messenger<K> {
    /// Opens the outbox (`outbox_kv`) and the seen-id record (`seen_kv`) and starts delivering
    /// what is waiting. Must be called inside a tokio runtime.
    pub fn spawn(
        transport: Transport,
        outbox_kv: K,
        seen_kv: K,
        config: OutboxConfig,
    ) -> Result<Self> {
        let now = now();
        let shared = Arc::new(Shared {
            transport,
            outbox: Mutex::new(Outbox::open(outbox_kv, config, now)?),
            seen: Mutex::new(Seen::open(seen_kv, 1_000_000, now)?),
            processing: Mutex::new(HashSet::new()),
            wake: Notify::new(),
            stop: Notify::new(),
        });
        let task = Mutex::new(Some(tokio::spawn(run(shared.clone()))));
        Ok(Self { shared, task })
    }

    /// Queues `payload` for `peer` on application protocol `protocol`, deliverable for `ttl`.
    /// Durable when it returns.
    pub fn send(
        &self,
        id: MessageId,
        peer: PeerId,
        protocol: &str,
        payload: Vec<u8>,
        ttl: Duration,
    ) -> Result<()> {
        let now = now();
        let message = Outgoing {
            id,
            peer: peer.to_bytes(),
            protocol: protocol.to_owned(),
            payload,
            expires: now.saturating_add(ttl),
        };
        lock(&self.shared.outbox).enqueue(message, now)?;
        self.shared.wake.notify_one();
        Ok(())
    }

    /// Messages still waiting for an acknowledgement.
    pub fn pending(&self) -> usize {
        lock(&self.shared.outbox).len()
    }

    /// `peer` connected: retry its messages now rather than at their backoff time.
    pub fn peer_connected(&self, peer: &PeerId) {
        lock(&self.shared.outbox).peer_available(&peer.to_bytes(), now());
        self.shared.wake.notify_one();
    }

    /// Handles an inbound request on [`DELIVER_PROTOCOL`]: a new message is returned for
    /// processing; a duplicate or malformed one is answered here and `None` returned.
    pub async fn handle_request(&self, request: InboundRequest) -> Result<Option<Delivered>> {
        let t = &self.shared.transport;
        let Some((id, expires, protocol, payload)) = decode(&request.data) else {
            t.respond(request.token, Err("malformed delivery".into()))
                .await?;
            return Ok(None);
        };
        let duplicate = lock(&self.shared.seen).contains(&id);
        if duplicate {
            t.respond(request.token, Ok(Vec::new())).await?;
            return Ok(None);
        }
        if !lock(&self.shared.processing).insert(id) {
            // Being processed from an earlier attempt: the sender will retry.
            t.respond(
                request.token,
                Err("busy: still processing this message".into()),
            )
            .await?;
            return Ok(None);
        }
        Ok(Some(Delivered {
            from: request.peer,
            id,
            protocol,
            payload,
            expires,
            token: request.token,
        }))
    }

    /// Acknowledges a processed message: records it as seen (durably), then tells the sender.
    pub async fn ack(&self, delivered: Delivered) -> Result<()> {
        lock(&self.shared.seen).insert(delivered.id, delivered.expires)?;
        lock(&self.shared.processing).remove(&delivered.id);
        self.shared
            .transport
            .respond(delivered.token, Ok(Vec::new()))
            .await
    }

    /// Stops delivering (what is waiting stays in the outbox for the next start).
    pub async fn shutdown(self) {
        self.close().await;
    }

    /// Stops delivering, like [`Self::shutdown`], through a shared reference (for a
    /// messenger kept in an `Arc`); later calls return at once. The stores are released when
    /// the last reference is dropped.
    pub async fn close(&self) {
        let task = lock(&self.task).take();
        if let Some(task) = task {
            self.shared.stop.notify_one();
            let _ = task.await;
        }
    }
}

async fn run<K: Kv + 'static>(shared: Arc<Shared<K>>) {
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    loop {
        let due = lock(&shared.outbox).due(now());
        match due {
            Ok(due) => {
                for id in &due.expired {
                    tracing::info!(?id, "message expired undelivered");
                }
                for message in due.send {
                    let Ok(permit) = slots.clone().acquire_owned().await else {
                        return;
                    };
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        let result = match PeerId::from_bytes(&message.peer) {
                            Ok(peer) => {
                                shared
                                    .transport
                                    .request(peer, DELIVER_PROTOCOL, encode(&message))
                                    .await
                            }
                            Err(e) => Err(Error::Setup {
                                detail: format!("bad peer id in the outbox: {e}"),
                            }),
                        };
                        let mut outbox = lock(&shared.outbox);
                        match result {
                            Ok(_) => {
                                if let Err(e) = outbox.acked(&message.id) {
                                    tracing::warn!(error = %e, "cannot record an acknowledgement");
                                }
                            }
                            Err(e) => {
                                tracing::debug!(id = ?message.id, error = %e, "delivery attempt failed");
                                outbox.failed(&message.id, now());
                            }
                        }
                        drop(outbox);
                        drop(permit);
                        shared.wake.notify_one();
                    });
                }
            }
            Err(e) => tracing::warn!(error = %e, "outbox unavailable"),
        }
        let wait = lock(&shared.outbox)
            .next_wakeup()
            .map(|t| t.saturating_since(now()))
            .unwrap_or(Duration::from_secs(1))
            .min(Duration::from_secs(1));
        tokio::select! {
            _ = shared.wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = shared.stop.notified() => break,
        }
    }
    // Let attempts in flight finish (they end at the latest with the request timeout), so the
    // store is released when shutdown returns.
    let _ = slots.acquire_many(MAX_IN_FLIGHT as u32).await;
}
