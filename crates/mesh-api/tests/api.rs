//! The API over real TCP, against an in-memory backend: every route, every error shape,
//! the limits, the token and the event stream.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mesh_api::client::{Client, ClientError};
use mesh_api::types::{
    ConsensusStatus, Counter, Event, Ledger, LedgerBlock, LedgerRequest, NodeStatus, Peer, Receipt,
};
use mesh_api::{ApiError, Backend, Server, ServerConfig};
use tokio::sync::{Notify, broadcast};

struct Fake {
    validator: bool,
    next: AtomicU64,
    events: broadcast::Sender<Event>,
    /// When set, submissions signal `entered` (the request holds its slot) and then wait
    /// for `hold`.
    hold: Option<(Arc<Notify>, Arc<Notify>)>,
}

impl Fake {
    fn new(validator: bool) -> Self {
        Self {
            validator,
            next: AtomicU64::new(1),
            events: broadcast::channel(8).0,
            hold: None,
        }
    }
}

impl Backend for Fake {
    async fn status(&self) -> Result<NodeStatus, ApiError> {
        Ok(NodeStatus {
            peer_id: "12D3KooFake".into(),
            did: "did:key:zFake".into(),
            version: "0.1.0".into(),
            uptime_s: 3,
            listen: vec!["/ip4/127.0.0.1/tcp/1/p2p/12D3KooFake".into()],
            peers: 2,
            consensus: self.validator.then(|| ConsensusStatus {
                node: "aa".into(),
                view: 1,
                changing_view: false,
                primary: "bb".into(),
                height: self.next.load(Ordering::SeqCst) - 1,
                head: "cc".into(),
                low_watermark: 0,
                epoch: 0,
                voter: true,
                connected: 3,
                waiting: 0,
                counters: vec![Counter {
                    name: "refused_messages".into(),
                    value: 9,
                }],
            }),
        })
    }

    async fn members(&self) -> Result<Vec<mesh_api::types::Member>, ApiError> {
        Ok(vec![mesh_api::types::Member {
            peer_id: "12D3KooOther".into(),
            state: "alive".into(),
            incarnation: 2,
        }])
    }

    async fn runs(&self) -> Result<Vec<mesh_api::types::RunInfo>, ApiError> {
        Ok(vec![mesh_api::types::RunInfo {
            id: "0123456789abcdef".into(),
            model: "mlp".into(),
            rounds: 2,
            roles: vec!["trainer".into()],
            height: 3,
            state: "running".into(),
            error: None,
            finished_rounds: Vec::new(),
        }])
    }

    async fn start_run(
        &self,
        run: mesh_api::types::StartRun,
    ) -> Result<mesh_api::types::RunInfo, ApiError> {
        if run.rounds == Some(0) {
            return Err(ApiError::BadRequest("rounds must be 1..=1000".into()));
        }
        Ok(self.runs().await?.remove(0))
    }

    async fn agents(&self) -> Result<Vec<mesh_api::types::AgentInfo>, ApiError> {
        Ok(vec![mesh_api::types::AgentInfo {
            did: "did:key:zAgent".into(),
            name: "alice".into(),
            capabilities: vec!["chat".into()],
            addrs: vec![],
            node: "12D3KooFake".into(),
            issued_ms: 1,
        }])
    }

    async fn peers(&self) -> Result<Vec<Peer>, ApiError> {
        Ok(vec![Peer {
            peer_id: "12D3KooOther".into(),
        }])
    }

    async fn submit(&self, payload: Vec<u8>) -> Result<Receipt, ApiError> {
        if !self.validator {
            return Err(ApiError::NotAValidator);
        }
        if let Some((entered, hold)) = &self.hold {
            entered.notify_one();
            hold.notified().await;
        }
        let height = self.next.fetch_add(1, Ordering::SeqCst);
        let _ = self.events.send(Event::BlockCommitted {
            height,
            view: 1,
            requests: 1,
            executed: 1,
        });
        Ok(Receipt {
            client: "aa".into(),
            id: payload.len() as u64,
            height,
            view: 1,
        })
    }

    async fn ledger(&self, from: u64, limit: usize) -> Result<Ledger, ApiError> {
        if !self.validator {
            return Err(ApiError::NotAValidator);
        }
        let height = self.next.load(Ordering::SeqCst) - 1;
        let blocks = (from..=height)
            .take(limit)
            .map(|h| LedgerBlock {
                height: h,
                view: 1,
                digest: "dd".into(),
                prev: "ee".into(),
                signers: vec![0, 1, 2],
                requests: vec![LedgerRequest {
                    client: "aa".into(),
                    id: h,
                    kind: "app".into(),
                    hex: "6869".into(),
                    text: Some("hi".into()),
                }],
            })
            .collect();
        Ok(Ledger { blocks, height })
    }

    fn events(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    async fn metrics(&self) -> Result<String, ApiError> {
        Ok("# TYPE libp2p_x counter\nlibp2p_x_total 1\n# EOF\n".into())
    }
}

async fn serve(backend: Fake, config: ServerConfig) -> (Server, Client, Arc<Fake>) {
    let listener = mesh_api::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let backend = Arc::new(backend);
    let server = Server::spawn(listener, backend.clone(), config).unwrap();
    let client = Client::new(server.local_addr().to_string()).with_timeout(Duration::from_secs(10));
    (server, client, backend)
}

/// Runs blocking client code off the runtime.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

fn api_code(e: ClientError) -> (u16, String) {
    match e {
        ClientError::Api { status, code, .. } => (status, code),
        other => panic!("expected an API error, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_answer_json_and_submissions_commit() {
    let (server, client, _) = serve(Fake::new(true), ServerConfig::default()).await;
    blocking(move || {
        let status = client.status().unwrap();
        assert_eq!(status.peer_id, "12D3KooFake");
        assert_eq!(status.consensus.as_ref().map(|c| c.height), Some(0));
        assert_eq!(client.peers().unwrap().len(), 1);

        let r = client.submit_text("hello").unwrap();
        assert_eq!((r.height, r.id), (1, 5));
        let r: Receipt = client
            .post(
                "/v1/consensus/requests",
                &serde_json::json!({"hex": "00ff00"}),
            )
            .unwrap();
        assert_eq!((r.height, r.id), (2, 3));

        let ledger = client.ledger(1, 10).unwrap();
        assert_eq!(ledger.height, 2);
        assert_eq!(
            ledger.blocks.iter().map(|b| b.height).collect::<Vec<_>>(),
            [1, 2]
        );
        assert_eq!(client.ledger(2, 10).unwrap().blocks.len(), 1);

        let metrics = client.metrics().unwrap();
        assert!(metrics.contains("mesh_consensus_height 2\n"), "{metrics}");
        assert!(metrics.contains("mesh_consensus_refused_messages_total 9\n"));
        assert!(metrics.contains("libp2p_x_total 1\n"));
        assert!(metrics.contains("mesh_api_requests_total "));
        assert!(metrics.ends_with("# EOF\n"));
        assert_eq!(metrics.matches("# EOF").count(), 1);
    })
    .await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_specific_json_errors() {
    let config = ServerConfig {
        max_body: 1024,
        ..ServerConfig::default()
    };
    let (server, client, _) = serve(Fake::new(true), config).await;
    blocking(move || {
        let post = |body: &str| {
            let r = client
                .request("POST", "/v1/consensus/requests", Some(body.as_bytes()))
                .unwrap();
            let v: serde_json::Value = serde_json::from_slice(&r.body)
                .unwrap_or_else(|_| panic!("not JSON: {:?}", String::from_utf8_lossy(&r.body)));
            (
                r.status,
                v["error"]["code"].as_str().unwrap_or("").to_owned(),
            )
        };
        assert_eq!(post("{not json"), (400, "bad_request".into()));
        assert_eq!(
            post(r#"{"text":"a","extra":1}"#),
            (400, "bad_request".into())
        );
        assert_eq!(
            post(r#"{"text":"a","hex":"00"}"#),
            (400, "bad_request".into())
        );
        assert_eq!(post(r#"{}"#), (400, "bad_request".into()));
        assert_eq!(post(r#"{"hex":"0g"}"#), (400, "bad_request".into()));
        let big = format!(r#"{{"text":"{}"}}"#, "x".repeat(4096));
        assert_eq!(post(&big), (413, "payload_too_large".into()));

        let get = |path: &str| api_code(client.get::<serde_json::Value>(path).unwrap_err());
        assert_eq!(get("/v1/ledger?from=abc"), (400, "bad_request".into()));
        assert_eq!(get("/v1/ledger?from=0"), (400, "bad_request".into()));
        assert_eq!(get("/v1/ledger?limit=0"), (400, "bad_request".into()));
        assert_eq!(get("/v1/ledger?what=1"), (400, "bad_request".into()));
        assert_eq!(get("/v1/nothing"), (404, "not_found".into()));
        // Not a WebSocket upgrade.
        assert_eq!(get("/v1/events"), (400, "bad_request".into()));

        let r = client.request("DELETE", "/v1/status", None).unwrap();
        assert_eq!(r.status, 405);
        assert!(String::from_utf8_lossy(&r.body).contains("method_not_allowed"));
    })
    .await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_peer_says_it_is_not_a_validator() {
    let (server, client, _) = serve(Fake::new(false), ServerConfig::default()).await;
    blocking(move || {
        assert!(client.status().unwrap().consensus.is_none());
        assert_eq!(
            api_code(client.submit_text("x").unwrap_err()),
            (409, "not_a_validator".into())
        );
        assert_eq!(
            api_code(client.ledger(1, 1).unwrap_err()),
            (409, "not_a_validator".into())
        );
    })
    .await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_required_when_configured() {
    let config = ServerConfig {
        token: Some("s3cret".into()),
        ..ServerConfig::default()
    };
    let (server, client, _) = serve(Fake::new(true), config).await;
    blocking(move || {
        assert_eq!(
            api_code(client.status().unwrap_err()),
            (401, "unauthorized".into())
        );
        let wrong = client.clone().with_token("s3creT");
        assert_eq!(
            api_code(wrong.status().unwrap_err()),
            (401, "unauthorized".into())
        );
        assert_eq!(
            api_code(client.events().unwrap_err()),
            (401, "unauthorized".into())
        );
        let right = client.with_token("s3cret");
        assert!(right.status().is_ok());
        assert!(right.metrics().is_ok());
    })
    .await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_routes_on_a_node_answer_with_the_registry_or_not_an_agent() {
    let (server, client, _) = serve(Fake::new(true), ServerConfig::default()).await;
    blocking(move || {
        assert_eq!(client.members().unwrap()[0].incarnation, 2);
        let agents = client.agents().unwrap();
        assert_eq!(agents.len(), 1);
        assert_eq!(agents[0].name, "alice");
        assert_eq!(
            api_code(client.send_message("did:key:zAgent", "hi").unwrap_err()),
            (409, "not_an_agent".into())
        );
        assert_eq!(
            api_code(
                client
                    .messages(mesh_api::types::MessageBox::Inbox, 0, 10)
                    .unwrap_err()
            ),
            (409, "not_an_agent".into())
        );
        let r = client
            .request(
                "POST",
                "/v1/messages",
                Some(br#"{"to":"x","text":"y","cc":"z"}"#),
            )
            .unwrap();
        assert_eq!(r.status, 400);
        let r = client
            .request("GET", "/v1/messages?box=sideways", None)
            .unwrap();
        assert_eq!(r.status, 400);
    })
    .await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_describes_routes_the_server_answers() {
    let (server, client, _) = serve(Fake::new(true), ServerConfig::default()).await;
    blocking(move || {
        let doc: serde_json::Value = client.get("/v1/openapi.json").unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let paths = doc["paths"].as_object().unwrap();
        assert!(paths.len() >= 7);
        for (path, item) in paths {
            // Path parameters take a value the fake knows.
            let path = path.replace("{id}", "01234567");
            let path = path.as_str();
            for method in item.as_object().unwrap().keys() {
                let body: &[u8] = if path.starts_with("/v1/learning") {
                    br#"{"rounds":2}"#
                } else {
                    br#"{"text":"x"}"#
                };
                let r = client
                    .request(&method.to_ascii_uppercase(), path, Some(body))
                    .unwrap();
                assert_ne!(
                    r.status, 404,
                    "{method} {path} is documented but not served"
                );
                assert_ne!(
                    r.status, 405,
                    "{method} {path} is documented but not served"
                );
            }
        }
    })
    .await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_stream_in_order_and_a_slow_subscriber_is_told_what_it_missed() {
    let (server, client, backend) = serve(Fake::new(true), ServerConfig::default()).await;
    let c = client.clone();
    let mut stream = blocking(move || c.events().unwrap()).await;
    // The subscription exists once the upgrade is answered.
    for h in 1..=3 {
        backend
            .events
            .send(Event::PeerUp {
                peer_id: format!("p{h}"),
            })
            .unwrap();
    }
    let (stream, first) = blocking(move || {
        let got: Vec<Event> = (0..3)
            .map(|_| stream.next_event().unwrap().unwrap())
            .collect();
        (stream, got)
    })
    .await;
    assert_eq!(
        first,
        (1..=3)
            .map(|h| Event::PeerUp {
                peer_id: format!("p{h}")
            })
            .collect::<Vec<_>>()
    );
    // The fake's channel holds 8: sending 20 at once overflows this subscriber's queue.
    for h in 0..20u64 {
        let _ = backend.events.send(Event::BlockCommitted {
            height: h,
            view: 0,
            requests: 0,
            executed: 0,
        });
    }
    let mut stream = stream;
    let next = blocking(move || stream.next_event().unwrap().unwrap()).await;
    assert_eq!(next, Event::Lagged { missed: 12 });
    // Shutdown ends the stream instead of waiting for the subscriber.
    tokio::time::timeout(Duration::from_secs(10), server.shutdown())
        .await
        .expect("shutdown with an open event stream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_the_concurrency_limit_are_refused_as_busy() {
    let (entered, hold) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let mut fake = Fake::new(true);
    fake.hold = Some((entered.clone(), hold.clone()));
    let config = ServerConfig {
        max_concurrent: 1,
        ..ServerConfig::default()
    };
    let (server, client, _) = serve(fake, config).await;
    let c = client.clone();
    let first = tokio::task::spawn_blocking(move || c.submit_text("wait"));
    // Once the first submission is inside the backend, it holds the only slot.
    tokio::time::timeout(Duration::from_secs(30), entered.notified())
        .await
        .expect("the first submission reaches the backend");
    let c = client.clone();
    let refused = blocking(move || c.status()).await.map_err(api_code).err();
    assert_eq!(refused, Some((503, "busy".into())));
    hold.notify_one();
    assert!(first.await.unwrap().is_ok());
    server.shutdown().await;
}

#[tokio::test]
async fn a_port_in_use_is_named() {
    let taken = mesh_api::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = taken.local_addr().unwrap();
    match mesh_api::bind(addr) {
        Err(mesh_api::BindError::InUse { addr: a }) => assert_eq!(a, addr),
        other => panic!("expected InUse, got {other:?}"),
    }
}
