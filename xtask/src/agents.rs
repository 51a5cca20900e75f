//! The agents of `cargo xtask testnet`: two `mesh-agent` processes join through the
//! coordinator, register through consensus (the coordinator forwards to the primary), and exchange end-to-end encrypted messages through their HTTP
//! APIs; in the chaos scenario the recipient is killed (SIGKILL) halfway and restarted, and
//! every message must still arrive exactly once.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use mesh_api::types::MessageBox;

use crate::mesh::{Agents, Mesh};
use crate::util::now;

/// What the messaging phase measured.
pub(crate) struct Messaging {
    pub(crate) sent: usize,
    pub(crate) delivered: usize,
    pub(crate) secs: f64,
    pub(crate) restarted: bool,
}

/// Creates and starts `alice` and `bob`, both joining through the coordinator, and waits
/// until the registries of the coordinator and of the last node list both (their
/// registrations committed).
pub(crate) fn start(bin: &Path, root: &Path, mesh: &Mesh) -> Result<(Agents, Vec<String>)> {
    let status = mesh.coordinator.client().status()?;
    let home = status
        .listen
        .into_iter()
        .find(|a| a.starts_with("/ip4/127.0.0.1/tcp/") && a.contains("/p2p/"))
        .context("the coordinator reports no loopback TCP address")?;
    let homes = vec![home.clone(), home];
    println!("\n==> two agents, alice and bob, join through the coordinator");
    let mut agents = Agents::create(bin, root, &["alice", "bob"], homes)?;
    agents.start(0)?;
    agents.start(1)?;
    let started = now();
    let registries = [
        mesh.nodes[mesh.nodes.len() - 1].client(),
        mesh.coordinator.client(),
    ];
    loop {
        let listed = registries
            .iter()
            .map(|r| r.agents().map(|a| a.len()).unwrap_or(0))
            .min()
            .unwrap_or(0);
        if listed == 2 {
            break;
        }
        for i in 0..2 {
            if !agents.agents[i].running() {
                bail!(
                    "agent {} exited; its log ends:\n{}",
                    agents.names[i],
                    agents.agents[i].log_tail("agent.log", 20)
                );
            }
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!(
                "the agents were not registered within 60 s ({listed} of 2); alice's log ends:\n{}",
                agents.agents[0].log_tail("agent.log", 20)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let dids = agents
        .agents
        .iter()
        .map(|a| Ok(a.client().status()?.did))
        .collect::<Result<Vec<_>>>()?;
    println!(
        "both registered through consensus in {:.1}s (node {} and the coordinator list them)",
        started.elapsed().as_secs_f64(),
        mesh.nodes.len() - 1
    );
    Ok((agents, dids))
}

fn send_all(agents: &Agents, from: usize, to: &str, range: std::ops::Range<usize>) -> Result<()> {
    let client = agents.agents[from].client();
    for i in range {
        let text = format!("message {i} from {}", agents.names[from]);
        client
            .send_message(to, &text)
            .with_context(|| format!("{} sending message {i}", agents.names[from]))?;
    }
    Ok(())
}

/// Waits until agent `i` has received `count` messages; checks each arrived exactly once.
fn wait_inbox(agents: &Agents, i: usize, from: usize, count: usize) -> Result<usize> {
    let client = agents.agents[i].client();
    let started = now();
    loop {
        let total = client
            .messages(MessageBox::Inbox, 0, 1)
            .map(|m| m.total)
            .unwrap_or(0);
        if total as usize >= count {
            break;
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!(
                "{} received {total} of {count} messages within 60 s",
                agents.names[i]
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut texts = HashSet::new();
    let mut from_seq = 0;
    loop {
        let page = client.messages(MessageBox::Inbox, from_seq, 256)?;
        if page.messages.is_empty() {
            break;
        }
        for m in &page.messages {
            let text = m.text.clone().unwrap_or_default();
            if !texts.insert(text.clone()) {
                bail!("{} received {text:?} twice", agents.names[i]);
            }
            from_seq = m.seq + 1;
        }
    }
    let want: HashSet<String> = (0..count)
        .map(|n| format!("message {n} from {}", agents.names[from]))
        .collect();
    if texts != want {
        bail!(
            "{}'s inbox holds {} messages, not exactly the {count} sent",
            agents.names[i],
            texts.len()
        );
    }
    Ok(texts.len())
}

/// Alice and bob send each other `count` messages; with `chaos`, bob is killed with SIGKILL
/// after half of alice's and restarted once the rest are queued.
pub(crate) fn exchange(
    agents: &mut Agents,
    dids: &[String],
    count: usize,
    chaos: bool,
) -> Result<Messaging> {
    println!("\n==> alice and bob exchange {count} end-to-end encrypted messages each way");
    let started = now();
    let half = count / 2;
    std::thread::scope(|s| -> Result<()> {
        let b = s.spawn(|| send_all(agents, 1, &dids[0], 0..count));
        send_all(agents, 0, &dids[1], 0..half)?;
        b.join()
            .map_err(|_| anyhow::anyhow!("a sender panicked"))??;
        Ok(())
    })?;
    if chaos {
        println!("killing bob (SIGKILL) with messages in flight");
        agents.agents[1].kill9()?;
        send_all(agents, 0, &dids[1], half..count)?;
        println!("restarting bob: alice's outbox delivers the rest");
        agents.start(1)?;
    } else {
        send_all(agents, 0, &dids[1], half..count)?;
    }
    let delivered = wait_inbox(agents, 1, 0, count)? + wait_inbox(agents, 0, 1, count)?;
    let secs = started.elapsed().as_secs_f64();
    println!("{delivered} messages delivered exactly once, decrypted and verified, in {secs:.1}s");
    Ok(Messaging {
        sent: 2 * count,
        delivered,
        secs,
        restarted: chaos,
    })
}
