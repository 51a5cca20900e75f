//! Four validators agree on a stream of decisions over real sockets, survive the loss of
//! their primary, and leave ledgers a light client verifies.
//!
//! `cargo run -p mesh-examples --example consensus_mesh [DIR]` (a temporary directory if no DIR
//! is given). Each validator is a `mesh_driver::consensus::Driver`: a PBFT replica over the
//! libp2p transport on a loopback TCP port, with its own data directory (`DIR/v0` ..
//! `DIR/v3`).

#![allow(clippy::print_stdout)] // an example program reports on stdout

use std::time::Duration;

use anyhow::{Context as _, bail};
use mesh_consensus::{Keys, RequestAuth, StoreStorage, ValidatorSet, verify_storage};
use mesh_crypto::bls::BlsSecretKey;
use mesh_crypto::ed25519::SigningKey;
use mesh_driver::consensus::{self, Config, Driver, Handle};

const N: usize = 4;

fn keys(i: usize) -> anyhow::Result<Keys> {
    Ok(Keys {
        ed25519: SigningKey::from_seed(&[i as u8 + 1; 32]),
        bls: BlsSecretKey::from_ikm(&[i as u8 + 51; 32])?,
    })
}

fn validator_set() -> anyhow::Result<ValidatorSet> {
    let members = (0..N)
        .map(|i| keys(i).map(|k| k.member(1)))
        .collect::<anyhow::Result<_>>()?;
    Ok(ValidatorSet::new(0, members)?)
}

async fn wait_until(
    what: &str,
    handles: &[Option<Handle>],
    done: impl Fn(&consensus::Status) -> bool,
) -> anyhow::Result<()> {
    for _ in 0..300 {
        if handles.iter().flatten().all(|h| done(&h.status())) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("timed out waiting until {what}")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let tmp;
    let dir = match std::env::args_os().nth(1) {
        Some(d) => std::path::PathBuf::from(d),
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let set = validator_set()?;
    let ports: Vec<u16> = (0..N)
        .map(|_| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
        })
        .collect::<Result<_, _>>()?;
    let mut handles: Vec<Option<Handle>> = Vec::new();
    let mut joins = Vec::new();
    for i in 0..N {
        let mut config = Config::new(dir.join(format!("v{i}")), set.clone(), keys(i)?);
        config.consensus.request_auth = RequestAuth::Connection;
        config.consensus.request_timeout = Duration::from_secs(1);
        config.consensus.view_change_timeout = Duration::from_secs(1);
        config.transport.listen = vec![format!("/ip4/127.0.0.1/tcp/{}", ports[i]).parse()?];
        config.transport.mdns = false;
        config.relay_after = Duration::from_millis(500);
        for j in (0..N).filter(|&j| j != i) {
            let peer = consensus::peer_id(&set.members()[j].id)?;
            config
                .peers
                .push(format!("/ip4/127.0.0.1/tcp/{}/p2p/{peer}", ports[j]).parse()?);
        }
        let (handle, join) = Driver::start(config).context("starting a validator")?;
        handles.push(Some(handle));
        joins.push(join);
    }
    wait_until(
        "every validator is connected to the others",
        &handles,
        |s| s.connected == N - 1,
    )
    .await?;
    println!("4 validators up on 127.0.0.1 ports {ports:?}");

    // 100 decisions through validator 1 (a backup: it forwards them to the primary).
    let submitter = handles[1].clone().context("validator 1")?;
    let mut tasks = Vec::new();
    for k in 0..100u32 {
        let h = submitter.clone();
        tasks.push(tokio::spawn(async move {
            h.submit(format!("decision {k}").into_bytes()).await
        }));
    }
    for t in tasks {
        t.await??;
    }
    let height = submitter.status().executed;
    wait_until(
        "every validator executed the 100 decisions",
        &handles,
        |s| s.executed >= height,
    )
    .await?;
    println!("100 decisions committed in {height} blocks, on every validator");

    // The primary goes away; the others replace it and carry on.
    let primary = set
        .index_of(&submitter.status().primary)
        .context("the primary is a validator")?;
    if let Some(h) = handles[primary].take() {
        h.shutdown();
    }
    println!("validator {primary} (the primary) stopped");
    let survivor = handles
        .iter()
        .flatten()
        .next()
        .cloned()
        .context("a survivor")?;
    let mut tasks = Vec::new();
    for k in 0..50u32 {
        let h = survivor.clone();
        tasks.push(tokio::spawn(async move {
            h.submit(format!("decision after the failover {k}").into_bytes())
                .await
        }));
    }
    for t in tasks {
        t.await??;
    }
    let s = survivor.status();
    println!(
        "50 more decisions committed in view {} (primary now validator {:?}), height {}",
        s.view,
        set.index_of(&s.primary),
        s.executed
    );
    if s.view == 0 {
        bail!("expected a view change after the primary stopped");
    }

    for h in handles.iter().flatten() {
        h.shutdown();
    }
    for j in joins {
        j.await?;
    }

    // Every ledger verifies from the genesis validator set.
    for i in 0..N {
        let store = mesh_store::DiskStore::open(dir.join(format!("v{i}")))?;
        let storage = StoreStorage::open(&store, mesh_consensus::Limits::default())?;
        // From the genesis the ledger recorded, which must be this mesh's.
        let verified = verify_storage(&storage, |_| {})?;
        assert_eq!(
            verified.genesis.set, set,
            "validator {i} recorded another genesis"
        );
        let (height, head) = (verified.height, verified.head);
        println!("validator {i}: ledger of {height} blocks verifies, head {head}");
    }
    Ok(())
}
