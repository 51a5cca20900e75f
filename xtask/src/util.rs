//! Running commands, and `cargo xtask test`.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

/// The workspace root (the parent of this crate's directory).
pub(crate) fn root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// The directory cargo builds into: `$CARGO_TARGET_DIR`, else `<workspace>/target`.
pub(crate) fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

/// The monotonic clock, for progress and latency timing in this command-line tool.
#[allow(clippy::disallowed_methods)]
pub(crate) fn now() -> Instant {
    Instant::now()
}

/// The cargo that invoked us, so the pinned toolchain is used throughout.
pub(crate) fn cargo() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root());
    cmd
}

/// Runs `cmd` with inherited output, printing it first and its duration after.
pub(crate) fn step(title: &str, mut cmd: Command) -> Result<()> {
    println!("\n==> {title}");
    #[allow(clippy::disallowed_methods)] // progress timing in a command-line tool
    let started = Instant::now();
    let status = cmd
        .status()
        .with_context(|| format!("could not start: {title}"))?;
    let secs = started.elapsed().as_secs_f64();
    if !status.success() {
        bail!("step failed after {secs:.1}s ({status}): {title}");
    }
    println!("==> ok in {secs:.1}s: {title}");
    Ok(())
}

fn has_nextest() -> bool {
    cargo()
        .args(["nextest", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Examples that `cargo xtask test` runs to completion.
pub(crate) const EXAMPLES: &[&str] = &["store_quickstart", "secure_messaging", "consensus_mesh"];

/// `cargo xtask test`.
pub(crate) fn run_test(args: &[String]) -> Result<()> {
    if let Some(unknown) = args.first() {
        bail!("`cargo xtask test` takes no options (got {unknown:?})");
    }
    #[allow(clippy::disallowed_methods)] // progress timing in a command-line tool
    let started = Instant::now();

    println!("\n==> system packages the tests need (cargo xtask deps)");
    if let Err(e) = crate::deps::ensure() {
        println!(
            "warning: {e:#}\n\
             warning: continuing; the network-namespace test fails (or, without root, skips)"
        );
    }

    println!("\n==> data sets the tests need (cargo xtask data)");
    let digits = crate::data::ensure_digits().context("cargo xtask data")?;
    println!("data: present: {}", digits.display());
    let mnist = crate::data::ensure_mnist().context("cargo xtask data")?;
    println!("data: present: {}", mnist.display());

    println!("\n==> models the tests need (cargo xtask models)");
    let minilm = crate::models::ensure_minilm().context("cargo xtask models")?;
    println!("models: present: {}", minilm.display());

    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--check"]);
    step("cargo fmt --all --check", fmt)?;

    let mut clippy = cargo();
    clippy.args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--locked",
        "--",
        "-D",
        "warnings",
    ]);
    step(
        "cargo clippy --workspace --all-targets --locked -- -D warnings",
        clippy,
    )?;

    if has_nextest() {
        let mut nextest = cargo();
        nextest.args([
            "nextest",
            "run",
            "--workspace",
            "--locked",
            "--no-fail-fast",
        ]);
        step("cargo nextest run --workspace", nextest)?;
        // nextest does not run doctests.
        let mut doc = cargo();
        doc.args(["test", "--workspace", "--locked", "--doc"]);
        step("cargo test --workspace --doc", doc)?;
    } else {
        println!("(cargo-nextest not found: using cargo test)");
        let mut test = cargo();
        test.args(["test", "--workspace", "--locked", "--no-fail-fast"]);
        step("cargo test --workspace", test)?;
    }

    let mut doc = cargo();
    doc.args(["doc", "--workspace", "--no-deps", "--locked"])
        .env("RUSTDOCFLAGS", "-D warnings");
    step("cargo doc --workspace --no-deps (warnings denied)", doc)?;

    for example in EXAMPLES {
        let mut run = cargo();
        run.args([
            "run",
            "--quiet",
            "--locked",
            "-p",
            "mesh-examples",
            "--example",
            example,
        ]);
        step(&format!("example {example}"), run)?;
    }

    // Real processes: four mesh-node validators on loopback, the primary killed with SIGKILL
    // and restarted, every acknowledged decision checked in every ledger (dev profile: the
    // binaries the tests just built).
    println!("\n==> cargo xtask testnet --scenario chaos --debug --no-examples --requests 300");
    crate::testnet::run(&[
        "--scenario".into(),
        "chaos".into(),
        "--debug".into(),
        "--no-examples".into(),
        "--requests".into(),
        "300".into(),
    ])
    .context("the process testnet (chaos scenario)")?;

    println!(
        "\nxtask test: all steps passed in {:.0}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Builds the binaries of `packages` (`--release` if `release`) as a step, and returns where
/// cargo put each executable, by binary name. Cargo reports the paths itself
/// (`--message-format=json`): a binary that is up to date in `deps/` is not always copied
/// to `target/<profile>/` again, so the path there cannot be assumed.
pub(crate) fn build_bins(
    packages: &[&str],
    release: bool,
) -> Result<std::collections::HashMap<String, PathBuf>> {
    let profile = if release { "release" } else { "debug" };
    let title = format!("building {} ({profile})", packages.join(", "));
    println!("\n==> {title}");
    #[allow(clippy::disallowed_methods)] // progress timing in a command-line tool
    let started = Instant::now();
    let mut cmd = cargo();
    cmd.args([
        "build",
        "--quiet",
        "--message-format=json-render-diagnostics",
    ]);
    for p in packages {
        cmd.args(["-p", p]);
    }
    if release {
        cmd.arg("--release");
    }
    let out = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("could not start: {title}"))?;
    let secs = started.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!("step failed after {secs:.1}s ({}): {title}", out.status);
    }
    let mut bins = std::collections::HashMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] == "compiler-artifact"
            && let (Some(exe), Some(name)) =
                (msg["executable"].as_str(), msg["target"]["name"].as_str())
        {
            bins.insert(name.to_owned(), PathBuf::from(exe));
        }
    }
    println!("==> ok in {secs:.1}s: {title}");
    Ok(bins)
}
