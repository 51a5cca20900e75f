//! Runnable examples of embedding agentmesh crates; see the `[[example]]` targets.
