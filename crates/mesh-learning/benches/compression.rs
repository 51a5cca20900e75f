//! Compression and aggregation benches (filled in next).
fn main() {}
