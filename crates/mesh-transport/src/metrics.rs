//! Transport metrics in the Prometheus text format: libp2p's own (bandwidth, connections,
//! identify, kad, gossipsub, ping) plus ours (requests, gossip, latency, refusals).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Outcome label of a request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct Outcome {
    pub(crate) outcome: &'static str,
}

pub(crate) struct Metrics {
    pub(crate) requests_out: Family<Outcome, Counter>,
    pub(crate) requests_in: Family<Outcome, Counter>,
    pub(crate) request_seconds: Histogram,
    pub(crate) gossip_published: Counter,
    pub(crate) gossip_received: Counter,
    pub(crate) gossip_rejected: Counter,
    pub(crate) gossip_unsent: Counter,
    pub(crate) events_dropped: Counter,
    pub(crate) libp2p: libp2p::metrics::Metrics,
}

impl Metrics {
    pub(crate) fn new(registry: &mut Registry) -> Self {
        let m = Self {
            requests_out: Family::default(),
            requests_in: Family::default(),
            request_seconds: Histogram::new([
                0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1.0, 5.0,
            ]),
            gossip_published: Counter::default(),
            gossip_received: Counter::default(),
            gossip_rejected: Counter::default(),
            gossip_unsent: Counter::default(),
            events_dropped: Counter::default(),
            libp2p: libp2p::metrics::Metrics::new(registry),
        };
        let r = registry.sub_registry_with_prefix("mesh");
        r.register(
            "requests_out",
            "Requests sent, by outcome",
            m.requests_out.clone(),
        );
        r.register(
            "requests_in",
            "Requests received, by outcome",
            m.requests_in.clone(),
        );
        r.register(
            "request_seconds",
            "Request round-trip time",
            m.request_seconds.clone(),
        );
        r.register(
            "gossip_published",
            "Gossip messages published",
            m.gossip_published.clone(),
        );
        r.register(
            "gossip_received",
            "Gossip messages received",
            m.gossip_received.clone(),
        );
        r.register(
            "gossip_rejected",
            "Gossip envelopes rejected: malformed or badly signed",
            m.gossip_rejected.clone(),
        );
        r.register(
            "gossip_unsent",
            "Gossip messages queued but refused by gossipsub when their batch left",
            m.gossip_unsent.clone(),
        );
        r.register(
            "events_dropped",
            "Gossip messages dropped because the application did not keep up",
            m.events_dropped.clone(),
        );
        m
    }
}

pub(crate) fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, registry).is_err() {
        out.clear();
    }
    out
}
