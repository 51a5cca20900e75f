//! Request/response over one long-lived libp2p stream per peer and direction.
//!
//! libp2p's `request_response` opens (and negotiates) a new stream per request and arms a
//! timer on a global timer thread for each; measured here, scheduler wake-ups then dominated
//! the cost. This module keeps one stream open per peer (opened on the first request,
//! reopened after a failure), tags frames with ids so answers may come back in any order, and
//! batches queued frames into one write:
//!
//! ```text
//! request:  0x01 | id (u64 LE) | name length (u8) | name | payload length (u32 LE) | payload
//! response: 0x02 | id (u64 LE) | status (u8: 0 ok, 1 unknown protocol, 2 refused)
//!                | payload length (u32 LE) | payload
//! ```
//!
//! Every length is checked against the limit before anything is allocated. A peer that sends
//! a malformed frame loses that stream (and only that stream: its connection, and every other
//! peer, are unaffected); its pending requests fail and the next request opens a new stream.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};
use libp2p::{PeerId, Stream, StreamProtocol};
use tokio::sync::{mpsc, oneshot};

use crate::codec::{MAX_PROTOCOL_NAME, Status, WireResponse, valid_protocol_name};
use crate::error::{Error, Result};
use crate::node::{Event, InboundRequest};

/// The libp2p protocol of the stream.
pub(crate) const PROTOCOL: StreamProtocol = StreamProtocol::new("/agentmesh/rr/2");

const REQUEST: u8 = 1;
const RESPONSE: u8 = 2;
/// Frames queued for one stream's writer.
const WRITE_QUEUE: usize = 1024;
/// Bytes gathered into one write.
const WRITE_BATCH: usize = 64 * 1024;
/// Requests one inbound stream may have waiting for the application.
const MAX_PENDING_PER_STREAM: usize = crate::node::MAX_PENDING_INBOUND;
/// Requests all inbound streams together may have waiting for the application (a peer could
/// otherwise open stream after stream).
const MAX_PENDING_TOTAL: usize = 16 * MAX_PENDING_PER_STREAM;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section is a single map operation: a panic cannot leave it half-done.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Counters shared with the node's metrics.
#[derive(Clone)]
pub(crate) struct RrMetrics {
    pub(crate) out: prometheus_client::metrics::family::Family<
        crate::metrics::Outcome,
        prometheus_client::metrics::counter::Counter,
    >,
    pub(crate) inbound: prometheus_client::metrics::family::Family<
        crate::metrics::Outcome,
        prometheus_client::metrics::counter::Counter,
    >,
    pub(crate) seconds: prometheus_client::metrics::histogram::Histogram,
}

impl RrMetrics {
    fn out(&self, outcome: &'static str) {
        self.out
            .get_or_create(&crate::metrics::Outcome { outcome })
            .inc();
    }

    fn inbound(&self, outcome: &'static str) {
        self.inbound
            .get_or_create(&crate::metrics::Outcome { outcome })
            .inc();
    }
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<WireResponse>>>>;

struct Link {
    tx: mpsc::Sender<Vec<u8>>,
    pending: Pending,
    serial: u64,
}

struct Responder {
    tx: mpsc::Sender<Vec<u8>>,
    id: u64,
    in_flight: Arc<AtomicU64>,
}

/// The shared state of the stream-based request/response protocol.
pub(crate) struct StreamRr {
    control: libp2p_stream::Control,
    links: Mutex<HashMap<PeerId, Link>>,
    serial: AtomicU64,
    next_id: AtomicU64,
    pending_in: Mutex<HashMap<u64, Responder>>,
    next_token: AtomicU64,
    max_len: usize,
    timeout: Duration,
    metrics: RrMetrics,
    closed: tokio::sync::watch::Sender<bool>,
}

impl std::fmt::Debug for StreamRr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamRr").finish_non_exhaustive()
    }
}

/// What the inbound side needs from the node.
pub(crate) struct Inbound {
    /// Weak, so the event stream ends when the node's driver stops.
    pub(crate) events: mpsc::WeakSender<Event>,
    pub(crate) served: std::collections::HashSet<String>,
    pub(crate) limiter: Arc<Mutex<crate::limits::RateLimiter<PeerId>>>,
    pub(crate) started: tokio::time::Instant,
}

impl StreamRr {
    pub(crate) fn new(
        control: libp2p_stream::Control,
        max_len: usize,
        timeout: Duration,
        metrics: RrMetrics,
    ) -> Arc<Self> {
        Arc::new(Self {
            control,
            links: Mutex::new(HashMap::new()),
            serial: AtomicU64::new(0),
            next_id: AtomicU64::new(1),
            pending_in: Mutex::new(HashMap::new()),
            next_token: AtomicU64::new(1),
            max_len,
            timeout,
            metrics,
            closed: tokio::sync::watch::Sender::new(false),
        })
    }

    /// Stops serving: inbound streams close, pending requests fail, new ones are refused.
    pub(crate) fn close(&self) {
        self.closed.send_replace(true);
        lock(&self.links).clear();
        lock(&self.pending_in).clear();
    }

    pub(crate) fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    async fn until_closed(&self) {
        let mut rx = self.closed.subscribe();
        let _ = rx.wait_for(|c| *c).await;
    }

    /// Accepts inbound streams and serves them until the node stops.
    pub(crate) fn serve(self: &Arc<Self>, inbound: Inbound) -> Result<()> {
        let mut control = self.control.clone();
        let mut incoming = control.accept(PROTOCOL).map_err(|e| Error::Setup {
            detail: e.to_string(),
        })?;
        let this = self.clone();
        let inbound = Arc::new(inbound);
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    n = incoming.next() => n,
                    () = this.until_closed() => None,
                };
                let Some((peer, stream)) = next else { break };
                let this = this.clone();
                let inbound = inbound.clone();
                tokio::spawn(async move {
                    let served = tokio::select! {
                        r = this.serve_stream(peer, stream, &inbound) => r,
                        () = this.until_closed() => Ok(()),
                    };
                    if let Err(e) = served {
                        tracing::debug!(%peer, error = %e, "request stream closed");
                    }
                });
            }
        });
        Ok(())
    }

    async fn serve_stream(
        &self,
        peer: PeerId,
        stream: Stream,
        inbound: &Inbound,
    ) -> std::io::Result<()> {
        let (mut reader, writer) = stream.split();
        let (tx, rx) = mpsc::channel::<Vec<u8>>(WRITE_QUEUE);
        tokio::spawn(write_loop(writer, rx));
        let in_flight = Arc::new(AtomicU64::new(0));
        loop {
            let Some((id, protocol, data)) = read_request(&mut reader, self.max_len).await? else {
                return Ok(());
            };
            let now = mesh_types::Instant::from_nanos(
                u64::try_from(inbound.started.elapsed().as_nanos()).unwrap_or(u64::MAX),
            );
            let refuse = |status: Status, reason: &[u8]| {
                encode_response(
                    id,
                    &WireResponse {
                        status,
                        data: reason.to_vec(),
                    },
                )
            };
            if !lock(&inbound.limiter).allow(&peer, now) {
                self.metrics.inbound("rate_limited");
                let _ = tx.send(refuse(Status::Refused, b"rate limited")).await;
                continue;
            }
            if !inbound.served.contains(&protocol) {
                self.metrics.inbound("unknown_protocol");
                let _ = tx.send(refuse(Status::UnknownProtocol, b"")).await;
                continue;
            }
            let Some(events) = inbound.events.upgrade() else {
                return Ok(());
            };
            if in_flight.load(Ordering::Relaxed) >= MAX_PENDING_PER_STREAM as u64
                || lock(&self.pending_in).len() >= MAX_PENDING_TOTAL
                || events.capacity() == 0
            {
                // The application is not keeping up: refuse now rather than wait on it.
                self.metrics.inbound("busy");
                let _ = tx
                    .send(refuse(Status::Refused, b"busy: too many pending requests"))
                    .await;
                continue;
            }
            let token = self.next_token.fetch_add(1, Ordering::Relaxed);
            in_flight.fetch_add(1, Ordering::Relaxed);
            lock(&self.pending_in).insert(
                token,
                Responder {
                    tx: tx.clone(),
                    id,
                    in_flight: in_flight.clone(),
                },
            );
            let event = Event::Request(InboundRequest {
                peer,
                protocol,
                data,
                token,
            });
            let sent = events.try_send(event);
            drop(events);
            if sent.is_err() {
                lock(&self.pending_in).remove(&token);
                in_flight.fetch_sub(1, Ordering::Relaxed);
                self.metrics.inbound("busy");
                let _ = tx
                    .send(refuse(Status::Refused, b"busy: too many pending requests"))
                    .await;
                continue;
            }
            self.metrics.inbound("delivered");
        }
    }

    /// Answers the inbound request `token`; false if it is unknown (answered, or its stream
    /// closed).
    pub(crate) async fn respond(
        &self,
        token: u64,
        result: std::result::Result<Vec<u8>, String>,
    ) -> bool {
        let Some(r) = lock(&self.pending_in).remove(&token) else {
            return false;
        };
        r.in_flight.fetch_sub(1, Ordering::Relaxed);
        let response = match result {
            Ok(data) => WireResponse {
                status: Status::Ok,
                data,
            },
            Err(reason) => WireResponse {
                status: Status::Refused,
                data: reason.into_bytes(),
            },
        };
        if r.tx.send(encode_response(r.id, &response)).await.is_err() {
            tracing::debug!(token, "response dropped: the requester went away");
        }
        true
    }

    /// Sends a request to `peer` and waits for the answer.
    pub(crate) async fn request(
        &self,
        peer: PeerId,
        protocol: &str,
        data: Vec<u8>,
    ) -> Result<Vec<u8>> {
        if self.is_closed() {
            return Err(Error::Closed);
        }
        #[allow(clippy::disallowed_methods)] // latency metric
        let sent = std::time::Instant::now();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = encode_request(id, protocol, &data);
        let (reply, rx) = oneshot::channel();
        let (tx, pending, serial) = self.link(peer);
        lock(&pending).insert(id, reply);
        let failed = |detail: String| Error::Request {
            id,
            protocol: protocol.to_owned(),
            peer: peer.to_string(),
            detail,
        };
        if tx.send(frame).await.is_err() {
            lock(&pending).remove(&id);
            self.drop_link(peer, serial);
            self.metrics.out("failed");
            return Err(failed("the stream to the peer closed".into()));
        }
        let response = match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => {
                self.metrics.out("failed");
                return Err(failed("the stream to the peer closed".into()));
            }
            Err(_) => {
                lock(&pending).remove(&id);
                // The stream may be stuck (never opened, or its connection half-gone): the
                // next request opens a fresh one. Requests already waiting on this one keep
                // it until they finish.
                self.drop_link(peer, serial);
                self.metrics.out("failed");
                return Err(failed(format!("no answer within {:?}", self.timeout)));
            }
        };
        self.metrics.seconds.observe(sent.elapsed().as_secs_f64());
        match response.status {
            Status::Ok => {
                self.metrics.out("ok");
                Ok(response.data)
            }
            Status::UnknownProtocol => {
                self.metrics.out("unknown_protocol");
                Err(Error::UnknownProtocol {
                    peer: peer.to_string(),
                    protocol: protocol.to_owned(),
                })
            }
            Status::Refused => {
                self.metrics.out("refused");
                Err(Error::Refused {
                    peer: peer.to_string(),
                    protocol: protocol.to_owned(),
                    detail: String::from_utf8_lossy(&response.data).into_owned(),
                })
            }
        }
    }

    /// The link to `peer`, opening one (in the background) if there is none.
    fn link(&self, peer: PeerId) -> (mpsc::Sender<Vec<u8>>, Pending, u64) {
        let mut links = lock(&self.links);
        if let Some(l) = links.get(&peer).filter(|l| !l.tx.is_closed()) {
            return (l.tx.clone(), l.pending.clone(), l.serial);
        }
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        links.insert(
            peer,
            Link {
                tx: tx.clone(),
                pending: pending.clone(),
                serial,
            },
        );
        let control = self.control.clone();
        let max_len = self.max_len;
        let p = pending.clone();
        tokio::spawn(async move {
            let result = run_link(control, peer, rx, p.clone(), max_len).await;
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "request stream to peer ended");
            }
            // Fail whatever is still waiting: dropping the senders wakes the callers.
            lock(&p).clear();
        });
        (tx, pending, serial)
    }

    fn drop_link(&self, peer: PeerId, serial: u64) {
        let mut links = lock(&self.links);
        if links.get(&peer).is_some_and(|l| l.serial == serial) {
            links.remove(&peer);
        }
    }
}

async fn run_link(
    mut control: libp2p_stream::Control,
    peer: PeerId,
    rx: mpsc::Receiver<Vec<u8>>,
    pending: Pending,
    max_len: usize,
) -> std::io::Result<()> {
    let stream = control
        .open_stream(peer, PROTOCOL)
        .await
        .map_err(std::io::Error::other)?;
    let (mut reader, writer) = stream.split();
    let writing = tokio::spawn(write_loop(writer, rx));
    let reading = async {
        loop {
            let Some((id, response)) = read_response(&mut reader, max_len).await? else {
                return Ok::<(), std::io::Error>(());
            };
            if let Some(reply) = lock(&pending).remove(&id) {
                let _ = reply.send(response);
            }
        }
    };
    let r = reading.await;
    writing.abort();
    r
}

/// Writes queued frames, gathering whatever is queued into one write.
async fn write_loop<W: AsyncWrite + Unpin>(mut writer: W, mut rx: mpsc::Receiver<Vec<u8>>) {
    let mut buf = Vec::with_capacity(WRITE_BATCH);
    while let Some(frame) = rx.recv().await {
        buf.clear();
        buf.extend_from_slice(&frame);
        while buf.len() < WRITE_BATCH {
            match rx.try_recv() {
                Ok(f) => buf.extend_from_slice(&f),
                Err(_) => break,
            }
        }
        if writer.write_all(&buf).await.is_err() || writer.flush().await.is_err() {
            return;
        }
    }
    let _ = writer.close().await;
}

fn encode_request(id: u64, protocol: &str, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(14 + protocol.len() + data.len());
    out.push(REQUEST);
    out.extend_from_slice(&id.to_le_bytes());
    out.push(protocol.len() as u8);
    out.extend_from_slice(protocol.as_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(data);
    out
}

fn encode_response(id: u64, r: &WireResponse) -> Vec<u8> {
    let mut out = Vec::with_capacity(14 + r.data.len());
    out.push(RESPONSE);
    out.extend_from_slice(&id.to_le_bytes());
    out.push(match r.status {
        Status::Ok => 0,
        Status::UnknownProtocol => 1,
        Status::Refused => 2,
    });
    out.extend_from_slice(&(r.data.len() as u32).to_le_bytes());
    out.extend_from_slice(&r.data);
    out
}

fn invalid(detail: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, detail.to_owned())
}

/// Reads the first byte of a frame; `None` at a clean end of stream.
async fn read_kind<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Option<u8>> {
    let mut b = [0u8; 1];
    match r.read(&mut b).await? {
        0 => Ok(None),
        _ => Ok(Some(b[0])),
    }
}

async fn read_payload<R: AsyncRead + Unpin>(r: &mut R, max_len: usize) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await?;
    let len = u32::from_le_bytes(len) as usize;
    if len > max_len {
        return Err(invalid("frame exceeds the message limit"));
    }
    let mut data = vec![0u8; len];
    r.read_exact(&mut data).await?;
    Ok(data)
}

/// Reads one request frame.
pub(crate) async fn read_request<R: AsyncRead + Unpin>(
    r: &mut R,
    max_len: usize,
) -> std::io::Result<Option<(u64, String, Vec<u8>)>> {
    match read_kind(r).await? {
        None => return Ok(None),
        Some(REQUEST) => {}
        Some(_) => return Err(invalid("not a request frame")),
    }
    let mut id = [0u8; 8];
    r.read_exact(&mut id).await?;
    let mut n = [0u8; 1];
    r.read_exact(&mut n).await?;
    let n = usize::from(n[0]);
    if n > MAX_PROTOCOL_NAME {
        return Err(invalid("protocol name too long"));
    }
    let mut name = vec![0u8; n];
    r.read_exact(&mut name).await?;
    let name = String::from_utf8(name).map_err(|_| invalid("protocol name is not UTF-8"))?;
    if !valid_protocol_name(&name) {
        return Err(invalid("bad protocol name"));
    }
    let data = read_payload(r, max_len).await?;
    Ok(Some((u64::from_le_bytes(id), name, data)))
}

/// Reads one response frame.
pub(crate) async fn read_response<R: AsyncRead + Unpin>(
    r: &mut R,
    max_len: usize,
) -> std::io::Result<Option<(u64, WireResponse)>> {
    match read_kind(r).await? {
        None => return Ok(None),
        Some(RESPONSE) => {}
        Some(_) => return Err(invalid("not a response frame")),
    }
    let mut id = [0u8; 8];
    r.read_exact(&mut id).await?;
    let mut status = [0u8; 1];
    r.read_exact(&mut status).await?;
    let status = match status[0] {
        0 => Status::Ok,
        1 => Status::UnknownProtocol,
        2 => Status::Refused,
        _ => return Err(invalid("unknown status")),
    };
    let data = read_payload(r, max_len).await?;
    Ok(Some((
        u64::from_le_bytes(id),
        WireResponse { status, data },
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<F: Future>(f: F) -> F::Output {
        futures::executor::block_on(f)
    }

    #[test]
    fn frames_round_trip() {
        let req = encode_request(7, "echo", b"hi");
        let mut r = futures::io::Cursor::new(req);
        let got = block_on(read_request(&mut r, 1024)).unwrap().unwrap();
        assert_eq!(got, (7, "echo".to_owned(), b"hi".to_vec()));
        assert!(block_on(read_request(&mut r, 1024)).unwrap().is_none());
        let resp = encode_response(
            9,
            &WireResponse {
                status: Status::Refused,
                data: b"no".to_vec(),
            },
        );
        let mut r = futures::io::Cursor::new(resp);
        let (id, w) = block_on(read_response(&mut r, 1024)).unwrap().unwrap();
        assert_eq!((id, w.status, w.data), (9, Status::Refused, b"no".to_vec()));
    }

    #[test]
    fn malformed_frames_are_errors_not_panics() {
        let good = encode_request(1, "echo", &[0; 100]);
        // Every truncation is an error (or a clean end at 0 bytes).
        for cut in 1..good.len() {
            let mut r = futures::io::Cursor::new(good[..cut].to_vec());
            assert!(block_on(read_request(&mut r, 1024)).is_err(), "cut {cut}");
        }
        // Oversized payload: rejected before allocation.
        let mut r = futures::io::Cursor::new(good.clone());
        assert!(block_on(read_request(&mut r, 99)).is_err());
        // Wrong kind, bad name, bad status.
        let mut bad = good.clone();
        bad[0] = 9;
        assert!(block_on(read_request(&mut futures::io::Cursor::new(bad), 1024)).is_err());
        let mut bad = good.clone();
        bad[10] = b'A';
        assert!(block_on(read_request(&mut futures::io::Cursor::new(bad), 1024)).is_err());
        let mut resp = encode_response(
            1,
            &WireResponse {
                status: Status::Ok,
                data: vec![],
            },
        );
        resp[9] = 7;
        assert!(block_on(read_response(&mut futures::io::Cursor::new(resp), 1024)).is_err());
    }
}
