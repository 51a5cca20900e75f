//! `mesh-coordinator`: a node in the coordinator role, a thin main over
//! [`mesh_driver::cli`]. The commands and settings of `mesh-node`; the node also serves as a
//! circuit relay and announces its addresses so agents and nodes join through it. Listed in
//! the genesis with weight 0 (`mesh-node genesis --observer <its data dir>`), it follows the
//! ledger without voting, keeps the agent registry (`GET /v1/agents`) and forwards agent
//! registrations to the primary.

fn main() -> std::process::ExitCode {
    mesh_driver::cli::main(mesh_driver::cli::Role::Coordinator)
}
