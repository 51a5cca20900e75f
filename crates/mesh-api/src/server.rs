//! The axum server: routes, the backend trait, errors as HTTP answers, limits.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::ws::{
    Message, WebSocket, WebSocketUpgrade, rejection::WebSocketUpgradeRejection,
};
use axum::extract::{DefaultBodyLimit, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, broadcast, watch};

use crate::types::{
    AgentInfo, ErrorBody, ErrorDetail, Event, Ledger, Member, MessageBox, MessageReceipt, Messages,
    NodeStatus, Peer, Receipt, RunInfo, SendMessage, StartRun, SubmitRequest,
};

/// What the routes ask of the node. The node library implements it over its consensus
/// driver and transport; tests implement it in memory.
pub trait Backend: Send + Sync + 'static {
    /// The node's status.
    fn status(&self) -> impl Future<Output = Result<NodeStatus, ApiError>> + Send;
    /// The peers connected now.
    fn peers(&self) -> impl Future<Output = Result<Vec<Peer>, ApiError>> + Send;
    /// Submits `payload` to consensus and waits until it has executed.
    fn submit(&self, payload: Vec<u8>) -> impl Future<Output = Result<Receipt, ApiError>> + Send;
    /// At most `limit` committed blocks from height `from` on (`limit` >= 1).
    fn ledger(
        &self,
        from: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Ledger, ApiError>> + Send;
    /// A new subscription to the node's events.
    fn events(&self) -> broadcast::Receiver<Event>;
    /// Metrics of the node's parts in the OpenMetrics text format (a trailing `# EOF` line
    /// is dropped; the page ends with its own).
    fn metrics(&self) -> impl Future<Output = Result<String, ApiError>> + Send;
    /// The membership view (a node); by default this server keeps none.
    fn members(&self) -> impl Future<Output = Result<Vec<Member>, ApiError>> + Send {
        std::future::ready(Err(ApiError::NotFound(
            "this server keeps no membership view (ask a node)".into(),
        )))
    }
    /// The agents registered through consensus (a node); by default this server keeps no
    /// registry.
    fn agents(&self) -> impl Future<Output = Result<Vec<AgentInfo>, ApiError>> + Send {
        std::future::ready(Err(ApiError::NotFound(
            "this server keeps no agent registry (ask a node)".into(),
        )))
    }
    /// Starts a federated run through consensus and answers once its record has executed
    /// (a validator); by default this server runs no federated learning.
    fn start_run(&self, run: StartRun) -> impl Future<Output = Result<RunInfo, ApiError>> + Send {
        let _ = run;
        std::future::ready(Err(ApiError::NotFound(
            "this server runs no federated learning (ask a validator node)".into(),
        )))
    }
    /// The federated runs this node knows of, oldest first.
    fn runs(&self) -> impl Future<Output = Result<Vec<RunInfo>, ApiError>> + Send {
        std::future::ready(Err(ApiError::NotFound(
            "this server runs no federated learning (ask a validator node)".into(),
        )))
    }
    /// Sends an end-to-end encrypted message to another agent (an agent); by default this
    /// server is not an agent.
    fn send_message(
        &self,
        message: SendMessage,
    ) -> impl Future<Output = Result<MessageReceipt, ApiError>> + Send {
        let _ = message;
        std::future::ready(Err(ApiError::NotAnAgent))
    }
    /// At most `limit` messages of `which` box from position `from` (an agent).
    fn messages(
        &self,
        which: MessageBox,
        from: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Messages, ApiError>> + Send {
        let _ = (which, from, limit);
        std::future::ready(Err(ApiError::NotAnAgent))
    }
}

/// An error answered to an API client: an HTTP status and an [`ErrorBody`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed (400).
    #[error("{0}")]
    BadRequest(String),
    /// A bearer token is required or wrong (401).
    #[error("a valid `Authorization: Bearer <token>` header is required")]
    Unauthorized,
    /// No such route or item (404).
    #[error("{0}")]
    NotFound(String),
    /// The route does not take this method (405).
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    /// This node runs no consensus replica (409).
    #[error("this node is not a validator of a genesis: it runs no consensus")]
    NotAValidator,
    /// Messages are sent and read through an agent's API, not a node's (409).
    #[error("this server is not an agent: send and read messages through an agent's API")]
    NotAnAgent,
    /// The body is over the limit (413).
    #[error("the body is over the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The limit.
        limit: usize,
    },
    /// The node is busy: too many requests in progress or clients waiting (503).
    #[error("{0}")]
    Busy(String),
    /// The part of the node asked for has stopped or is not there (503).
    #[error("{0}")]
    Unavailable(String),
    /// No answer in time (504).
    #[error("{0}")]
    Timeout(String),
    /// Anything else (500).
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::NotAValidator | Self::NotAnAgent => StatusCode::CONFLICT,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Busy(_) | Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable code in the body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::Unauthorized => "unauthorized",
            Self::NotFound(_) => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::NotAValidator => "not_a_validator",
            Self::NotAnAgent => "not_an_agent",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::Busy(_) => "busy",
            Self::Unavailable(_) => "unavailable",
            Self::Timeout(_) => "timeout",
            Self::Internal(_) => "internal",
        }
    }

    fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code().to_owned(),
                message: self.to_string(),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), Json(self.body())).into_response();
        if self == Self::Unauthorized {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// The server's settings. [`ServerConfig::default`] suits a node's local API.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// When set, every route requires `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// The largest request body, in bytes. Default 1 MiB.
    pub max_body: usize,
    /// Requests handled at once; beyond it the answer is 503 `busy`. Default 256.
    pub max_concurrent: usize,
    /// WebSocket subscribers at once; beyond it the answer is 503 `busy`. Default 32.
    pub max_event_streams: usize,
    /// The most blocks one ledger answer holds. Default 256.
    pub max_ledger_blocks: usize,
    /// How long a submission waits to commit before the answer is 504 `timeout` (the
    /// request may still commit later). Default 30 s.
    pub submit_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            token: None,
            max_body: 1024 * 1024,
            max_concurrent: 256,
            max_event_streams: 32,
            max_ledger_blocks: 256,
            submit_timeout: Duration::from_secs(30),
        }
    }
}

/// Binding the API's address failed.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// Another socket holds the port.
    #[error("the API address {addr} is in use (another node or program listens there)")]
    InUse {
        /// The address.
        addr: SocketAddr,
    },
    /// Any other failure.
    #[error("cannot listen for the API on {addr}: {source}")]
    Other {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Binds the API's TCP listener, telling a port in use apart from other failures. Call it
/// inside a tokio runtime (the listener registers with its reactor).
pub fn bind(addr: SocketAddr) -> Result<TcpListener, BindError> {
    let other = |source| BindError::Other { addr, source };
    let listener = std::net::TcpListener::bind(addr).map_err(|source| {
        if source.kind() == std::io::ErrorKind::AddrInUse {
            BindError::InUse { addr }
        } else {
            BindError::Other { addr, source }
        }
    })?;
    listener.set_nonblocking(true).map_err(other)?;
    TcpListener::from_std(listener).map_err(other)
}

/// Counts of the server's own, for `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct ApiCounters {
    pub(crate) requests: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) busy: AtomicU64,
    pub(crate) event_streams: AtomicU64,
}

struct Shared<B> {
    backend: Arc<B>,
    config: ServerConfig,
    in_progress: Arc<Semaphore>,
    streams: Arc<Semaphore>,
    stop: watch::Receiver<bool>,
    counters: ApiCounters,
}

type St<B> = State<Arc<Shared<B>>>;

/// A running API server. Dropping it does not stop it: call [`Server::shutdown`].
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    join: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// Serves the API for `backend` on `listener`, on the current tokio runtime.
    pub fn spawn<B: Backend>(
        listener: TcpListener,
        backend: Arc<B>,
        config: ServerConfig,
    ) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let (stop_tx, stop) = watch::channel(false);
        let app = router(backend, config, stop.clone());
        let mut wait = stop;
        let join = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = wait.wait_for(|s| *s).await;
                })
                .await
        });
        Ok(Self {
            addr,
            stop: stop_tx,
            join,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, closes the event streams and waits (at most 5 s) for the requests
    /// in progress.
    pub async fn shutdown(self) {
        self.stop.send_replace(true);
        match tokio::time::timeout(Duration::from_secs(5), self.join).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "the API server failed"),
            Ok(Err(e)) => tracing::warn!(error = %e, "the API server task failed"),
            Err(_) => tracing::warn!("the API server did not stop within 5 s"),
        }
    }
}

/// The routes, for serving with a listener of the caller's (see [`Server::spawn`]).
fn router<B: Backend>(
    backend: Arc<B>,
    config: ServerConfig,
    stop: watch::Receiver<bool>,
) -> Router {
    let shared = Arc::new(Shared {
        backend,
        in_progress: Arc::new(Semaphore::new(config.max_concurrent.max(1))),
        streams: Arc::new(Semaphore::new(config.max_event_streams.max(1))),
        stop,
        counters: ApiCounters::default(),
        config,
    });
    Router::new()
        .route("/v1/status", get(status::<B>))
        .route("/v1/peers", get(peers::<B>))
        .route("/v1/consensus/requests", post(submit::<B>))
        .route("/v1/ledger", get(ledger::<B>))
        .route("/v1/events", get(events::<B>))
        .route("/v1/members", get(members::<B>))
        .route("/v1/agents", get(agents::<B>))
        .route("/v1/messages", get(messages::<B>).post(send_message::<B>))
        .route("/v1/learning/runs", get(runs::<B>).post(start_run::<B>))
        .route("/v1/learning/runs/{id}", get(run::<B>))
        .route("/v1/openapi.json", get(openapi))
        .route("/metrics", get(metrics::<B>))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(shared.config.max_body))
        .layer(middleware::from_fn_with_state(shared.clone(), guard::<B>))
        .with_state(shared)
}

/// The routes this server answers, as the OpenAPI document lists them (`method path`).
/// The integration tests ask the live server for each.
#[cfg(test)]
pub(crate) const ROUTES: &[(&str, &str)] = &[
    ("get", "/v1/status"),
    ("get", "/v1/peers"),
    ("post", "/v1/consensus/requests"),
    ("get", "/v1/ledger"),
    ("get", "/v1/events"),
    ("get", "/v1/members"),
    ("get", "/v1/agents"),
    ("get", "/v1/messages"),
    ("post", "/v1/messages"),
    ("get", "/v1/learning/runs"),
    ("post", "/v1/learning/runs"),
    ("get", "/v1/learning/runs/{id}"),
    ("get", "/v1/openapi.json"),
    ("get", "/metrics"),
];

/// Authentication, the in-progress limit and counting, around every route.
async fn guard<B: Backend>(State(s): St<B>, request: Request, next: Next) -> Response {
    s.counters.requests.fetch_add(1, Ordering::Relaxed);
    if let Some(token) = &s.config.token {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|g| same(g.as_bytes(), token.as_bytes())) {
            s.counters.errors.fetch_add(1, Ordering::Relaxed);
            return ApiError::Unauthorized.into_response();
        }
    }
    let Ok(_permit) = s.in_progress.clone().try_acquire_owned() else {
        s.counters.busy.fetch_add(1, Ordering::Relaxed);
        s.counters.errors.fetch_add(1, Ordering::Relaxed);
        return ApiError::Busy(format!(
            "{} requests are in progress; try again",
            s.config.max_concurrent
        ))
        .into_response();
    };
    let response = next.run(request).await;
    if response.status().is_client_error() || response.status().is_server_error() {
        s.counters.errors.fetch_add(1, Ordering::Relaxed);
    }
    response
}

/// Compares two byte strings in time independent of where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route; GET /v1/openapi.json lists them".into())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

async fn status<B: Backend>(State(s): St<B>) -> Result<Json<NodeStatus>, ApiError> {
    s.backend.status().await.map(Json)
}

async fn peers<B: Backend>(State(s): St<B>) -> Result<Json<Vec<Peer>>, ApiError> {
    s.backend.peers().await.map(Json)
}

async fn submit<B: Backend>(
    State(s): St<B>,
    body: Result<Json<SubmitRequest>, JsonRejection>,
) -> Result<Json<Receipt>, ApiError> {
    let Json(body) = body.map_err(|r| json_rejection(&r, s.config.max_body))?;
    let payload = match (body.text, body.hex) {
        (Some(text), None) => text.into_bytes(),
        (None, Some(hex)) => decode_hex(&hex)?,
        _ => {
            return Err(ApiError::BadRequest(
                "give exactly one of `text` and `hex`".into(),
            ));
        }
    };
    match tokio::time::timeout(s.config.submit_timeout, s.backend.submit(payload)).await {
        Ok(r) => r.map(Json),
        Err(_) => Err(ApiError::Timeout(format!(
            "not committed within {:?}; it may still commit",
            s.config.submit_timeout
        ))),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LedgerQuery {
    from: Option<u64>,
    limit: Option<usize>,
}

async fn ledger<B: Backend>(
    State(s): St<B>,
    query: Result<Query<LedgerQuery>, QueryRejection>,
) -> Result<Json<Ledger>, ApiError> {
    let Query(q) = query.map_err(|r| ApiError::BadRequest(r.body_text()))?;
    let from = q.from.unwrap_or(1);
    if from == 0 {
        return Err(ApiError::BadRequest(
            "`from` is a block height, 1 or more".into(),
        ));
    }
    let limit = q.limit.unwrap_or(100);
    if limit == 0 {
        return Err(ApiError::BadRequest("`limit` must be 1 or more".into()));
    }
    let limit = limit.min(s.config.max_ledger_blocks);
    s.backend.ledger(from, limit).await.map(Json)
}

async fn members<B: Backend>(State(s): St<B>) -> Result<Json<Vec<Member>>, ApiError> {
    s.backend.members().await.map(Json)
}

async fn agents<B: Backend>(State(s): St<B>) -> Result<Json<Vec<AgentInfo>>, ApiError> {
    s.backend.agents().await.map(Json)
}

async fn runs<B: Backend>(State(s): St<B>) -> Result<Json<Vec<RunInfo>>, ApiError> {
    s.backend.runs().await.map(Json)
}

async fn run<B: Backend>(
    State(s): St<B>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Json<RunInfo>, ApiError> {
    let runs = s.backend.runs().await?;
    runs.into_iter()
        .find(|r| r.id == id || (id.len() >= 8 && r.id.starts_with(&id)))
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no federated run {id} here")))
}

async fn start_run<B: Backend>(
    State(s): St<B>,
    body: Result<Json<StartRun>, JsonRejection>,
) -> Result<Json<RunInfo>, ApiError> {
    let Json(body) = body.map_err(|r| json_rejection(&r, s.config.max_body))?;
    match tokio::time::timeout(s.config.submit_timeout, s.backend.start_run(body)).await {
        Ok(r) => r.map(Json),
        Err(_) => Err(ApiError::Timeout(format!(
            "the run was not committed within {:?}; it may still start",
            s.config.submit_timeout
        ))),
    }
}

async fn send_message<B: Backend>(
    State(s): St<B>,
    body: Result<Json<SendMessage>, JsonRejection>,
) -> Result<Json<MessageReceipt>, ApiError> {
    let Json(body) = body.map_err(|r| json_rejection(&r, s.config.max_body))?;
    match tokio::time::timeout(s.config.submit_timeout, s.backend.send_message(body)).await {
        Ok(r) => r.map(Json),
        Err(_) => Err(ApiError::Timeout(format!(
            "the recipient was not reached within {:?} to open a session; nothing was sent",
            s.config.submit_timeout
        ))),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MessagesQuery {
    from: Option<u64>,
    limit: Option<usize>,
    #[serde(rename = "box")]
    which: Option<MessageBox>,
}

async fn messages<B: Backend>(
    State(s): St<B>,
    query: Result<Query<MessagesQuery>, QueryRejection>,
) -> Result<Json<Messages>, ApiError> {
    let Query(q) = query.map_err(|r| ApiError::BadRequest(r.body_text()))?;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 {
        return Err(ApiError::BadRequest("`limit` must be 1 or more".into()));
    }
    let limit = limit.min(s.config.max_ledger_blocks);
    s.backend
        .messages(q.which.unwrap_or_default(), q.from.unwrap_or(0), limit)
        .await
        .map(Json)
}

async fn events<B: Backend>(
    State(s): St<B>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let upgrade = upgrade.map_err(|r| {
        ApiError::BadRequest(format!(
            "a WebSocket upgrade is expected: {}",
            r.body_text()
        ))
    })?;
    let permit = s.streams.clone().try_acquire_owned().map_err(|_| {
        s.counters.busy.fetch_add(1, Ordering::Relaxed);
        ApiError::Busy(format!(
            "{} event streams are open already",
            s.config.max_event_streams
        ))
    })?;
    s.counters.event_streams.fetch_add(1, Ordering::Relaxed);
    let rx = s.backend.events();
    let stop = s.stop.clone();
    Ok(upgrade.on_upgrade(move |socket| async move {
        stream_events(socket, rx, stop).await;
        drop(permit);
    }))
}

/// Forwards events to one subscriber until it leaves, the node stops or the server shuts
/// down.
async fn stream_events(
    mut socket: WebSocket,
    mut rx: broadcast::Receiver<Event>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let event = tokio::select! {
            r = rx.recv() => match r {
                Ok(e) => e,
                Err(broadcast::error::RecvError::Lagged(missed)) => Event::Lagged { missed },
                Err(broadcast::error::RecvError::Closed) => break,
            },
            incoming = socket.recv() => match incoming {
                // The subscriber only ever closes; anything else it sends is ignored.
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => continue,
            },
            _ = stop.wait_for(|s| *s) => break,
        };
        let Ok(text) = serde_json::to_string(&event) else {
            continue;
        };
        if socket.send(Message::Text(text.into())).await.is_err() {
            return;
        }
    }
    let _ = socket.send(Message::Close(None)).await;
}

async fn openapi() -> Response {
    let mut r = Json(crate::openapi::document()).into_response();
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=3600"),
    );
    r
}

async fn metrics<B: Backend>(State(s): St<B>) -> Result<Response, ApiError> {
    let status = s.backend.status().await?;
    let extra = s.backend.metrics().await?;
    let text = crate::metrics::render(&status, &s.counters, &extra);
    let mut r = text.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
    );
    Ok(r)
}

fn json_rejection(r: &JsonRejection, limit: usize) -> ApiError {
    if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge { limit }
    } else {
        ApiError::BadRequest(r.body_text())
    }
}

fn decode_hex(text: &str) -> Result<Vec<u8>, ApiError> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return Err(ApiError::BadRequest(
            "`hex` has an odd number of digits".into(),
        ));
    }
    bytes
        .chunks_exact(2)
        .enumerate()
        .map(|(i, pair)| match (digit(pair[0]), digit(pair[1])) {
            (Some(h), Some(l)) => Ok(h << 4 | l),
            _ => Err(ApiError::BadRequest(format!(
                "`hex` has a non-hex character near offset {}",
                2 * i
            ))),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_decodes_and_refuses_junk() {
        assert_eq!(decode_hex("00ffA1").ok(), Some(vec![0, 255, 0xa1]));
        assert_eq!(decode_hex("").ok(), Some(vec![]));
        assert!(matches!(decode_hex("abc"), Err(ApiError::BadRequest(_))));
        assert!(matches!(decode_hex("zz"), Err(ApiError::BadRequest(_))));
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"secret", b"secret"));
        assert!(!same(b"secret", b"secreT"));
        assert!(!same(b"secret", b"secret!"));
        assert!(!same(b"", b"x"));
    }

    #[test]
    fn every_error_has_a_4xx_or_5xx_status_and_a_code() {
        let all = [
            ApiError::BadRequest("x".into()),
            ApiError::Unauthorized,
            ApiError::NotFound("x".into()),
            ApiError::MethodNotAllowed,
            ApiError::NotAValidator,
            ApiError::PayloadTooLarge { limit: 1 },
            ApiError::Busy("x".into()),
            ApiError::Unavailable("x".into()),
            ApiError::Timeout("x".into()),
            ApiError::Internal("x".into()),
        ];
        for e in all {
            assert!(e.status().is_client_error() || e.status().is_server_error());
            assert!(!e.code().is_empty());
        }
    }
}
