//! Cross-crate benchmarks live under `benches/`; this library is empty on purpose.
