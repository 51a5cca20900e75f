//! Federated learning over real sockets: four validator nodes on loopback agree on a run
//! through consensus, train on their own non-IID shards of the digits, exchange signed round
//! messages over the transport, and adopt every global model only once its record is
//! committed; the HTTP API starts and reports the run, and refuses bad requests.

#![cfg(feature = "learning")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::Duration;

use mesh_api::client::Client;
use mesh_api::types::{Event, StartRun};
use mesh_driver::node::genesis::{self, PublicInfo, Settings};
use mesh_driver::node::{self, Config};
use mesh_learning::round::ModelRecord;

mod common;
use common::free_port;

const NODES: usize = 4;
const ROUNDS: u64 = 3;
const WAIT: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_nodes_train_a_model_together_and_commit_every_round() {
    let dir = tempfile::tempdir().unwrap();
    let datasets = common::datasets_dir();
    let mut configs: Vec<Config> = (0..NODES)
        .map(|i| {
            let mut c = common::loopback_config(&dir.path().join(format!("n{i}")), free_port());
            c.datasets = Some(datasets.clone());
            c
        })
        .collect();
    for c in &configs {
        node::init(c).unwrap();
    }
    let infos: Vec<PublicInfo> = configs
        .iter()
        .map(|c| PublicInfo::load(&c.data_dir).unwrap())
        .collect();
    let genesis_path = dir.path().join("genesis.json");
    genesis::build(&infos, Settings::default())
        .unwrap()
        .save(&genesis_path)
        .unwrap();
    let mut nodes = Vec::new();
    for c in &mut configs {
        c.genesis = Some(genesis_path.clone());
        nodes.push(node::start(c.clone()).unwrap());
    }
    // The mesh forms: every validator connected to the three others.
    tokio::time::timeout(WAIT, async {
        while !nodes
            .iter()
            .all(|(n, _)| n.consensus().unwrap().status().connected == NODES - 1)
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the mesh formed");
    let mut events: Vec<_> = nodes.iter().map(|(n, _)| n.events()).collect();
    let client = Client::new(nodes[1].0.api_addr().unwrap().to_string());

    // Bad requests are refused before anything reaches consensus.
    let refused = {
        let client = client.clone();
        tokio::task::spawn_blocking(move || {
            let model = client.start_run(&StartRun {
                model: Some("transformer".into()),
                ..StartRun::default()
            });
            let rounds = client.start_run(&StartRun {
                rounds: Some(0),
                ..StartRun::default()
            });
            let unknown = client
                .request(
                    "POST",
                    "/v1/learning/runs",
                    Some(br#"{"epochs":1,"gpus":8}"#),
                )
                .unwrap()
                .status;
            (model.is_err(), rounds.is_err(), unknown)
        })
        .await
        .unwrap()
    };
    assert_eq!(refused, (true, true, 400));

    let started = {
        let client = client.clone();
        tokio::task::spawn_blocking(move || {
            client.start_run(&StartRun {
                model: Some("mlp".into()),
                rounds: Some(ROUNDS),
                seed: Some(11),
                round_timeout_s: Some(30),
                ..StartRun::default()
            })
        })
        .await
        .unwrap()
        .unwrap()
    };
    assert_eq!(started.rounds, ROUNDS);
    assert!(started.height > 0);
    assert!(started.roles.contains(&"aggregator".to_owned()));

    // Every node reports every round, with the same committed model.
    let mut models: Vec<BTreeMap<u64, (String, f64, u64)>> = vec![BTreeMap::new(); NODES];
    tokio::time::timeout(WAIT, async {
        for (i, rx) in events.iter_mut().enumerate() {
            while (models[i].len() as u64) < ROUNDS {
                match rx.recv().await {
                    Ok(Event::RoundFinished {
                        run,
                        round,
                        model,
                        accuracy,
                        height,
                    }) => {
                        assert_eq!(run, started.id);
                        models[i].insert(round, (model, accuracy, height));
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(e) => panic!("event stream: {e}"),
                }
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("not every round finished on every node in time: {models:?}"));
    for m in &models[1..] {
        assert_eq!(m, &models[0], "the nodes adopted different models");
    }
    let rounds: Vec<_> = models[0].values().collect();
    assert!(
        rounds.windows(2).all(|w| w[0].2 < w[1].2),
        "records commit in order"
    );
    let last = rounds.last().unwrap().1;
    println!("federated rounds over 4 nodes: {rounds:?}");
    assert!(last >= 0.8, "accuracy after {ROUNDS} rounds: {rounds:?}");

    // The API reports the finished run; the adopted models are on every node's disk.
    let run = {
        let client = client.clone();
        let id = started.id.clone();
        tokio::task::spawn_blocking(move || {
            // The `Finished` output follows the last adoption at once; allow the task a moment.
            for _ in 0..50 {
                let run = client.run(&id[..16]).unwrap();
                if run.state == "finished" {
                    return run;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            client.run(&id).unwrap()
        })
        .await
        .unwrap()
    };
    assert_eq!(run.state, "finished");
    assert_eq!(run.finished_rounds.len() as u64, ROUNDS);

    // Another node's ledger holds the run record at the height the POST answered with, and
    // each round's model record at the height its event named.
    let blocks = {
        let reader = Client::new(nodes[2].0.api_addr().unwrap().to_string());
        let mut heights = vec![started.height];
        heights.extend(models[0].values().map(|(_, _, h)| *h));
        tokio::task::spawn_blocking(move || {
            heights
                .into_iter()
                .map(|h| reader.ledger(h, 1).unwrap().blocks.remove(0))
                .collect::<Vec<_>>()
        })
        .await
        .unwrap()
    };
    let payloads = |block: &mesh_api::types::LedgerBlock| -> Vec<Vec<u8>> {
        block
            .requests
            .iter()
            .map(|r| hex::decode(&r.hex).unwrap())
            .collect()
    };
    assert_eq!(blocks[0].height, started.height);
    assert!(
        payloads(&blocks[0]).iter().any(|p| p.starts_with(b"AMRUN")),
        "no run record at height {}",
        started.height
    );
    for ((round, (model, _, height)), block) in models[0].iter().zip(&blocks[1..]) {
        assert_eq!(block.height, *height);
        let found = payloads(block).iter().any(|p| {
            ModelRecord::decode(p)
                .is_ok_and(|r| r.round == *round && hex::encode(r.candidate.as_bytes()) == *model)
        });
        assert!(found, "no model record of round {round} at height {height}");
    }
    for c in &configs {
        for (model, _, _) in models[0].values() {
            let file = c.data_dir.join("learning").join(format!("{model}.f32"));
            let len = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
            assert_eq!(len, 4 * (64 * 64 + 64 + 64 * 10 + 10), "{}", file.display());
        }
    }

    common::stop_all(nodes).await;
}
