//! A node's settings and where they come from.
//!
//! Every setting has a default that works with no file at all. Each layer overrides the one
//! before it, setting by setting:
//!
//! 1. the defaults ([`Config::default`]);
//! 2. the TOML file: `--config <file>` (or `MESH_CONFIG`) if given, which must then exist;
//!    otherwise `mesh.toml` in the data directory, if present. Unknown keys are refused with
//!    the key named; relative paths in the file are relative to the file's directory;
//! 3. the environment: [`env::DATA_DIR`], [`env::LISTEN`], [`env::BOOTSTRAP`], [`env::MDNS`],
//!    [`env::GENESIS`], [`env::LOG`], [`env::API`], and the secrets no file may hold,
//!    [`env::PASSPHRASE`] and [`env::API_TOKEN`];
//! 4. the command line ([`Overrides`]).
//!
//! A list (`listen`, `bootstrap`) set by a later layer replaces the earlier one whole.

use std::path::{Path, PathBuf};

use mesh_identity::Protection;
use mesh_transport::Multiaddr;
use serde::Deserialize;

use crate::error::{Error, Result};

/// The configuration file's name in the data directory.
pub const CONFIG_FILE: &str = "mesh.toml";
/// The data directory when none is given (relative to the working directory).
pub const DEFAULT_DATA_DIR: &str = "mesh-data";
/// The listen address when none is given: every IPv4 interface, a free TCP port.
pub const DEFAULT_LISTEN: &str = "/ip4/0.0.0.0/tcp/0";
/// The log filter when none is given.
pub const DEFAULT_LOG: &str = "info";
/// The HTTP API's address when none is given: loopback, a free port (the node writes the
/// port it got to [`crate::node::API_ADDR_FILE`] in the data directory).
pub const DEFAULT_API: &str = "127.0.0.1:0";
/// The largest configuration file read.
const MAX_FILE_LEN: u64 = 1024 * 1024;

/// The environment variables a node reads.
pub mod env {
    /// The data directory.
    pub const DATA_DIR: &str = "MESH_DATA_DIR";
    /// The configuration file (instead of `mesh.toml` in the data directory).
    pub const CONFIG: &str = "MESH_CONFIG";
    /// Listen multiaddresses, separated by commas.
    pub const LISTEN: &str = "MESH_LISTEN";
    /// Bootstrap multiaddresses, separated by commas (empty: none).
    pub const BOOTSTRAP: &str = "MESH_BOOTSTRAP";
    /// mDNS discovery: `true`/`false` (also `1`/`0`, `on`/`off`, `yes`/`no`).
    pub const MDNS: &str = "MESH_MDNS";
    /// The genesis file.
    pub const GENESIS: &str = "MESH_GENESIS";
    /// The log filter (`info`, `debug`, `warn,mesh_driver=debug`, ...).
    pub const LOG: &str = "MESH_LOG";
    /// The passphrase sealing the identity (see [`crate::node::init`]).
    pub const PASSPHRASE: &str = mesh_identity::PASSPHRASE_ENV;
    /// The HTTP API's address (`host:port`), or `off`.
    pub const API: &str = "MESH_API";
    /// The bearer token the HTTP API requires (required beyond loopback).
    pub const API_TOKEN: &str = "MESH_API_TOKEN";
    /// Where alerts are posted as JSON (`http://host:port/path`).
    pub const ALERT_WEBHOOK: &str = "MESH_ALERT_WEBHOOK";
    /// The directory of the data sets federated learning trains on.
    pub const DATASETS: &str = "MESH_DATASETS";
}

/// Everything a node needs to run. [`Config::default`] works as it is; [`Config::load`]
/// layers a file, the environment and the command line on top (see the [module
/// docs](self)).
#[derive(Debug, Clone)]
pub struct Config {
    /// The node's directory: `identity.json`, `node.json`, `mesh.toml`, the key file if
    /// any, and `consensus/` (the validator's store). Default `./mesh-data`.
    pub data_dir: PathBuf,
    /// Multiaddresses to listen on. Default `/ip4/0.0.0.0/tcp/0` (every interface, a free
    /// port). A validator listed in a genesis should listen where the genesis says it can be
    /// reached.
    pub listen: Vec<Multiaddr>,
    /// Peers to join the mesh through (`/ip4/../tcp/../p2p/<peer id>`). Default none.
    pub bootstrap: Vec<Multiaddr>,
    /// Discover peers on the local network by mDNS. Default on.
    pub mdns: bool,
    /// The genesis file (validator set and consensus settings). When it lists this node,
    /// the node runs a consensus validator; otherwise it is a plain peer. Default none.
    pub genesis: Option<PathBuf>,
    /// The log filter: a level (`trace`, `debug`, `info`, `warn`, `error`, `off`) or
    /// `target=level` items separated by commas. Default `info`. Applied by the binary.
    pub log: String,
    /// How the identity's secrets are sealed. `None` (the default): by the random passphrase
    /// in the data directory's key file (see [`crate::node::init`]). Set from
    /// [`env::PASSPHRASE`]; never from a file.
    pub protection: Option<Protection>,
    /// Where the HTTP API listens (`mesh_api`), or `None` for no API. Default
    /// [`DEFAULT_API`]. An address beyond loopback needs [`Config::api_token`].
    pub api: Option<std::net::SocketAddr>,
    /// The bearer token every API request must carry. Set from [`env::API_TOKEN`]; never
    /// from a file.
    pub api_token: Option<String>,
    /// Where the node posts its alerts as JSON, `http://host:port/path` (plain HTTP, for a
    /// local relay such as Alertmanager's webhook receiver). Set from
    /// [`env::ALERT_WEBHOOK`]. Default none.
    pub alert_webhook: Option<String>,
    /// The directory holding the data sets federated runs train on (`digits.csv`, as
    /// `cargo xtask data` writes it). Default `<data_dir>/datasets`. Set in the file
    /// (`datasets`, relative to it) or from [`env::DATASETS`].
    pub datasets: Option<PathBuf>,
    /// The coordinator role (set by `mesh-coordinator`, not read from the file): the node
    /// serves as a circuit relay for peers behind NATs and announces its listen addresses as
    /// reachable, so agents and nodes can join through it. Default off.
    pub coordinator: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            listen: vec![default_listen()],
            bootstrap: Vec::new(),
            mdns: true,
            genesis: None,
            log: DEFAULT_LOG.to_owned(),
            protection: None,
            api: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
            api_token: None,
            alert_webhook: None,
            datasets: None,
            coordinator: false,
        }
    }
}

fn default_listen() -> Multiaddr {
    Multiaddr::from(std::net::Ipv4Addr::UNSPECIFIED)
        .with(mesh_transport::multiaddr::Protocol::Tcp(0))
}

/// Settings given on the command line: each `Some` (or non-empty list) overrides the file
/// and the environment.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--config`: the file to read instead of `mesh.toml` in the data directory.
    pub config: Option<PathBuf>,
    /// `--listen` (repeatable).
    pub listen: Vec<Multiaddr>,
    /// `--bootstrap` (repeatable).
    pub bootstrap: Vec<Multiaddr>,
    /// `--no-mdns` gives `Some(false)`.
    pub mdns: Option<bool>,
    /// `--genesis`.
    pub genesis: Option<PathBuf>,
    /// `--log`.
    pub log: Option<String>,
    /// `--api` (`host:port` or `off`).
    pub api: Option<String>,
}

/// The file's keys; every one optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    data_dir: Option<PathBuf>,
    listen: Option<Vec<String>>,
    bootstrap: Option<Vec<String>>,
    mdns: Option<bool>,
    genesis: Option<PathBuf>,
    log: Option<String>,
    api: Option<String>,
    datasets: Option<PathBuf>,
}

/// Splits `http://host:port/path` into the address and the path.
pub fn parse_webhook(url: &str) -> std::result::Result<(String, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url:?}: use http://host:port/path (plain HTTP)"))?;
    let (addr, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let port_ok = addr
        .rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
    if !port_ok {
        return Err(format!("{url:?}: the address needs a host and a port"));
    }
    Ok((addr.to_owned(), path.to_owned()))
}

impl Config {
    /// The settings of this process: the defaults, the file, the process environment and
    /// `flags`.
    pub fn from_process(flags: &Overrides) -> Result<Self> {
        Self::load(flags, |name| std::env::var(name).ok())
    }

    /// The defaults, then the file, then the environment as `vars` reports it (a variable
    /// that is unset or empty counts as not given, except [`env::BOOTSTRAP`], where empty
    /// means none), then `flags`.
    pub fn load(flags: &Overrides, vars: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let mut config = Self::default();
        let given = |name: &str| vars(name).filter(|v| !v.is_empty());

        // Which file: an explicit one must exist; the data directory's is optional.
        let env_dir = given(env::DATA_DIR).map(PathBuf::from);
        let explicit = flags
            .config
            .clone()
            .map(|p| (p, "--config".to_owned()))
            .or_else(|| given(env::CONFIG).map(|p| (PathBuf::from(p), env::CONFIG.to_owned())));
        let file = match explicit {
            Some((path, _)) => Some(read_file(&path)?.ok_or_else(|| Error::ConfigFile {
                path: path.clone(),
                detail: "no such file".into(),
            })?),
            None => {
                let dir = flags
                    .data_dir
                    .clone()
                    .or_else(|| env_dir.clone())
                    .unwrap_or_else(|| config.data_dir.clone());
                read_file(&dir.join(CONFIG_FILE))?
            }
        };

        if let Some((path, file)) = file {
            let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
            let origin = path.display().to_string();
            if let Some(d) = file.data_dir {
                config.data_dir = base.join(d);
            }
            if let Some(l) = file.listen {
                config.listen = parse_addrs("listen", &origin, l.iter().map(String::as_str))?;
            }
            if let Some(b) = file.bootstrap {
                config.bootstrap = parse_addrs("bootstrap", &origin, b.iter().map(String::as_str))?;
            }
            if let Some(m) = file.mdns {
                config.mdns = m;
            }
            if let Some(g) = file.genesis {
                config.genesis = Some(base.join(g));
            }
            if let Some(l) = file.log {
                config.log = l;
            }
            if let Some(a) = file.api {
                config.api = parse_api(&a, &origin)?;
            }
            if let Some(d) = file.datasets {
                config.datasets = Some(base.join(d));
            }
            check_log(&config.log, &origin)?;
        }

        if let Some(d) = env_dir {
            config.data_dir = d;
        }
        if let Some(l) = given(env::LISTEN) {
            config.listen = parse_addrs("listen", env::LISTEN, split_list(&l))?;
        }
        if let Some(b) = vars(env::BOOTSTRAP) {
            config.bootstrap = parse_addrs("bootstrap", env::BOOTSTRAP, split_list(&b))?;
        }
        if let Some(m) = given(env::MDNS) {
            config.mdns = parse_bool(&m).ok_or_else(|| Error::Setting {
                key: "mdns",
                origin: env::MDNS.into(),
                detail: format!("{m:?} is not true or false"),
            })?;
        }
        if let Some(g) = given(env::GENESIS) {
            config.genesis = Some(PathBuf::from(g));
        }
        if let Some(l) = given(env::LOG) {
            check_log(&l, env::LOG)?;
            config.log = l;
        }
        if let Some(p) = given(env::PASSPHRASE) {
            config.protection = Some(Protection::passphrase(p));
        }
        if let Some(a) = given(env::API) {
            config.api = parse_api(&a, env::API)?;
        }
        if let Some(t) = given(env::API_TOKEN) {
            config.api_token = Some(t);
        }
        if let Some(w) = given(env::ALERT_WEBHOOK) {
            parse_webhook(&w).map_err(|detail| Error::Setting {
                key: "alert_webhook",
                origin: env::ALERT_WEBHOOK.into(),
                detail,
            })?;
            config.alert_webhook = Some(w);
        }
        if let Some(d) = given(env::DATASETS) {
            config.datasets = Some(PathBuf::from(d));
        }

        if let Some(d) = &flags.data_dir {
            config.data_dir = d.clone();
        }
        if !flags.listen.is_empty() {
            config.listen = flags.listen.clone();
        }
        if !flags.bootstrap.is_empty() {
            config.bootstrap = flags.bootstrap.clone();
        }
        if let Some(m) = flags.mdns {
            config.mdns = m;
        }
        if let Some(g) = &flags.genesis {
            config.genesis = Some(g.clone());
        }
        if let Some(l) = &flags.log {
            check_log(l, "--log")?;
            config.log = l.clone();
        }
        if let Some(a) = &flags.api {
            config.api = parse_api(a, "--api")?;
        }
        if let Some(addr) = config.api
            && !addr.ip().is_loopback()
            && config.api_token.is_none()
        {
            return Err(Error::Setting {
                key: "api",
                origin: "the configuration".into(),
                detail: format!(
                    "{addr} is reachable beyond this machine: set {} to the token clients \
                     must send, or listen on 127.0.0.1",
                    env::API_TOKEN
                ),
            });
        }
        if config.listen.is_empty() {
            return Err(Error::Setting {
                key: "listen",
                origin: "the configuration".into(),
                detail: "at least one address is needed".into(),
            });
        }
        Ok(config)
    }

    /// The identity file.
    pub fn identity_path(&self) -> PathBuf {
        self.data_dir.join(super::IDENTITY_FILE)
    }

    /// The key file holding the generated passphrase.
    pub fn key_file_path(&self) -> PathBuf {
        self.data_dir.join(super::KEY_FILE)
    }

    /// The node's public information.
    pub fn public_path(&self) -> PathBuf {
        self.data_dir.join(super::PUBLIC_FILE)
    }

    /// The consensus store's directory.
    pub fn consensus_dir(&self) -> PathBuf {
        self.data_dir.join(super::CONSENSUS_DIR)
    }

    /// Where the data sets of federated runs are: [`Config::datasets`], else
    /// `<data_dir>/datasets`.
    pub fn datasets_dir(&self) -> PathBuf {
        self.datasets
            .clone()
            .unwrap_or_else(|| self.data_dir.join("datasets"))
    }

    /// The text of a `mesh.toml` with these settings, every key documented (defaults
    /// commented out).
    pub fn to_toml(&self) -> String {
        let list = |v: &[Multiaddr]| {
            let items: Vec<String> = v.iter().map(|a| toml_string(&a.to_string())).collect();
            format!("[{}]", items.join(", "))
        };
        let line = |set: bool, text: String| {
            if set { text } else { format!("# {text}") }
        };
        let defaults = Self::default();
        let mut out = String::from(
            "# agentmesh node configuration. Precedence: defaults < this file < environment\n\
             # (MESH_LISTEN, MESH_BOOTSTRAP, MESH_MDNS, MESH_GENESIS, MESH_LOG, MESH_API) < command line.\n\
             # Unknown keys are an error. Relative paths are relative to this file's directory.\n\n",
        );
        out.push_str("# Multiaddresses to listen on.\n");
        out.push_str(&line(
            self.listen != defaults.listen,
            format!("listen = {}\n\n", list(&self.listen)),
        ));
        out.push_str("# Peers to join through, each ending in /p2p/<peer id>.\n");
        out.push_str(&line(
            !self.bootstrap.is_empty(),
            format!("bootstrap = {}\n\n", list(&self.bootstrap)),
        ));
        out.push_str("# Discover peers on the local network by mDNS.\n");
        out.push_str(&line(!self.mdns, format!("mdns = {}\n\n", self.mdns)));
        out.push_str(
            "# The genesis file (validator set and consensus settings); this node runs a\n\
             # validator when the genesis lists it.\n",
        );
        out.push_str(&match &self.genesis {
            Some(g) => format!("genesis = {}\n\n", toml_string(&g.display().to_string())),
            None => "# genesis = \"genesis.json\"\n\n".to_owned(),
        });
        out.push_str(
            "# The HTTP API (host:port, or \"off\"); port 0 picks a free one, written to\n\
             # api.addr in the data directory. Beyond loopback it needs MESH_API_TOKEN.\n",
        );
        out.push_str(&line(
            self.api != defaults.api,
            format!(
                "api = {}\n\n",
                toml_string(&self.api.map_or_else(|| "off".to_owned(), |a| a.to_string()))
            ),
        ));
        out.push_str(
            "# The directory of the data sets federated runs train on (digits.csv, as\n\
             # `cargo xtask data` writes it); default <data dir>/datasets.\n",
        );
        out.push_str(&match &self.datasets {
            Some(d) => format!("datasets = {}\n\n", toml_string(&d.display().to_string())),
            None => "# datasets = \"datasets\"\n\n".to_owned(),
        });
        out.push_str("# Log filter: a level, or target=level items separated by commas.\n");
        out.push_str(&line(
            self.log != defaults.log,
            format!("log = {}\n", toml_string(&self.log)),
        ));
        out
    }
}

/// `text` as a TOML basic string.
fn toml_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Reads and parses a configuration file; `None` if it does not exist.
fn read_file(path: &Path) -> Result<Option<(PathBuf, FileSettings)>> {
    let err = |detail: String| Error::ConfigFile {
        path: path.to_owned(),
        detail,
    };
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(err(e.to_string())),
    };
    if meta.len() > MAX_FILE_LEN {
        return Err(err(format!(
            "{} bytes, above the limit of {MAX_FILE_LEN}",
            meta.len()
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let settings: FileSettings = toml::from_str(&text).map_err(|e| {
        // toml's message names the key and shows the line; keep it on one line.
        err(e
            .to_string()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" "))
    })?;
    Ok(Some((path.to_owned(), settings)))
}

fn split_list(text: &str) -> impl Iterator<Item = &str> {
    text.split(',').map(str::trim).filter(|s| !s.is_empty())
}

fn parse_addrs<'a>(
    key: &'static str,
    origin: &str,
    items: impl Iterator<Item = &'a str>,
) -> Result<Vec<Multiaddr>> {
    items
        .map(|a| {
            a.parse().map_err(|e| Error::Setting {
                key,
                origin: origin.to_owned(),
                detail: format!("{a:?} is not a multiaddress: {e}"),
            })
        })
        .collect()
}

/// `host:port` (an IP address) or `off`.
fn parse_api(text: &str, origin: &str) -> Result<Option<std::net::SocketAddr>> {
    if text.trim().eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    text.trim().parse().map(Some).map_err(|_| Error::Setting {
        key: "api",
        origin: origin.to_owned(),
        detail: format!("{text:?} is not `ip:port` or `off`"),
    })
}

fn parse_bool(text: &str) -> Option<bool> {
    match text.to_ascii_lowercase().as_str() {
        "true" | "1" | "on" | "yes" => Some(true),
        "false" | "0" | "off" | "no" => Some(false),
        _ => None,
    }
}

const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// Checks a log filter: `level` or `target=level` items separated by commas.
fn check_log(filter: &str, origin: &str) -> Result<()> {
    let bad = |detail: String| Error::Setting {
        key: "log",
        origin: origin.to_owned(),
        detail,
    };
    if filter.trim().is_empty() {
        return Err(bad("empty filter".into()));
    }
    for item in filter.split(',').map(str::trim) {
        let level = match item.split_once('=') {
            Some((target, level)) => {
                let ok = !target.is_empty()
                    && target
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':' || c == '-');
                if !ok {
                    return Err(bad(format!("{target:?} is not a target name")));
                }
                level
            }
            None => item,
        };
        if !LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
            return Err(bad(format!(
                "{level:?} is not a level (one of {})",
                LEVELS.join(", ")
            )));
        }
    }
    Ok(())
}
