//! `cargo xtask bench`: the cross-process figures (four consensus validators as separate
//! processes on loopback), which criterion's in-process model cannot produce.

use anyhow::{Result, bail};

use crate::util::{cargo, step};

pub(crate) fn run(args: &[String]) -> Result<()> {
    if let Some(arg) = args.first() {
        bail!(
            "`cargo xtask bench` takes no options (got {arg:?}); `cargo bench` runs the in-process benches"
        );
    }
    let mut cmd = cargo();
    cmd.args(["bench", "-p", "mesh-driver", "--bench", "processes"]);
    step(
        "consensus over four validator processes (saturation, 10k/s offered)",
        cmd,
    )
}
