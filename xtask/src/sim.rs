//! `cargo xtask sim --seeds N`: the consensus simulation sweep over more seeds than the
//! normal test run's 1,000, in release mode.

use anyhow::{Context, Result, bail};

use crate::util::{cargo, step};

pub(crate) fn run(args: &[String]) -> Result<()> {
    let mut seeds: u64 = 10_000;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--seeds" => {
                let v = it.next().context("--seeds needs a number")?;
                seeds = v
                    .parse()
                    .with_context(|| format!("--seeds {v:?} is not a number"))?;
            }
            other => bail!("unknown option {other:?} (usage: cargo xtask sim [--seeds N])"),
        }
    }
    if seeds == 0 {
        bail!("--seeds must be at least 1");
    }
    let mut cmd = cargo();
    cmd.args([
        "test",
        "--release",
        "-p",
        "mesh-sim",
        "--test",
        "consensus",
        "sweep_part",
        "--",
        "--nocapture",
    ]);
    cmd.env("MESH_SIM_SEEDS", seeds.to_string());
    step(
        &format!("consensus simulation over {seeds} seeds (4 parts in parallel)"),
        cmd,
    )
}
