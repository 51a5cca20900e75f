//! The node's membership: `mesh_fault::membership` (SWIM with Lifeguard's refinements) over
//! the transport.
//!
//! Every node runs one [`Membership`] seeded with the other members of its genesis and its
//! bootstrap peers. Its messages travel as requests on [`PROTOCOL`] (answered at once and
//! empty: SWIM's acknowledgements are messages of their own). Claims are signed with the
//! node's Ed25519 key and checked against the claimed node's key, so no peer can speak for
//! another. The incarnation is kept in the data directory ([`INCARNATION_FILE`]) and raised
//! at every start, so a restarted node's claims supersede the ones it made before.
//!
//! A suspected or dead member is reported to the consensus driver, which replaces it at once
//! if it is the primary and the replica is waiting for it.
//!
//! Changes go to the API's event stream (`member` events) and the view to
//! `GET /v1/members`. Two alert rules (`mesh_fault::health`) watch the view: `peer-suspected`
//! (a member suspected for 5 s) and `peer-down` (a member declared dead); they fire and
//! resolve as `alert` events on the stream and in the log.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use mesh_crypto::ed25519::{Signature, SigningKey, VerifyingKey};
use mesh_fault::health::{Alerts, Condition, Rule};
use mesh_fault::membership::{self, Membership, State};
use mesh_transport::{InboundRequest, Transport};
use mesh_types::NodeId;
use tokio::sync::{broadcast, mpsc, watch};

use crate::consensus::{self, Clock};

/// The request protocol membership messages travel on.
pub const PROTOCOL: &str = "mesh/swim";
/// The file holding the last incarnation, in the data directory.
pub const INCARNATION_FILE: &str = "incarnation";
/// Membership messages waiting for the membership task; more are dropped (SWIM tolerates
/// loss).
pub(crate) const QUEUE: usize = 1024;

struct Ed25519Signer(SigningKey);

impl membership::Signer for Ed25519Signer {
    fn sign(&self, payload: &[u8]) -> Vec<u8> {
        self.0.sign(payload).0.to_vec()
    }
}

struct Ed25519Verifier;

impl membership::Verifier for Ed25519Verifier {
    fn verify(&self, signer: &NodeId, payload: &[u8], signature: &[u8]) -> bool {
        let Ok(sig) = <[u8; 64]>::try_from(signature) else {
            return false;
        };
        VerifyingKey::from_bytes(&signer.0)
            .and_then(|k| k.verify(payload, &Signature(sig)))
            .is_ok()
    }
}

/// One member as `GET /v1/members` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct View {
    pub(crate) state: &'static str,
    pub(crate) incarnation: u64,
}

/// The view the API reads.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub(crate) members: RwLock<BTreeMap<String, View>>,
}

fn state_name(s: State) -> &'static str {
    match s {
        State::Alive => "alive",
        State::Suspect => "suspected",
        State::Dead => "dead",
        State::Left => "left",
    }
}

/// Reads the last incarnation and stores the next one; 0 for a new node.
pub(crate) fn next_incarnation(data_dir: &Path) -> crate::Result<u64> {
    let path = data_dir.join(INCARNATION_FILE);
    let last = match std::fs::read_to_string(&path) {
        Ok(t) => Some(t.trim().parse::<u64>().map_err(|e| crate::Error::DataDir {
            path: path.clone(),
            op: "read the membership incarnation",
            detail: e.to_string(),
        })?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(crate::Error::DataDir {
                path,
                op: "read the membership incarnation",
                detail: e.to_string(),
            });
        }
    };
    let next = last.map_or(0, |l| l.saturating_add(1));
    super::write_replacing(&path, next.to_string().as_bytes())?;
    Ok(next)
}

/// Records `incarnation` as the last one used (the next start goes above it).
fn persist(data_dir: &Path, incarnation: u64) {
    let path = data_dir.join(INCARNATION_FILE);
    if let Err(e) = super::write_replacing(&path, incarnation.to_string().as_bytes()) {
        tracing::warn!(error = %e, "cannot record the membership incarnation");
    }
}

/// Runs the membership of `me` until `stop`; `requests` are the inbound [`PROTOCOL`]
/// requests the node loop passes on.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run(
    data_dir: std::path::PathBuf,
    transport: Transport,
    key: SigningKey,
    incarnation: u64,
    seeds: Vec<NodeId>,
    mut requests: mpsc::Receiver<InboundRequest>,
    shared: Arc<Shared>,
    events: broadcast::Sender<mesh_api::types::Event>,
    consensus: Option<consensus::Handle>,
    webhook: Option<String>,
    mut stop: watch::Receiver<bool>,
) {
    let webhook = webhook.and_then(|w| super::config::parse_webhook(&w).ok());
    let posting = Arc::new(tokio::sync::Semaphore::new(WEBHOOK_IN_FLIGHT));
    let me = NodeId(key.verifying_key().to_bytes());
    let clock = Clock::start();
    let config = membership::Config {
        initial_incarnation: incarnation,
        ..membership::Config::default()
    };
    let seed = u64::from_le_bytes(me.0[..8].try_into().unwrap_or([0; 8])) ^ incarnation;
    let mut core = match Membership::new(
        me,
        config,
        seed,
        Box::new(Ed25519Signer(key)),
        Box::new(Ed25519Verifier),
        clock.now(),
    ) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "membership cannot start");
            return;
        }
    };
    for s in seeds.into_iter().filter(|s| *s != me) {
        core.add_seed(s, clock.now());
    }
    let mut alerts = match alert_rules() {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(error = %e, "membership alerts cannot start");
            return;
        }
    };
    loop {
        // Outputs first: messages to send, then view changes.
        while let Some(t) = core.poll_transmit() {
            let Ok(peer) = consensus::peer_id(&t.to) else {
                continue;
            };
            let transport = transport.clone();
            let bytes = t.message.encode();
            tokio::spawn(async move {
                // Lost or refused messages are SWIM's normal weather: nothing to do.
                let _ = transport.request(peer, PROTOCOL, bytes).await;
            });
        }
        let mut changed = false;
        while let Some(e) = core.poll_event() {
            changed = true;
            match e {
                membership::Event::Accused { incarnation, .. } => persist(&data_dir, incarnation),
                // Consensus replaces a suspected primary it waits for without waiting for its
                // own timers.
                membership::Event::Suspected { member, .. }
                | membership::Event::Down { member, .. } => {
                    if let Some(c) = &consensus {
                        c.suspect(member);
                    }
                }
                _ => {}
            }
            publish(&e, &events);
        }
        if changed {
            let view: BTreeMap<String, View> = core
                .members()
                .map(|m| {
                    let peer = consensus::peer_id(&m.id)
                        .map_or_else(|_| m.id.to_string(), |p| p.to_string());
                    (
                        peer,
                        View {
                            state: state_name(m.state),
                            incarnation: m.incarnation,
                        },
                    )
                })
                .collect();
            let count = |state: &str| view.values().filter(|v| v.state == state).count() as f64;
            alerts.observe("suspected_members", count("suspected"), clock.now());
            alerts.observe("dead_members", count("dead"), clock.now());
            *shared.members.write().unwrap_or_else(|p| p.into_inner()) = view;
        }
        while let Some(a) = alerts.poll_event() {
            let state = if a.fired { "fired" } else { "resolved" };
            tracing::warn!(alert = %a.rule, state, value = a.value, "alert");
            if let Some((addr, path)) = &webhook {
                post_alert(addr, path, &posting, me, &a.rule, state, a.value);
            }
            let _ = events.send(mesh_api::types::Event::Alert {
                name: a.rule,
                state: state.to_owned(),
                value: a.value,
            });
        }
        let deadline = [core.poll_timeout(), alerts.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
            .map(|t| clock.deadline(t));
        tokio::select! {
            r = requests.recv() => match r {
                Some(request) => {
                    let from = consensus::node_id(&request.peer);
                    let _ = transport.respond(request.token, Ok(Vec::new())).await;
                    if let Some(from) = from
                        && let Err(e) = core.handle_bytes(from, &request.data, clock.now())
                    {
                        tracing::debug!(error = %e, "membership message refused");
                    }
                }
                None => break,
            },
            () = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            } => {
                core.handle_timeout(clock.now());
                alerts.handle_timeout(clock.now());
            }
            _ = stop.changed() => break,
        }
    }
    // A graceful stop tells the others at once instead of letting them time out; the node
    // waits for this before it closes the transport.
    core.leave();
    persist(&data_dir, core.incarnation());
    let mut sends = Vec::new();
    while let Some(t) = core.poll_transmit() {
        if let Ok(peer) = consensus::peer_id(&t.to) {
            let transport = transport.clone();
            let bytes = t.message.encode();
            sends.push(tokio::spawn(async move {
                let _ = tokio::time::timeout(
                    std::time::Duration::from_millis(500),
                    transport.request(peer, PROTOCOL, bytes),
                )
                .await;
            }));
        }
    }
    for s in sends {
        let _ = s.await;
    }
}

/// Webhook posts in flight at once; alerts beyond it are not posted (they stay on the event
/// stream and in the log).
const WEBHOOK_IN_FLIGHT: usize = 4;

/// Posts one alert to the webhook at `addr` `path` as JSON, in the background.
fn post_alert(
    addr: &str,
    path: &str,
    posting: &Arc<tokio::sync::Semaphore>,
    me: NodeId,
    name: &str,
    state: &str,
    value: f64,
) {
    let Ok(permit) = posting.clone().try_acquire_owned() else {
        tracing::warn!(alert = %name, "alert webhook busy: not posted");
        return;
    };
    let node = consensus::peer_id(&me).map_or_else(|_| me.to_string(), |p| p.to_string());
    let body = serde_json::json!({ "alert": name, "state": state, "value": value, "node": node })
        .to_string();
    let client = mesh_api::client::Client::new(addr.to_owned())
        .with_timeout(std::time::Duration::from_secs(5));
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        match client.request("POST", &path, Some(body.as_bytes())) {
            Ok(r) if r.status < 300 => {}
            Ok(r) => tracing::warn!(status = r.status, "the alert webhook refused an alert"),
            Err(e) => tracing::warn!(error = %e, "cannot post an alert to the webhook"),
        }
        drop(permit);
    });
}

/// The node's membership alerts: a peer suspected for 5 s, a peer declared dead.
fn alert_rules() -> mesh_fault::Result<Alerts> {
    let at_least_one = Condition::Above {
        fire: 1.0,
        clear: 1.0,
    };
    Alerts::new(
        vec![
            Rule::new("peer-suspected", "suspected_members", at_least_one)
                .fire_after(std::time::Duration::from_secs(5)),
            Rule::new("peer-down", "dead_members", at_least_one),
        ],
        64,
    )
}

fn publish(e: &membership::Event, events: &broadcast::Sender<mesh_api::types::Event>) {
    use membership::Event as E;
    let (member, state, incarnation) = match *e {
        E::Up {
            member,
            incarnation,
        } => (member, "alive", incarnation),
        E::Suspected {
            member,
            incarnation,
            ..
        } => (member, "suspected", incarnation),
        E::Refuted {
            member,
            incarnation,
        } => (member, "alive", incarnation),
        E::Down {
            member,
            incarnation,
            ..
        } => (member, "dead", incarnation),
        E::Left {
            member,
            incarnation,
        } => (member, "left", incarnation),
        E::Accused {
            accuser,
            incarnation,
        } => {
            tracing::info!(%accuser, incarnation, "suspected by a peer: refuted");
            return;
        }
    };
    let peer = consensus::peer_id(&member).map_or_else(|_| member.to_string(), |p| p.to_string());
    tracing::info!(%peer, state, incarnation, "membership");
    let _ = events.send(mesh_api::types::Event::Member {
        peer_id: peer,
        state: state.to_owned(),
        incarnation,
    });
}
