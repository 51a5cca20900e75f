//! `mesh-node`: an agentmesh peer. A thin main over [`mesh_driver::cli`] (itself over
//! [`mesh_driver::node`]):
//!
//! - `mesh-node init`: a data directory with a new identity, `node.json` and `mesh.toml`;
//! - `mesh-node [run]`: runs the node until Ctrl-C (SIGINT) or SIGTERM (a missing or empty
//!   data directory is initialized first, so `mesh-node` alone starts a peer on defaults);
//! - `mesh-node genesis --out genesis.json [--observer DIR]... <data-dir|node.json>...`: a
//!   genesis of those nodes;
//! - `mesh-node status` and `mesh-node submit TEXT`: ask a running node through its HTTP API
//!   (found in the data directory's `api.addr`, or given with `--api-url`).
//!
//! Settings: defaults < `mesh.toml` (or `--config`) < `MESH_*` environment < flags (given
//! before or after `init`/`run`; after wins). Errors print as one line on stderr, with exit
//! code 1 (2 for bad usage).

fn main() -> std::process::ExitCode {
    mesh_driver::cli::main(mesh_driver::cli::Role::Node)
}
