//! The binary itself: `init`, `genesis`, errors as one line with a non-zero exit, and `run`
//! in a child process that logs its listening and API addresses, answers `status` and
//! `submit` through its API, and exits 0 on SIGINT.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc::{RecvTimeoutError, sync_channel};
use std::time::Duration;

/// The binary with a clean environment: no `MESH_*` variable of the caller leaks in.
fn mesh_node(data_dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mesh-node"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("MESH_") {
            c.env_remove(k);
        }
    }
    c.arg("--data-dir").arg(data_dir);
    c
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn init_then_a_second_init_and_genesis() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    for (d, port) in [(&a, 7301), (&b, 7302)] {
        let out = mesh_node(d)
            .args(["init", "--no-mdns", "--listen"])
            .arg(format!("/ip4/127.0.0.1/tcp/{port}"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr_of(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("did:key:z6Mk"), "{stdout}");
        assert!(stdout.contains("generated passphrase"), "{stdout}");
        for f in ["identity.json", "node.json", "mesh.toml", "passphrase"] {
            assert!(d.join(f).is_file(), "{f}");
        }
    }
    let out = mesh_node(&a).arg("init").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr_of(&out);
    assert!(err.contains("refusing to overwrite"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");

    let genesis = dir.path().join("genesis.json");
    let out = Command::new(env!("CARGO_BIN_EXE_mesh-node"))
        .arg("genesis")
        .arg("--out")
        .arg(&genesis)
        .arg(&a)
        .arg(b.join("node.json"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let text = std::fs::read_to_string(&genesis).unwrap();
    assert!(text.contains("/ip4/127.0.0.1/tcp/7301"), "{text}");
    assert!(text.contains("/ip4/127.0.0.1/tcp/7302"), "{text}");
    assert!(!text.contains(&std::fs::read_to_string(a.join("passphrase")).unwrap()));

    // Node settings mean nothing to `genesis`: refused, not ignored.
    let out = mesh_node(&a)
        .arg("genesis")
        .arg("--out")
        .arg(dir.path().join("other.json"))
        .arg(&a)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr_of(&out).contains("not `genesis`"),
        "{}",
        stderr_of(&out)
    );
}

#[test]
fn errors_are_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    // No identity in a directory that holds something else (an empty or missing one is
    // initialized instead).
    std::fs::write(dir.path().join("notes.txt"), "not a node").unwrap();
    let out = mesh_node(dir.path()).arg("run").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr_of(&out);
    assert!(err.contains("mesh-node init"), "{err}");
    // An unknown key in the configuration file.
    std::fs::write(dir.path().join("mesh.toml"), "mdsn = false\n").unwrap();
    let out = mesh_node(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr_of(&out);
    assert!(err.contains("mdsn"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    // Bad usage.
    let out = mesh_node(dir.path())
        .arg("--listen")
        .arg("nowhere")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn run_logs_its_address_and_exits_0_on_sigint() {
    let root = tempfile::tempdir().unwrap();
    // A data directory that does not exist yet: `run` (here with no subcommand) initializes
    // it first, so a node starts on defaults alone.
    let dir = root.path().join("node");
    let dir = dir.as_path();
    let mut child = mesh_node(dir)
        .args(["--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, lines) = sync_channel::<String>(1024);
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let listening = loop {
        match lines.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => {
                let found = line.contains("listening on /ip4/127.0.0.1/tcp/");
                seen.push(line);
                if found {
                    break true;
                }
            }
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break false,
        }
    };
    if !listening {
        let _ = child.kill();
        panic!("no listening address logged:\n{}", seen.join("\n"));
    }
    assert!(seen.iter().any(|l| l.contains("/p2p/12D3KooW")), "{seen:?}");
    assert!(
        seen.iter().any(|l| l.contains("new identity did:key:")),
        "{seen:?}"
    );
    assert!(dir.join("identity.json").is_file());
    assert!(
        seen.iter()
            .any(|l| l.contains("HTTP API on http://127.0.0.1:")),
        "{seen:?}"
    );

    // The client subcommands find the API through the data directory.
    let out = mesh_node(dir).arg("status").output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        status["peer_id"].as_str().unwrap().starts_with("12D3KooW"),
        "{status}"
    );
    assert!(
        status["consensus"].is_null(),
        "no genesis, no consensus: {status}"
    );
    let out = mesh_node(dir).args(["submit", "hello"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr_of(&out);
    assert!(err.contains("409 not_a_validator"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");

    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let mut waited = Duration::ZERO;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if waited > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("still running 20 s after SIGINT");
        }
        std::thread::sleep(Duration::from_millis(50));
        waited += Duration::from_millis(50);
    };
    // The reader ends at the end of the pipe, once the process is gone.
    let rest: Vec<String> = lines.iter().collect();
    assert!(
        status.success(),
        "exit {status}; log:\n{}\n{}",
        seen.join("\n"),
        rest.join("\n")
    );
    assert!(rest.iter().any(|l| l.contains("node stopped")), "{rest:?}");
    assert!(!dir.join("api.addr").exists());
}
