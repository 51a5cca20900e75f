//! The node library: configuration layers, `init` and the identity, genesis files, and four
//! validators started through `node::start` on loopback committing a request.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mesh_driver::Error;
use mesh_driver::node::genesis::{self, Genesis, GenesisFile, PublicInfo, Settings};
use mesh_driver::node::{self, Config, Multiaddr, Overrides};
use mesh_identity::Protection;

fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |k| map.get(k).cloned()
}

fn no_env(_: &str) -> Option<String> {
    None
}

fn addr(s: &str) -> Multiaddr {
    s.parse().unwrap()
}

fn in_dir(dir: &Path) -> Overrides {
    Overrides {
        data_dir: Some(dir.to_owned()),
        ..Overrides::default()
    }
}

// ----- configuration ------------------------------------------------------------------------

#[test]
fn defaults_apply_with_no_file_and_no_environment() {
    let dir = tempfile::tempdir().unwrap();
    let c = Config::load(&in_dir(dir.path()), no_env).unwrap();
    assert_eq!(c.data_dir, dir.path());
    assert_eq!(c.listen, vec![addr("/ip4/0.0.0.0/tcp/0")]);
    assert!(c.bootstrap.is_empty());
    assert!(c.mdns);
    assert_eq!(c.genesis, None);
    assert_eq!(c.log, "info");
    assert!(c.protection.is_none());
    // With nothing at all, the data directory is ./mesh-data.
    let c = Config::load(&Overrides::default(), no_env).unwrap();
    assert_eq!(c.data_dir, PathBuf::from("mesh-data"));
}

#[test]
fn file_then_environment_then_flags() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("mesh.toml"),
        "listen = [\"/ip4/127.0.0.1/tcp/1001\"]\n\
         bootstrap = [\"/ip4/127.0.0.1/tcp/1002\"]\n\
         mdns = false\n\
         genesis = \"g.json\"\n\
         log = \"debug\"\n",
    )
    .unwrap();
    // The file alone.
    let c = Config::load(&in_dir(dir.path()), no_env).unwrap();
    assert_eq!(c.listen, vec![addr("/ip4/127.0.0.1/tcp/1001")]);
    assert_eq!(c.bootstrap, vec![addr("/ip4/127.0.0.1/tcp/1002")]);
    assert!(!c.mdns);
    assert_eq!(c.genesis, Some(dir.path().join("g.json")));
    assert_eq!(c.log, "debug");

    // The environment over the file.
    let env = env_of(&[
        (
            "MESH_LISTEN",
            "/ip4/127.0.0.1/tcp/2001, /ip4/127.0.0.1/tcp/2002",
        ),
        ("MESH_BOOTSTRAP", ""),
        ("MESH_MDNS", "on"),
        ("MESH_LOG", "warn,mesh_driver=debug"),
        ("MESH_PASSPHRASE", "from the environment"),
    ]);
    let c = Config::load(&in_dir(dir.path()), &env).unwrap();
    assert_eq!(
        c.listen,
        vec![
            addr("/ip4/127.0.0.1/tcp/2001"),
            addr("/ip4/127.0.0.1/tcp/2002")
        ]
    );
    assert!(c.bootstrap.is_empty(), "an empty MESH_BOOTSTRAP means none");
    assert!(c.mdns);
    assert_eq!(c.genesis, Some(dir.path().join("g.json")));
    assert_eq!(c.log, "warn,mesh_driver=debug");
    assert!(matches!(c.protection, Some(Protection::Passphrase(_))));

    // Flags over both.
    let flags = Overrides {
        listen: vec![addr("/ip4/127.0.0.1/tcp/3001")],
        mdns: Some(false),
        genesis: Some(PathBuf::from("other.json")),
        log: Some("trace".into()),
        ..in_dir(dir.path())
    };
    let c = Config::load(&flags, &env).unwrap();
    assert_eq!(c.listen, vec![addr("/ip4/127.0.0.1/tcp/3001")]);
    assert!(!c.mdns);
    assert_eq!(c.genesis, Some(PathBuf::from("other.json")));
    assert_eq!(c.log, "trace");

    // MESH_DATA_DIR finds the file; the --data-dir flag wins over it.
    let c = Config::load(
        &Overrides::default(),
        env_of(&[("MESH_DATA_DIR", dir.path().to_str().unwrap())]),
    )
    .unwrap();
    assert_eq!(c.data_dir, dir.path());
    assert!(!c.mdns, "read the file of MESH_DATA_DIR");
    let other = tempfile::tempdir().unwrap();
    let c = Config::load(
        &in_dir(other.path()),
        env_of(&[("MESH_DATA_DIR", dir.path().to_str().unwrap())]),
    )
    .unwrap();
    assert_eq!(c.data_dir, other.path());
    assert!(c.mdns, "the flag's directory has no file");
}

#[test]
fn the_file_written_for_a_configuration_reads_back_as_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Config {
        data_dir: dir.path().to_owned(),
        ..Config::default()
    };
    // The defaults: every key commented out.
    std::fs::write(dir.path().join("mesh.toml"), c.to_toml()).unwrap();
    let back = Config::load(&in_dir(dir.path()), no_env).unwrap();
    assert_eq!(format!("{back:?}"), format!("{c:?}"));
    // Every key set.
    c.listen = vec![addr("/ip4/127.0.0.1/tcp/4001"), addr("/ip6/::1/tcp/4002")];
    c.bootstrap = vec![addr(
        "/ip4/127.0.0.1/tcp/4003/p2p/12D3KooWHz8nZDqdQfkTwnNxNyKUimuYMGFNgBQ1GY61SJsq23uK",
    )];
    c.mdns = false;
    // Characters TOML must escape, and some it need not.
    c.genesis = Some(dir.path().join("gén\"esis\\\t😀.json"));
    c.log = "warn,mesh_driver=debug".into();
    std::fs::write(dir.path().join("mesh.toml"), c.to_toml()).unwrap();
    let back = Config::load(&in_dir(dir.path()), no_env).unwrap();
    assert_eq!(format!("{back:?}"), format!("{c:?}"));
}

#[test]
fn an_explicit_config_file_is_read_and_must_exist() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("elsewhere.toml");
    std::fs::write(&file, "data_dir = \"node-a\"\nmdns = false\n").unwrap();
    let flags = Overrides {
        config: Some(file.clone()),
        ..Overrides::default()
    };
    let c = Config::load(&flags, no_env).unwrap();
    assert_eq!(c.data_dir, dir.path().join("node-a"));
    assert!(!c.mdns);
    let c = Config::load(
        &Overrides::default(),
        env_of(&[("MESH_CONFIG", file.to_str().unwrap())]),
    )
    .unwrap();
    assert!(!c.mdns);

    let missing = Overrides {
        config: Some(dir.path().join("missing.toml")),
        ..Overrides::default()
    };
    let e = Config::load(&missing, no_env).unwrap_err();
    assert!(matches!(e, Error::ConfigFile { .. }), "{e}");
    assert!(e.to_string().contains("missing.toml"), "{e}");
}

#[test]
fn unknown_keys_and_bad_values_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mesh.toml");
    std::fs::write(
        &file,
        "mdns = true\nlisten_on = [\"/ip4/127.0.0.1/tcp/1\"]\n",
    )
    .unwrap();
    let e = Config::load(&in_dir(dir.path()), no_env).unwrap_err();
    assert!(matches!(e, Error::ConfigFile { .. }), "{e}");
    assert!(e.to_string().contains("listen_on"), "names the key: {e}");
    assert!(!e.to_string().contains('\n'), "one line: {e}");

    std::fs::write(&file, "mdns = \"sometimes\"\n").unwrap();
    let e = Config::load(&in_dir(dir.path()), no_env).unwrap_err();
    assert!(e.to_string().contains("mdns"), "{e}");

    std::fs::write(&file, "listen = [\"not an address\"]\n").unwrap();
    let e = Config::load(&in_dir(dir.path()), no_env).unwrap_err();
    assert!(matches!(e, Error::Setting { key: "listen", .. }), "{e}");

    std::fs::write(&file, "log = \"loud\"\n").unwrap();
    let e = Config::load(&in_dir(dir.path()), no_env).unwrap_err();
    assert!(matches!(e, Error::Setting { key: "log", .. }), "{e}");

    std::fs::remove_file(&file).unwrap();
    let e = Config::load(&in_dir(dir.path()), env_of(&[("MESH_MDNS", "maybe")])).unwrap_err();
    assert!(
        matches!(&e, Error::Setting { key: "mdns", origin, .. } if origin == "MESH_MDNS"),
        "{e}"
    );
    let e = Config::load(&in_dir(dir.path()), env_of(&[("MESH_BOOTSTRAP", "/ip4/x")])).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Setting {
                key: "bootstrap",
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn an_alert_webhook_must_be_a_plain_http_url_with_a_port() {
    let dir = tempfile::tempdir().unwrap();
    assert!(
        Config::load(&in_dir(dir.path()), no_env)
            .unwrap()
            .alert_webhook
            .is_none()
    );
    let ok = env_of(&[("MESH_ALERT_WEBHOOK", "http://127.0.0.1:9093/alerts")]);
    let c = Config::load(&in_dir(dir.path()), &ok).unwrap();
    assert_eq!(
        c.alert_webhook.as_deref(),
        Some("http://127.0.0.1:9093/alerts")
    );
    for bad in [
        "https://example.org/hook",
        "http://no-port/hook",
        "127.0.0.1:9093",
    ] {
        let given = [("MESH_ALERT_WEBHOOK", bad)];
        let vars = env_of(&given);
        let e = Config::load(&in_dir(dir.path()), &vars).unwrap_err();
        assert!(
            matches!(
                e,
                Error::Setting {
                    key: "alert_webhook",
                    ..
                }
            ),
            "{bad}: {e}"
        );
    }
}

#[test]
fn the_api_defaults_to_loopback_and_needs_a_token_beyond_it() {
    let dir = tempfile::tempdir().unwrap();
    let c = Config::load(&in_dir(dir.path()), no_env).unwrap();
    assert_eq!(c.api, Some("127.0.0.1:0".parse().unwrap()));
    assert!(c.api_token.is_none());

    let file = dir.path().join("mesh.toml");
    std::fs::write(&file, "api = \"off\"\n").unwrap();
    assert_eq!(Config::load(&in_dir(dir.path()), no_env).unwrap().api, None);
    std::fs::write(&file, "api = \"127.0.0.1:7780\"\n").unwrap();
    let c = Config::load(&in_dir(dir.path()), no_env).unwrap();
    assert_eq!(c.api, Some("127.0.0.1:7780".parse().unwrap()));
    // The file's setting reads back from the file the node writes.
    std::fs::write(&file, c.to_toml()).unwrap();
    assert_eq!(
        Config::load(&in_dir(dir.path()), no_env).unwrap().api,
        c.api
    );

    std::fs::write(&file, "api = \"everywhere\"\n").unwrap();
    let e = Config::load(&in_dir(dir.path()), no_env).unwrap_err();
    assert!(matches!(e, Error::Setting { key: "api", .. }), "{e}");
    std::fs::remove_file(&file).unwrap();

    let open = env_of(&[("MESH_API", "0.0.0.0:7780")]);
    let e = Config::load(&in_dir(dir.path()), &open).unwrap_err();
    assert!(e.to_string().contains("MESH_API_TOKEN"), "{e}");
    let with_token = env_of(&[("MESH_API", "0.0.0.0:7780"), ("MESH_API_TOKEN", "t")]);
    let c = Config::load(&in_dir(dir.path()), &with_token).unwrap();
    assert_eq!(c.api_token.as_deref(), Some("t"));
    let flags = Overrides {
        api: Some("off".into()),
        ..in_dir(dir.path())
    };
    assert_eq!(Config::load(&flags, &open).unwrap().api, None);
}

// ----- init and the identity ----------------------------------------------------------------

fn config_in(dir: &Path, passphrase: Option<&str>) -> Config {
    Config {
        data_dir: dir.to_owned(),
        listen: vec![addr("/ip4/127.0.0.1/tcp/0")],
        mdns: false,
        protection: passphrase.map(Protection::passphrase),
        ..Config::default()
    }
}

#[test]
fn init_with_a_key_file_creates_everything_and_refuses_a_second_time() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    let mut config = config_in(&data, None);
    config.listen = vec![
        addr("/ip4/127.0.0.1/tcp/7101"),
        addr("/ip4/0.0.0.0/tcp/7102"),
    ];
    let done = node::init(&config).unwrap();
    assert!(done.key_file);
    for f in ["identity.json", "node.json", "mesh.toml", "passphrase"] {
        assert!(data.join(f).is_file(), "{f} written");
    }
    let mode = std::fs::metadata(data.join("passphrase"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // Only the dialable address is public.
    assert_eq!(
        done.public.addresses,
        vec!["/ip4/127.0.0.1/tcp/7101".to_owned()]
    );
    assert_eq!(PublicInfo::load(&data).unwrap(), done.public);
    // node.json holds no secret: the key file's passphrase and the sealed data are absent.
    let public = std::fs::read_to_string(data.join("node.json")).unwrap();
    let secret = std::fs::read_to_string(data.join("passphrase")).unwrap();
    assert!(!public.contains(secret.trim()));
    assert!(!public.contains("secrets"));

    // The written mesh.toml reads back as the settings init was given.
    let loaded = Config::load(&in_dir(&data), no_env).unwrap();
    assert_eq!(loaded.listen, config.listen);
    assert!(!loaded.mdns);
    assert_eq!(loaded.log, "info");

    // The identity opens with the key file.
    let identity = node::open_identity(&loaded).unwrap();
    assert_eq!(identity.did().to_string(), done.public.did);

    // A second init changes nothing.
    let before = std::fs::read(data.join("identity.json")).unwrap();
    let e = node::init(&config).unwrap_err();
    assert!(matches!(e, Error::IdentityExists { .. }), "{e}");
    assert_eq!(std::fs::read(data.join("identity.json")).unwrap(), before);
    assert_eq!(
        std::fs::read_to_string(data.join("passphrase")).unwrap(),
        secret
    );

    // A key file others can read is refused.
    std::fs::set_permissions(
        data.join("passphrase"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let e = node::open_identity(&loaded).unwrap_err();
    assert!(e.to_string().contains("chmod 600"), "{e}");
}

#[test]
fn a_passphrase_from_the_environment_is_needed_again_and_must_be_right() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path(), Some("correct horse"));
    let done = node::init(&config).unwrap();
    assert!(!done.key_file);
    assert!(!dir.path().join("passphrase").exists());

    assert_eq!(
        node::open_identity(&config).unwrap().did().to_string(),
        done.public.did
    );
    let e = node::open_identity(&config_in(dir.path(), Some("wrong horse"))).unwrap_err();
    assert!(matches!(e, Error::WrongPassphrase { .. }), "{e}");
    let e = node::open_identity(&config_in(dir.path(), None)).unwrap_err();
    assert!(matches!(e, Error::NoPassphrase { .. }), "{e}");
    assert!(e.to_string().contains("MESH_PASSPHRASE"), "{e}");

    let empty = tempfile::tempdir().unwrap();
    let e = node::open_identity(&config_in(empty.path(), Some("x"))).unwrap_err();
    assert!(matches!(e, Error::NoIdentity { .. }), "{e}");
    assert!(e.to_string().contains("mesh-node init"), "{e}");
    let file = empty.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let e = node::open_identity(&config_in(&file, Some("x"))).unwrap_err();
    assert!(matches!(e, Error::DataDir { .. }), "{e}");
}

// ----- genesis ------------------------------------------------------------------------------

/// Free loopback TCP ports (bound and released: another process could take them meanwhile,
/// which on a test machine it does not).
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// `n` initialized nodes listening on loopback ports, with their configurations.
fn nodes(root: &Path, n: usize) -> Vec<Config> {
    free_ports(n)
        .into_iter()
        .enumerate()
        .map(|(i, port)| {
            let mut c = config_in(&root.join(format!("node{i}")), Some(&format!("pass {i}")));
            c.listen = vec![addr(&format!("/ip4/127.0.0.1/tcp/{port}"))];
            node::init(&c).unwrap();
            c
        })
        .collect()
}

fn infos(configs: &[Config]) -> Vec<PublicInfo> {
    configs
        .iter()
        .map(|c| PublicInfo::load(&c.data_dir).unwrap())
        .collect()
}

#[test]
fn genesis_round_trips_through_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let configs = nodes(dir.path(), 4);
    let infos = infos(&configs);
    let file = genesis::build(&infos, Settings::default()).unwrap();
    let path = dir.path().join("genesis.json");
    file.save(&path).unwrap();
    assert!(
        file.save(&path).is_err(),
        "an existing genesis is not replaced"
    );

    let g = Genesis::load(&path).unwrap();
    assert_eq!(g.validators.len(), 4);
    assert_eq!(g.validators.total_weight(), 4);
    assert_eq!(g.consensus, mesh_consensus::Config::default());
    for (i, info) in infos.iter().enumerate() {
        assert_eq!(
            g.addresses[i].to_string(),
            format!("{}/p2p/{}", info.addresses[0], info.peer_id)
        );
        let identity = node::open_identity(&configs[i]).unwrap();
        let path = Path::new("genesis.json");
        assert_eq!(g.position(&identity, path).unwrap(), Some(i));
    }
    let text: GenesisFile = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(text, file);
}

#[test]
fn tampered_or_inconsistent_genesis_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let configs = nodes(dir.path(), 4);
    let infos = infos(&configs);
    let good = genesis::build(&infos, Settings::default()).unwrap();
    let check = |f: &GenesisFile| Genesis::check(f, Path::new("g.json"));
    assert!(check(&good).is_ok());
    let refused = |f: &GenesisFile, what: &str| {
        let e = check(f).unwrap_err();
        assert!(matches!(e, Error::Genesis { .. }), "{e}");
        assert!(e.to_string().contains(what), "{what:?} in {e}");
    };

    // A proof of possession that is not for the key.
    let mut f = good.clone();
    f.validators[1].bls_proof_of_possession = good.validators[2].bls_proof_of_possession.clone();
    refused(&f, "proof of possession");
    // A validator twice.
    let mut f = good.clone();
    f.validators.push(good.validators[0].clone());
    refused(&f, "twice");
    // The same DID with another BLS key.
    let mut f = good.clone();
    f.validators[3].did = good.validators[0].did.clone();
    f.validators[3].peer_id = good.validators[0].peer_id.clone();
    refused(&f, "twice");
    // A peer id that is not the DID's.
    let mut f = good.clone();
    f.validators[0].peer_id = good.validators[1].peer_id.clone();
    refused(&f, "peer id");
    // Addresses others cannot dial, or naming another peer.
    let mut f = good.clone();
    f.validators[0].address = "/ip4/0.0.0.0/tcp/7000".into();
    refused(&f, "host");
    let mut f = good.clone();
    f.validators[0].address = format!("/ip4/127.0.0.1/tcp/7000/p2p/{}", good.validators[1].peer_id);
    refused(&f, "not this validator");
    // Settings that cannot work, a weight above the bound, an unknown version.
    let mut f = good.clone();
    f.consensus.window = 17;
    refused(&f, "window");
    let mut f = good.clone();
    f.consensus.request_auth = "trust me".into();
    refused(&f, "request_auth");
    let mut f = good.clone();
    f.validators[0].weight = 1_000_000;
    refused(&f, "weight");
    let mut f = good.clone();
    f.version = 2;
    refused(&f, "version");
    // Unknown keys in the file.
    let path = dir.path().join("extra.json");
    let mut json: serde_json::Value = serde_json::to_value(&good).unwrap();
    json["validators"][0]["role"] = "boss".into();
    std::fs::write(&path, serde_json::to_vec(&json).unwrap()).unwrap();
    let e = Genesis::load(&path).unwrap_err();
    assert!(e.to_string().contains("role"), "{e}");
    // A node without a dialable address cannot be put in a genesis.
    let mut lonely = infos[0].clone();
    lonely.addresses.clear();
    let e = genesis::build(&[lonely], Settings::default()).unwrap_err();
    assert!(e.to_string().contains("no address"), "{e}");
}

// ----- running nodes ------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_refuses_a_node_named_with_another_key_a_taken_port_and_no_identity() {
    let dir = tempfile::tempdir().unwrap();
    let configs = nodes(dir.path(), 4);
    let infos = infos(&configs);
    // Node 0's DID with node 1's BLS key (and proof, which is valid for that key).
    let mut file = genesis::build(&infos, Settings::default()).unwrap();
    file.validators[0].bls_public_key = infos[1].bls_public_key.clone();
    file.validators[0].bls_proof_of_possession = infos[1].bls_proof_of_possession.clone();
    file.validators.remove(1);
    let path = dir.path().join("genesis.json");
    file.save(&path).unwrap();
    let mut c = configs[0].clone();
    c.genesis = Some(path);
    let e = node::start(c).unwrap_err();
    assert!(matches!(e, Error::GenesisMismatch { .. }), "{e}");

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut c = configs[1].clone();
    c.listen = vec![addr(&format!("/ip4/127.0.0.1/tcp/{port}"))];
    let e = node::start(c).unwrap_err();
    assert!(matches!(e, Error::AddressInUse { .. }), "{e}");

    let e = node::start(config_in(&dir.path().join("nothing"), Some("x"))).unwrap_err();
    assert!(matches!(e, Error::NoIdentity { .. }), "{e}");

    // Node 1, left out of that genesis, runs as a plain peer.
    let mut c = configs[1].clone();
    c.genesis = Some(dir.path().join("genesis.json"));
    let (peer, join) = node::start(c).unwrap();
    assert!(peer.consensus().is_none());
    tokio::time::timeout(Duration::from_secs(20), peer.listening())
        .await
        .unwrap()
        .unwrap();
    // Its API says so, with a 409 and a JSON body.
    let api = mesh_api::client::Client::new(peer.api_addr().unwrap().to_string());
    let e = tokio::task::spawn_blocking(move || api.submit_text("x"))
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(&e, mesh_api::client::ClientError::Api { status: 409, code, .. } if code == "not_a_validator"),
        "{e}"
    );
    // An API port in use is named too.
    let mut c = configs[2].clone();
    c.api = Some(peer.api_addr().unwrap());
    let e = node::start(c).unwrap_err();
    assert!(
        matches!(&e, Error::AddressInUse { addr } if addr.contains("HTTP API")),
        "{e}"
    );
    peer.shutdown();
    tokio::time::timeout(Duration::from_secs(20), join)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_validators_started_from_a_genesis_commit_and_stop_cleanly() {
    const WAIT: Duration = Duration::from_secs(60);
    let dir = tempfile::tempdir().unwrap();
    let mut configs = nodes(dir.path(), 4);
    let path = dir.path().join("genesis.json");
    genesis::build(&infos(&configs), Settings::default())
        .unwrap()
        .save(&path)
        .unwrap();
    let mut running = Vec::new();
    for c in &mut configs {
        c.genesis = Some(path.clone());
        running.push(node::start(c.clone()).unwrap());
    }
    for (n, _) in &running {
        let addrs = tokio::time::timeout(WAIT, n.listening())
            .await
            .unwrap()
            .unwrap();
        assert!(addrs[0].to_string().ends_with(&n.peer_id().to_string()));
        assert!(n.consensus().is_some(), "every node is a validator");
    }

    // Through the HTTP API: node 1 streams events while node 0 takes a submission.
    let api = |i: usize| {
        let addr = running[i].0.api_addr().expect("the API runs by default");
        assert!(addr.ip().is_loopback());
        let written =
            std::fs::read_to_string(configs[i].data_dir.join(node::API_ADDR_FILE)).unwrap();
        assert_eq!(written.trim(), addr.to_string());
        mesh_api::client::Client::new(addr.to_string())
    };
    let (api0, api1, api2) = (api(0), api(1), api(2));
    let receipt = tokio::task::spawn_blocking(move || {
        let mut events = api1.events().unwrap();
        let receipt = api0.submit_text("hello through the API").unwrap();
        // Node 1 executes the block too and says so on its stream.
        loop {
            match events.next_event().unwrap() {
                Some(mesh_api::types::Event::BlockCommitted { height, .. })
                    if height >= receipt.height =>
                {
                    break;
                }
                Some(_) => {}
                None => panic!("the event stream ended"),
            }
        }
        // Node 2 executes the block in its own time: wait for it.
        for _ in 0..600 {
            let h = api2.status().unwrap().consensus.map_or(0, |c| c.height);
            if h >= receipt.height {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let block = api2
            .ledger(receipt.height, 1)
            .unwrap()
            .blocks
            .into_iter()
            .next()
            .expect("the block is in node 2's ledger");
        assert_eq!(block.height, receipt.height);
        assert!(
            block
                .requests
                .iter()
                .any(|r| r.text.as_deref() == Some("hello through the API") && r.id == receipt.id),
            "{block:?}"
        );
        assert!(block.signers.len() >= 3, "{block:?}");
        let status = api2.status().unwrap();
        assert!(status.consensus.as_ref().unwrap().height >= receipt.height);
        // It executed a block, so it hears from a quorum (the last link may still be coming up).
        assert!(status.peers >= 2, "{status:?}");
        let metrics = api2.metrics().unwrap();
        assert!(metrics.contains("mesh_consensus_height "), "{metrics}");
        assert!(metrics.ends_with("# EOF\n"));
        receipt
    })
    .await
    .unwrap();

    let consensus = running[0].0.consensus().unwrap().clone();
    let committed = tokio::time::timeout(WAIT, consensus.submit(b"hello mesh".to_vec()))
        .await
        .expect("committed in time")
        .unwrap();
    assert!(committed.seq >= receipt.height);
    for (n, _) in &running {
        let mut status = n.consensus().unwrap().watch_status();
        tokio::time::timeout(WAIT, status.wait_for(|s| s.executed >= committed.seq))
            .await
            .expect("executed on every validator in time")
            .unwrap();
    }

    for (n, _) in &running {
        n.shutdown();
    }
    for (i, (_, join)) in running.into_iter().enumerate() {
        let r = tokio::time::timeout(Duration::from_secs(20), join)
            .await
            .unwrap_or_else(|_| panic!("node {i} stopped within 20 s"))
            .unwrap();
        assert!(r.is_ok(), "node {i}: {r:?}");
    }
    // Each validator's ledger is in its data directory, and the store's lock was released:
    // the node starts again over the same directory.
    for c in &configs {
        assert!(c.data_dir.join("consensus").is_dir());
        assert!(
            !c.data_dir.join(node::API_ADDR_FILE).exists(),
            "a stopped node removes its API address file"
        );
    }
    let (again, join) = node::start(configs[0].clone()).unwrap();
    assert!(again.consensus().unwrap().status().executed >= committed.seq);
    again.shutdown();
    tokio::time::timeout(Duration::from_secs(20), join)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
