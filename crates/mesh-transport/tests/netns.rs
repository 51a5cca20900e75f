//! NAT traversal across Linux network namespaces: a peer behind a NAT (a namespace routing with
//! iptables masquerade) is reached through a relay, and DCUtR upgrades the connection to a direct
//! one where the NAT allows it.
//!
//! The test builds this network with `ip netns`, veth pairs and a bridge, and removes it
//! afterwards (also when it fails):
//!
//! ```text
//!   relay  10.77.0.1   ─┐
//!   NAT A  10.77.0.253 ─┼─ bridge: the public segment 10.77.0.0/24
//!   NAT B  10.77.0.254 ─┘
//!   NAT A  10.77.2.1   ─── A 10.77.2.2: A's private segment, default route via NAT A
//!   NAT B  10.77.1.1   ─── B 10.77.1.2: B's private segment, default route via NAT B
//! ```
//!
//! Each NAT namespace forwards, masquerades whatever leaves on its public leg (Linux keeps the
//! source port when it can) and drops unsolicited packets arriving there, as home routers do.
//! Nothing on the public segment has a route to a private one.
//!
//! Why A sits behind a NAT too: with A on the public segment, the hole punch races. DCUtR over
//! TCP needs a simultaneous open (B dials in the listener role, A as the dialer); when B's SYN
//! reaches A before A's own dial has left, A's listening socket accepts it, both ends then act
//! as Noise responders, and the attempt times out after 10 s. Measured on the project's 2-core
//! machine: 14 of 43 attempts timed out, and 3 runs in 32 failed even after DCUtR's three
//! attempts. With both peers behind NATs that drop unsolicited packets, a SYN can only ever
//! meet the other side's dialling socket, and the upgrade succeeded on the first attempt in
//! every run (over 60, some three at once).
//!
//! Every node is a separate OS process inside its own namespace: the test re-executes this test
//! binary through `ip netns exec`, running only [`netns_child_process`] with environment
//! variables naming its role. That test does nothing in a normal run. A child prints `NETNS ...`
//! lines on stdout (its events and the results of commands) and reads commands on stdin; it
//! exits when stdin closes, and the test kills it on every path anyway.
//!
//! The test runs in two phases:
//!
//! 1. B's NAT forbids direct traffic to A (a `REJECT` rule): B cannot be dialled from outside its
//!    NAT, A reaches B through the relay, a request crosses the circuit, and DCUtR gives up.
//! 2. A restarts and the rule is gone (plain masquerade): A reaches B through the relay again,
//!    DCUtR upgrades to a direct connection (the kernel shows A's TCP connection to B's NAT),
//!    the relay is killed, and requests still flow both ways.
//!
//! It needs CAP_NET_ADMIN (root): without it, it prints a loud SKIPPED banner and passes. With
//! it, a missing `ip` or `iptables` is a failure: `cargo xtask deps` installs them.

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::print_stderr
)]

use std::io::{BufRead as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, sync_channel};
use std::time::{Duration, Instant};

use mesh_transport::{Config, Event, Multiaddr, PeerId, Transport, keypair_from_seed};
use tokio::sync::mpsc;

/// The role of a child process; unset in a normal run.
const ENV_ROLE: &str = "AGENTMESH_NETNS_ROLE";
/// The child's key seed (one byte, repeated).
const ENV_SEED: &str = "AGENTMESH_NETNS_SEED";
/// The child's listen address.
const ENV_LISTEN: &str = "AGENTMESH_NETNS_LISTEN";
/// The name of the test a child process runs.
const CHILD_TEST: &str = "netns_child_process";
/// Marks the machine-readable lines of a child's stdout.
const MARK: &str = "NETNS ";
/// Prefix of the namespaces this test creates: `amnt<pid><role letter>`.
const NS_PREFIX: &str = "amnt";

const RELAY_IP: &str = "10.77.0.1";
const NAT_A_PUBLIC_IP: &str = "10.77.0.253";
const NAT_A_PRIVATE_IP: &str = "10.77.2.1";
const A_IP: &str = "10.77.2.2";
const NAT_B_PUBLIC_IP: &str = "10.77.0.254";
const NAT_B_PRIVATE_IP: &str = "10.77.1.1";
const B_IP: &str = "10.77.1.2";
/// Namespaces: s the switch (a bridge), r the relay, m A's NAT, a peer A, n B's NAT, b peer B.
const ROLES: [char; 6] = ['s', 'r', 'm', 'a', 'n', 'b'];
/// The rule of phase 1 (FORWARD chain of B's NAT): B's TCP packets to A's NAT are refused.
const FORBID_DIRECT: &[&str] = &[
    "-i",
    "eth1",
    "-o",
    "eth0",
    "-d",
    NAT_A_PUBLIC_IP,
    "-p",
    "tcp",
    "-j",
    "REJECT",
    "--reject-with",
    "tcp-reset",
];

#[allow(clippy::disallowed_methods)] // a test's deadlines and timings
fn now() -> Instant {
    Instant::now()
}

// ---------------------------------------------------------------------------------------------
// The child process: one node.
// ---------------------------------------------------------------------------------------------

/// One node of the netns test when run as a child process (see the module docs); in a normal
/// test run, when `AGENTMESH_NETNS_ROLE` is unset, it does nothing and passes.
#[test]
fn netns_child_process() {
    let Ok(role) = std::env::var(ENV_ROLE) else {
        return;
    };
    let seed: u8 = std::env::var(ENV_SEED).unwrap().parse().unwrap();
    let listen: Multiaddr = std::env::var(ENV_LISTEN).unwrap().parse().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(child_node(&role, seed, listen));
}

/// Prints one machine-readable line (stdout is line-buffered, so it leaves at once).
fn say(line: impl AsRef<str>) {
    let line = line.as_ref().replace('\n', " ");
    println!("{MARK}{line}");
}

async fn child_node(role: &str, seed: u8, listen: Multiaddr) {
    let mut config = Config::default();
    config.listen = vec![listen];
    config.mdns = false;
    config.protocols = vec!["echo".into()];
    config.request_timeout = Duration::from_secs(5);
    if role == "relay" {
        config.relay_server = true;
        config.listen_addrs_are_external = true;
    }
    let (transport, mut events) =
        Transport::spawn(keypair_from_seed(&[seed; 32]).unwrap(), config).unwrap();
    say(format!("PEER_ID {}", transport.peer_id()));
    // Commands arrive on stdin; a closed stdin (the test went away) ends the node.
    let (tx, mut commands) = mpsc::channel::<String>(16);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(event) => child_event(&transport, event).await,
                None => break,
            },
            command = commands.recv() => match command {
                Some(line) if line.trim() == "quit" => break,
                Some(line) => child_command(&transport, &line),
                None => break,
            },
        }
    }
    let _ = transport.shutdown().await;
}

async fn child_event(transport: &Transport, event: Event) {
    match event {
        Event::Request(req) if req.protocol == "echo" => {
            let _ = transport.respond(req.token, Ok(req.data)).await;
        }
        Event::Listening { addr } => say(format!("LISTENING {addr}")),
        Event::PeerConnected { peer, addr } => say(format!("CONNECTED {peer} {addr}")),
        Event::PeerDisconnected { peer } => say(format!("DISCONNECTED {peer}")),
        Event::Identified { peer, .. } => say(format!("IDENTIFIED {peer}")),
        Event::DialFailed { peer, error } => {
            let peer = peer.map_or_else(|| "-".to_owned(), |p| p.to_string());
            say(format!("DIAL_FAILED {peer} {error}"));
        }
        Event::HolePunch { peer, result } => match result {
            Ok(addr) => say(format!("HOLEPUNCH {peer} ok {addr}")),
            Err(error) => say(format!("HOLEPUNCH {peer} err {error}")),
        },
        _ => {}
    }
}

/// Runs `<command> <id> <args>`; the result is printed as `R <id> ok <data>` or
/// `R <id> err <error>`. Commands: `dial <addr>`, `listen <addr>`, `request <peer> <text>`.
fn child_command(transport: &Transport, line: &str) {
    let mut words = line.split_whitespace();
    let (Some(command), Some(id)) = (words.next(), words.next()) else {
        say(format!("BAD_COMMAND {line}"));
        return;
    };
    let (command, id) = (command.to_owned(), id.to_owned());
    let args: Vec<String> = words.map(str::to_owned).collect();
    let transport = transport.clone();
    tokio::spawn(async move {
        let result: Result<String, String> = match (command.as_str(), args.as_slice()) {
            ("dial", [addr]) => match addr.parse::<Multiaddr>() {
                Ok(addr) => transport.dial(addr).await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            }
            .map(|()| String::new()),
            ("listen", [addr]) => match addr.parse::<Multiaddr>() {
                Ok(addr) => transport.listen(addr).await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            }
            .map(|()| String::new()),
            ("request", [peer, text]) => match peer.parse::<PeerId>() {
                Ok(peer) => transport
                    .request(peer, "echo", text.clone().into_bytes())
                    .await
                    .map(|data| String::from_utf8_lossy(&data).into_owned())
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            },
            _ => Err(format!("unknown command {command:?} {args:?}")),
        };
        match result {
            Ok(data) => say(format!("R {id} ok {data}")),
            Err(error) => say(format!("R {id} err {error}")),
        }
    });
}

// ---------------------------------------------------------------------------------------------
// The test: namespaces, processes, and what they must show.
// ---------------------------------------------------------------------------------------------

#[test]
fn a_peer_behind_a_nat_is_reached_through_a_relay_and_upgraded_to_direct() {
    let started = now();
    let Some(tools) = preflight() else { return };
    let Some(lab) = Lab::create(tools) else {
        return;
    };
    lab.build_topology();
    eprintln!(
        "netns: topology up in {:.1}s (namespaces {:?})",
        started.elapsed().as_secs_f64(),
        lab.namespaces
    );

    // ---- Phase 1: B's NAT forbids direct traffic; only the relay connects A and B. ----
    lab.iptables('n', &[&["-A", "FORWARD"], FORBID_DIRECT].concat());
    let mut relay = Proc::spawn(
        &lab,
        'r',
        "relay",
        "relay",
        90,
        &format!("/ip4/{RELAY_IP}/tcp/0"),
    );
    let mut a = Proc::spawn(&lab, 'a', "A", "peer", 91, &format!("/ip4/{A_IP}/tcp/0"));
    let mut b = Proc::spawn(&lab, 'b', "B", "peer", 92, &format!("/ip4/{B_IP}/tcp/0"));
    let relay_addr = relay.listening(|l| l.contains(RELAY_IP));
    let relay_full = format!("{relay_addr}/p2p/{}", relay.peer_id);
    a.listening(|l| l.contains(A_IP));
    let b_addr = b.listening(|l| l.contains(B_IP));
    let b_port = tcp_port(&b_addr);
    let (a_id, b_id) = (a.peer_id.clone(), b.peer_id.clone());

    // B cannot be dialled from outside its NAT: its own address has no route there ...
    let mark = a.lines.len();
    a.call("dial", &format!("{b_addr}/p2p/{b_id}"), 10).unwrap();
    let failed = a.wait_from(mark, 10, "A's dial to B's private address to fail", |l| {
        l.starts_with(&format!("DIAL_FAILED {b_id}")) || l.starts_with(&format!("CONNECTED {b_id}"))
    });
    assert!(
        failed.starts_with("DIAL_FAILED"),
        "A reached B's private address: {failed}"
    );
    eprintln!("netns: as expected, A cannot dial B's private address: {failed}");
    // ... and its NAT's public address admits nothing B did not ask for (the NAT drops it, so
    // the dial hangs until it times out: watch it for a while).
    let mark = a.lines.len();
    a.call(
        "dial",
        &format!("/ip4/{NAT_B_PUBLIC_IP}/tcp/{b_port}/p2p/{b_id}"),
        10,
    )
    .unwrap();
    let seen = a.poll_for(mark, 2, |l| {
        l.starts_with(&format!("DIAL_FAILED {b_id}")) || l.starts_with(&format!("CONNECTED {b_id}"))
    });
    assert!(
        seen.as_deref().is_none_or(|l| l.starts_with("DIAL_FAILED")),
        "A reached B through its NAT's public address unasked: {seen:?}"
    );
    eprintln!(
        "netns: as expected, A cannot dial B's NAT at B's port: {}",
        seen.as_deref().unwrap_or("no answer within 2s")
    );

    // B joins the relay (identify tells it its address as the relay sees it, which DCUtR needs)
    // and reserves a circuit.
    let mark = b.lines.len();
    b.call("dial", &relay_full, 10).unwrap();
    b.wait_from(mark, 10, "B identified the relay", |l| {
        l == format!("IDENTIFIED {}", relay.peer_id)
    });
    let mark = b.lines.len();
    b.call("listen", &format!("{relay_full}/p2p-circuit"), 10)
        .unwrap();
    b.wait_from(mark, 10, "B's circuit reservation", |l| {
        l.starts_with("LISTENING") && l.contains("/p2p-circuit")
    });

    connect_through_relay(&mut a, &relay_full, &relay.peer_id, &b_id);
    // No direct path exists in this phase (B's NAT rejects B's packets to A's NAT, so it never
    // maps a port A could reach), so this answer crossed the relay.
    let echoed = a.call("request", &format!("{b_id} through-the-relay"), 10);
    assert_eq!(
        echoed.as_deref(),
        Ok("through-the-relay"),
        "request A -> B over the circuit"
    );
    let punch = b.wait_from(0, 20, "B's hole punch to give up", |l| {
        l.starts_with(&format!("HOLEPUNCH {a_id}"))
    });
    assert!(
        punch.contains(" err "),
        "B's NAT forbids direct traffic, yet DCUtR reports: {punch}"
    );
    eprintln!(
        "netns: phase 1 done at {:.1}s: reached through the relay; where B's NAT forbids \
         direct traffic, DCUtR gives up: {punch}",
        started.elapsed().as_secs_f64()
    );

    // ---- Phase 2: plain masquerade; DCUtR upgrades to a direct connection. ----
    let mark = b.lines.len();
    drop(a);
    b.wait_from(mark, 10, "B to see A leave", |l| {
        l == format!("DISCONNECTED {a_id}")
    });
    lab.iptables('n', &[&["-D", "FORWARD"], FORBID_DIRECT].concat());
    let mut a = Proc::spawn(&lab, 'a', "A", "peer", 91, &format!("/ip4/{A_IP}/tcp/0"));
    a.listening(|l| l.contains(A_IP));
    let b_mark = b.lines.len();
    connect_through_relay(&mut a, &relay_full, &relay.peer_id, &b_id);
    let echoed = a.call("request", &format!("{b_id} relayed-or-direct"), 10);
    assert_eq!(echoed.as_deref(), Ok("relayed-or-direct"), "request A -> B");

    let (who, punch) = wait_either(
        (&mut a, 0),
        (&mut b, b_mark),
        30,
        "a successful hole punch",
        |l| l.starts_with("HOLEPUNCH ") && l.contains(" ok "),
    );
    eprintln!(
        "netns: DCUtR upgraded to direct at {:.1}s ({who} reports: {punch})",
        started.elapsed().as_secs_f64()
    );
    // What the kernel says: A holds an established TCP connection to B's NAT, which can only be
    // B's direct connection (the relay is at its own address).
    let sockets = lab.output(&[
        "netns",
        "exec",
        &lab.ns('a'),
        "ss",
        "-tn",
        "state",
        "established",
    ]);
    eprintln!("netns: A's established TCP connections:\n{sockets}");
    assert!(
        sockets.contains(&format!("{NAT_B_PUBLIC_IP}:")),
        "A has no TCP connection to B's NAT"
    );

    // The relay goes away; the direct connection carries on.
    let a_mark = a.lines.len();
    let relay_id = relay.peer_id.clone();
    drop(relay);
    a.wait_from(a_mark, 10, "A to see the relay gone", |l| {
        l == format!("DISCONNECTED {relay_id}")
    });
    let a_to_b = request_with_retries(&mut a, &b_id, "direct-a-to-b");
    let b_to_a = request_with_retries(&mut b, &a_id, "direct-b-to-a");
    assert_eq!(
        a_to_b.as_deref(),
        Ok("direct-a-to-b"),
        "A -> B without the relay"
    );
    assert_eq!(
        b_to_a.as_deref(),
        Ok("direct-b-to-a"),
        "B -> A without the relay"
    );
    // The connection survived (it is the one DCUtR made: A could not have made a new one).
    let reconnects: Vec<&String> = a.lines[a_mark..]
        .iter()
        .filter(|l| {
            l.starts_with(&format!("DISCONNECTED {b_id}"))
                || l.starts_with(&format!("CONNECTED {b_id}"))
        })
        .collect();
    assert!(
        reconnects.is_empty(),
        "A's connection to B changed: {reconnects:?}"
    );
    eprintln!(
        "netns: passed in {:.1}s: relay killed, requests flow both ways over the direct connection",
        started.elapsed().as_secs_f64()
    );
}

/// A connects to the relay (and waits until identify has told it its address, which DCUtR
/// sends to B), then dials B through the circuit; the first connection must be the circuit.
fn connect_through_relay(a: &mut Proc, relay_full: &str, relay_id: &str, b_id: &str) {
    let mark = a.lines.len();
    a.call("dial", relay_full, 10).unwrap();
    a.wait_from(mark, 10, "A identified the relay", |l| {
        l == format!("IDENTIFIED {relay_id}")
    });
    let mark = a.lines.len();
    a.call("dial", &format!("{relay_full}/p2p-circuit/p2p/{b_id}"), 10)
        .unwrap();
    let connected = a.wait_from(mark, 10, "A connected to B", |l| {
        l.starts_with(&format!("CONNECTED {b_id}"))
    });
    assert!(
        connected.contains("/p2p-circuit"),
        "A's first connection to B is not the circuit: {connected}"
    );
}

/// A request that may land on a relayed connection still closing: retried for a few seconds.
/// With the relay dead, any answer came over a direct connection.
fn request_with_retries(from: &mut Proc, to: &str, text: &str) -> Result<String, String> {
    let deadline = now() + Duration::from_secs(8);
    loop {
        let r = from.call("request", &format!("{to} {text}"), 10);
        if r.is_ok() || now() >= deadline {
            return r;
        }
        eprintln!("netns: request from {} failed, retrying: {r:?}", from.name);
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The port of a `/ip4/.../tcp/<port>` address.
fn tcp_port(addr: &str) -> u16 {
    let addr: Multiaddr = addr.parse().unwrap();
    addr.iter()
        .find_map(|p| match p {
            mesh_transport::multiaddr::Protocol::Tcp(port) => Some(port),
            _ => None,
        })
        .unwrap()
}

/// Waits until a line from either process matches; returns whose and the line.
fn wait_either(
    (x, x_from): (&mut Proc, usize),
    (y, y_from): (&mut Proc, usize),
    secs: u64,
    what: &str,
    pred: impl Fn(&str) -> bool,
) -> (String, String) {
    let deadline = now() + Duration::from_secs(secs);
    loop {
        for (p, from) in [(&*x, x_from), (&*y, y_from)] {
            if let Some(l) = p.lines[from.min(p.lines.len())..].iter().find(|l| pred(l)) {
                return (p.name.clone(), l.clone());
            }
        }
        if now() >= deadline {
            let relevant: Vec<&String> = x
                .lines
                .iter()
                .chain(&y.lines)
                .filter(|l| l.starts_with("HOLEPUNCH"))
                .collect();
            panic!("no {what} within {secs}s; hole punch reports: {relevant:?}");
        }
        x.pump(Duration::from_millis(50));
        y.pump(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------------
// Child processes.
// ---------------------------------------------------------------------------------------------

/// A node running in its namespace. Dropping it kills the process and waits for it.
struct Proc {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    rx: Receiver<String>,
    /// Every machine-readable line so far, without the mark.
    lines: Vec<String>,
    exited: bool,
    next_id: u64,
    peer_id: String,
}

impl Proc {
    fn spawn(lab: &Lab, ns: char, name: &str, role: &str, seed: u8, listen: &str) -> Self {
        let exe = std::env::current_exe().unwrap();
        let mut child = Command::new(&lab.tools.ip)
            .args(["netns", "exec", &lab.ns(ns)])
            .arg(&exe)
            .args([
                CHILD_TEST,
                "--exact",
                "--nocapture",
                "--test-threads=1",
                "-q",
            ])
            .env(ENV_ROLE, role)
            .env(ENV_SEED, seed.to_string())
            .env(ENV_LISTEN, listen)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} in {}: {e}", lab.ns(ns)));
        let stdout = child.stdout.take().unwrap();
        let stdin = child.stdin.take();
        let (tx, rx) = sync_channel(4096);
        let tag = name.to_owned();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                eprintln!("[{tag}] {line}");
                if let Some(at) = line.find(MARK)
                    && tx.send(line[at + MARK.len()..].to_owned()).is_err()
                {
                    break;
                }
            }
        });
        let mut p = Self {
            name: name.to_owned(),
            child,
            stdin,
            rx,
            lines: Vec::new(),
            exited: false,
            next_id: 0,
            peer_id: String::new(),
        };
        let line = p.wait_from(0, 15, "its peer id", |l| l.starts_with("PEER_ID "));
        p.peer_id = line["PEER_ID ".len()..].to_owned();
        p
    }

    /// Receives lines for up to `wait` (returning early once something arrived).
    fn pump(&mut self, wait: Duration) {
        if self.exited {
            std::thread::sleep(wait);
            return;
        }
        match self.rx.recv_timeout(wait) {
            Ok(line) => self.lines.push(line),
            Err(RecvTimeoutError::Timeout) => return,
            Err(RecvTimeoutError::Disconnected) => {
                self.exited = true;
                return;
            }
        }
        while let Ok(line) = self.rx.try_recv() {
            self.lines.push(line);
        }
    }

    /// Waits up to `secs` for a line at or after index `from` matching `pred`.
    fn poll_for(&mut self, from: usize, secs: u64, pred: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = now() + Duration::from_secs(secs);
        let mut checked = from;
        loop {
            if let Some(l) = self
                .lines
                .get(checked..)
                .and_then(|ls| ls.iter().find(|l| pred(l)))
            {
                return Some(l.clone());
            }
            checked = checked.max(self.lines.len());
            let left = deadline.saturating_duration_since(now());
            if left.is_zero() || self.exited {
                return None;
            }
            self.pump(left.min(Duration::from_millis(200)));
        }
    }

    /// As [`Proc::poll_for`], failing the test with this process's lines if nothing matches.
    fn wait_from(
        &mut self,
        from: usize,
        secs: u64,
        what: &str,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        self.poll_for(from, secs, pred).unwrap_or_else(|| {
            let why = if self.exited {
                "it exited"
            } else {
                "timed out"
            };
            panic!(
                "{}: waited {secs}s for {what}, {why}; its lines:\n  {}",
                self.name,
                self.lines.join("\n  ")
            )
        })
    }

    /// The first `LISTENING` address matching `pred`.
    fn listening(&mut self, pred: impl Fn(&str) -> bool) -> String {
        let line = self.wait_from(0, 15, "a listen address", |l| {
            l.starts_with("LISTENING ") && pred(l)
        });
        line["LISTENING ".len()..].to_owned()
    }

    /// Sends a command and waits for its result.
    fn call(&mut self, command: &str, args: &str, secs: u64) -> Result<String, String> {
        self.next_id += 1;
        let id = self.next_id;
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{command} {id} {args}")
            .unwrap_or_else(|e| panic!("{}: cannot send a command: {e}", self.name));
        let prefix = format!("R {id} ");
        let mark = self.lines.len();
        let line = self.wait_from(
            mark,
            secs,
            &format!("the result of {command} {args}"),
            |l| l.starts_with(&prefix),
        );
        let rest = &line[prefix.len()..];
        match rest.split_once(' ').unwrap_or((rest, "")) {
            ("ok", data) => Ok(data.to_owned()),
            (_, error) => Err(error.to_owned()),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// Namespaces.
// ---------------------------------------------------------------------------------------------

struct Tools {
    ip: PathBuf,
    iptables: PathBuf,
}

/// Looks for a program on `PATH` and in the sbin directories (absent from many users' `PATH`).
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Whether this process holds CAP_NET_ADMIN (bit 12 of its effective capabilities).
fn has_net_admin() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << 12) != 0)
}

fn skip(reason: &str) {
    eprintln!(
        "\n\
         ######################################################################\n\
         # SKIPPED: netns test needs CAP_NET_ADMIN (root, allowed to create network namespaces)\n\
         # {reason}\n\
         # The NAT traversal test across network namespaces did NOT run.\n\
         ######################################################################\n"
    );
}

/// `None`: not permitted here (a banner says so). Panics when permitted but `ip` or `iptables`
/// is missing.
fn preflight() -> Option<Tools> {
    if !cfg!(target_os = "linux") {
        skip("network namespaces exist on Linux only");
        return None;
    }
    if !has_net_admin() {
        skip("this process lacks CAP_NET_ADMIN (it is not root).");
        return None;
    }
    let missing = |program: &str, package: &str| -> PathBuf {
        find_program(program).unwrap_or_else(|| {
            panic!(
                "the netns test needs `{program}` (Debian package {package}), which is not \
                 installed; run `cargo xtask deps` (as root) to install it"
            )
        })
    };
    Some(Tools {
        ip: missing("ip", "iproute2"),
        iptables: missing("iptables", "iptables"),
    })
}

/// The namespaces of one run, removed (with their interfaces) when dropped.
struct Lab {
    tools: Tools,
    /// Created so far, in order.
    namespaces: Vec<String>,
}

impl Lab {
    /// Creates the namespaces; `None` when the kernel refuses permission (a banner says so).
    fn create(tools: Tools) -> Option<Self> {
        let mut lab = Self {
            tools,
            namespaces: Vec::new(),
        };
        lab.sweep_stale();
        for role in ROLES {
            let ns = lab.ns(role);
            match lab.try_ip(&["netns", "add", &ns]) {
                Ok(_) => lab.namespaces.push(ns),
                Err(e)
                    if e.contains("Operation not permitted") || e.contains("Permission denied") =>
                {
                    skip(&format!("`ip netns add` was refused: {}", e.trim()));
                    return None;
                }
                Err(e) => panic!("ip netns add {ns} failed: {e}"),
            }
        }
        Some(lab)
    }

    /// The namespace of `role` in this run (names end in the pid, so runs do not collide).
    fn ns(&self, role: char) -> String {
        format!("{NS_PREFIX}{}{role}", std::process::id())
    }

    /// Removes namespaces left by runs that were killed (their process is gone).
    fn sweep_stale(&self) {
        let Ok(list) = self.try_ip(&["netns", "list"]) else {
            return;
        };
        let me = std::process::id().to_string();
        for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
            let Some(rest) = name.strip_prefix(NS_PREFIX) else {
                continue;
            };
            let pid: String = rest.chars().take_while(char::is_ascii_digit).collect();
            let is_ours = rest.len() == pid.len() + 1 && !pid.is_empty();
            if is_ours && (pid == me || !Path::new(&format!("/proc/{pid}")).exists()) {
                eprintln!("netns: removing the stale namespace {name}");
                let _ = self.try_ip(&["netns", "del", name]);
            }
        }
    }

    fn try_ip(&self, args: &[&str]) -> Result<String, String> {
        run(&self.tools.ip, args)
    }

    fn ip(&self, args: &[&str]) {
        if let Err(e) = self.try_ip(args) {
            panic!("ip {} failed: {e}", args.join(" "));
        }
    }

    fn output(&self, args: &[&str]) -> String {
        self.try_ip(args)
            .unwrap_or_else(|e| panic!("ip {} failed: {e}", args.join(" ")))
    }

    /// Runs iptables in the namespace of `role`, trying iptables-legacy if the default backend
    /// fails.
    fn iptables(&self, role: char, rule: &[&str]) {
        let ns = self.ns(role);
        let attempt = |program: &Path| {
            let program = program.to_string_lossy();
            let mut args: Vec<&str> = vec!["netns", "exec", &ns, &program];
            args.extend(rule);
            self.try_ip(&args)
        };
        let Err(first) = attempt(&self.tools.iptables) else {
            return;
        };
        if let Some(legacy) = find_program("iptables-legacy")
            && attempt(&legacy).is_ok()
        {
            return;
        }
        panic!("iptables {} failed in {ns}: {first}", rule.join(" "));
    }

    fn build_topology(&self) {
        for role in ROLES {
            self.ip(&["-n", &self.ns(role), "link", "set", "lo", "up"]);
        }
        // The public segment: a bridge in the switch namespace, one veth to each member.
        let s = self.ns('s');
        self.ip(&["-n", &s, "link", "add", "br0", "type", "bridge"]);
        self.ip(&["-n", &s, "link", "set", "br0", "up"]);
        for (port, role, addr) in [
            ("vr", 'r', RELAY_IP),
            ("vm", 'm', NAT_A_PUBLIC_IP),
            ("vn", 'n', NAT_B_PUBLIC_IP),
        ] {
            let ns = self.ns(role);
            self.ip(&[
                "-n", &s, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ]);
            self.ip(&["-n", &s, "link", "set", port, "master", "br0", "up"]);
            self.ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ]);
            self.ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        }
        self.nat('m', NAT_A_PRIVATE_IP, 'a', A_IP);
        self.nat('n', NAT_B_PRIVATE_IP, 'b', B_IP);
    }

    /// A private segment: `host` behind the NAT `router` (whose public leg is its `eth0`).
    fn nat(&self, router: char, router_ip: &str, host: char, host_ip: &str) {
        let (n, h) = (self.ns(router), self.ns(host));
        self.ip(&[
            "-n", &n, "link", "add", "eth1", "type", "veth", "peer", "name", "eth0", "netns", &h,
        ]);
        self.ip(&[
            "-n",
            &n,
            "addr",
            "add",
            &format!("{router_ip}/24"),
            "dev",
            "eth1",
        ]);
        self.ip(&["-n", &n, "link", "set", "eth1", "up"]);
        self.ip(&[
            "-n",
            &h,
            "addr",
            "add",
            &format!("{host_ip}/24"),
            "dev",
            "eth0",
        ]);
        self.ip(&["-n", &h, "link", "set", "eth0", "up"]);
        self.ip(&["-n", &h, "route", "add", "default", "via", router_ip]);
        // Forward, masquerade whatever leaves on the public leg, and drop unsolicited packets
        // arriving there, as home routers do. (Without the last rule the kernel answers them
        // with a reset, which kills the hole punch's simultaneous open.)
        self.ip(&[
            "netns",
            "exec",
            &n,
            "sh",
            "-c",
            "echo 1 > /proc/sys/net/ipv4/ip_forward",
        ]);
        self.iptables(
            router,
            &[
                "-t",
                "nat",
                "-A",
                "POSTROUTING",
                "-o",
                "eth0",
                "-j",
                "MASQUERADE",
            ],
        );
        self.iptables(
            router,
            &[
                "-A",
                "INPUT",
                "-i",
                "eth0",
                "-m",
                "conntrack",
                "--ctstate",
                "NEW,INVALID",
                "-j",
                "DROP",
            ],
        );
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.namespaces.iter().rev() {
            if let Err(e) = self.try_ip(&["netns", "del", ns]) {
                eprintln!("netns: could not remove namespace {ns}: {e}");
            }
        }
    }
}

/// Runs a program; its stdout, or its exit status and stderr.
fn run(program: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{} ({}): {}",
            program.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
