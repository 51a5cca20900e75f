//! The HTTP API of an agentmesh node.
//!
//! This crate owns the node's HTTP surface and nothing behind it: the routes, their JSON
//! bodies ([`types`]), how errors become HTTP answers, the Prometheus metrics page, the
//! OpenAPI document ([`openapi`]), the WebSocket event stream, and a small blocking
//! [`client`] for tools and tests. What the routes *do* is asked of a [`Backend`], which the
//! node library (`mesh-driver`) implements over its consensus driver and transport; another
//! program can serve the same API over its own backend.
//!
//! | route | answers |
//! |---|---|
//! | `GET /v1/status` | [`types::NodeStatus`] |
//! | `GET /v1/peers` | a list of [`types::Peer`] |
//! | `POST /v1/consensus/requests` | [`types::SubmitRequest`] in, [`types::Receipt`] out, once committed |
//! | `GET /v1/ledger?from=H&limit=N` | [`types::Ledger`] |
//! | `GET /v1/events` | a WebSocket of [`types::Event`] (JSON text messages) |
//! | `GET /metrics` | Prometheus (OpenMetrics) text |
//! | `GET /v1/openapi.json` | the OpenAPI 3.1 document |
//!
//! Every error is an HTTP 4xx or 5xx with a JSON [`types::ErrorBody`]: malformed JSON, an
//! unknown field, a bad query, a body over the limit, an unknown route or method, a missing
//! token, a node that is not a validator, a busy node.
//!
//! # Safety limits
//!
//! The server listens on loopback by default (the node's setting); [`ServerConfig::token`]
//! requires `Authorization: Bearer <token>` on every route, and the node refuses a
//! non-loopback address without one. Bodies are capped ([`ServerConfig::max_body`]),
//! requests in progress are capped ([`ServerConfig::max_concurrent`]; beyond it: 503 `busy`),
//! as are WebSocket subscribers ([`ServerConfig::max_event_streams`]); a subscriber that falls
//! behind skips events (it is told how many) and never slows the node.
//!
//! The crate without its default `server` feature is only [`types`] and [`client`]
//! (no axum, no tokio).

#![forbid(unsafe_code)]
// The OpenAPI document is one `serde_json::json!` literal, deeper than the default limit.
#![recursion_limit = "256"]

pub mod client;
pub mod types;

#[cfg(feature = "server")]
mod metrics;
#[cfg(feature = "server")]
pub mod openapi;
#[cfg(feature = "server")]
mod server;

#[cfg(feature = "server")]
pub use server::{ApiError, Backend, BindError, Server, ServerConfig, bind};
