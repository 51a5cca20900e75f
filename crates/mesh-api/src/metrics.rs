//! The `/metrics` page: the node's status and the server's counters as OpenMetrics text,
//! followed by what the backend adds (the transport's registry).

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use crate::server::ApiCounters;
use crate::types::NodeStatus;

/// The page's content type (Prometheus reads OpenMetrics text).
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Renders the page. `extra` is the backend's OpenMetrics text; its `# EOF` line, if any, is
/// dropped and one is written at the end.
pub(crate) fn render(status: &NodeStatus, api: &ApiCounters, extra: &str) -> String {
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, value: u64| {
        let _ = write!(
            out,
            "# TYPE {name} gauge\n# HELP {name} {help}\n{name} {value}\n"
        );
    };
    gauge(
        "mesh_node_uptime_seconds",
        "Seconds since the node started.",
        status.uptime_s,
    );
    gauge(
        "mesh_node_peers",
        "Peers connected now.",
        status.peers as u64,
    );
    if let Some(c) = &status.consensus {
        gauge(
            "mesh_consensus_height",
            "Height of the last executed block.",
            c.height,
        );
        gauge("mesh_consensus_view", "The replica's view.", c.view);
        gauge(
            "mesh_consensus_changing_view",
            "1 while a view change is under way.",
            u64::from(c.changing_view),
        );
        gauge(
            "mesh_consensus_epoch",
            "The validator set's epoch.",
            c.epoch,
        );
        gauge(
            "mesh_consensus_voter",
            "1 if this node votes in the set in force.",
            u64::from(c.voter),
        );
        gauge(
            "mesh_consensus_low_watermark",
            "The last stable checkpoint.",
            c.low_watermark,
        );
        gauge(
            "mesh_consensus_connected_validators",
            "Validators connected, not counting this one.",
            c.connected as u64,
        );
        gauge(
            "mesh_consensus_waiting_clients",
            "Clients waiting for an outcome.",
            c.waiting as u64,
        );
    }
    let mut counter = |name: &str, help: &str, value: u64| {
        let _ = write!(
            out,
            "# TYPE {name} counter\n# HELP {name} {help}\n{name}_total {value}\n"
        );
    };
    if let Some(c) = &status.consensus {
        for item in &c.counters {
            if valid_name(&item.name) {
                counter(
                    &format!("mesh_consensus_{}", item.name),
                    "A consensus counter (see the node's status).",
                    item.value,
                );
            }
        }
    }
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    counter(
        "mesh_api_requests",
        "HTTP requests received.",
        load(&api.requests),
    );
    counter(
        "mesh_api_errors",
        "HTTP requests answered with an error.",
        load(&api.errors),
    );
    counter(
        "mesh_api_busy",
        "Requests refused because the server was busy.",
        load(&api.busy),
    );
    counter(
        "mesh_api_event_streams",
        "WebSocket event streams opened.",
        load(&api.event_streams),
    );
    for line in extra.lines() {
        if line.trim() != "# EOF" {
            out.push_str(line);
            out.push('\n');
        }
    }
    out.push_str("# EOF\n");
    out
}

/// A metric name part: lowercase ASCII letters, digits and underscores.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{ConsensusStatus, Counter};

    #[test]
    fn the_page_has_one_eof_at_the_end_and_counters_end_in_total() {
        let status = NodeStatus {
            peer_id: "p".into(),
            did: "d".into(),
            version: "0".into(),
            uptime_s: 5,
            listen: vec![],
            peers: 3,
            consensus: Some(ConsensusStatus {
                node: "n".into(),
                view: 2,
                changing_view: false,
                primary: "n".into(),
                height: 7,
                head: "00".into(),
                low_watermark: 0,
                epoch: 0,
                voter: true,
                connected: 3,
                waiting: 0,
                counters: vec![
                    Counter {
                        name: "refused_messages".into(),
                        value: 4,
                    },
                    Counter {
                        name: "Bad Name".into(),
                        value: 1,
                    },
                ],
            }),
        };
        let page = render(
            &status,
            &ApiCounters::default(),
            "# TYPE x counter\nx_total 1\n# EOF\n",
        );
        assert!(page.contains("mesh_consensus_height 7\n"));
        assert!(page.contains("mesh_consensus_refused_messages_total 4\n"));
        assert!(!page.contains("Bad Name"));
        assert!(page.contains("x_total 1\n"));
        assert_eq!(page.matches("# EOF").count(), 1);
        assert!(page.ends_with("# EOF\n"));
    }
}
