//! Finding the data sets that `cargo xtask data` fetched.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use mesh_learning::Dataset;

/// Where `cargo xtask data` stores the data sets: `$MESH_DATA_DIR`, else
/// `$CARGO_TARGET_DIR/data`, else the workspace's `target/data`.
pub(crate) fn data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("MESH_DATA_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(target).join("data");
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/data")
}

/// The 8x8 digits; panics with what to run when the file is missing.
#[allow(dead_code)] // not every test binary reads the digits
pub(crate) fn digits() -> Dataset {
    let path = data_dir().join("digits.csv");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "the digits data set is not at {} ({e}): run `cargo xtask data` to fetch and \
             verify it (`cargo xtask test` does this first)",
            path.display()
        )
    });
    Dataset::digits_from_csv(&text).expect("digits.csv is verified by hash; parsing must work")
}

/// The 10,000 MNIST digits; panics with what to run when the file is missing.
#[allow(dead_code)] // not every test binary reads MNIST
pub(crate) fn mnist() -> Dataset {
    let path = data_dir().join("mnist.bin");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "the MNIST digits are not at {} ({e}): run `cargo xtask data` to fetch and verify \
             them (`cargo xtask test` does this first)",
            path.display()
        )
    });
    Dataset::mnist_from_bytes(&bytes).expect("mnist.bin is verified by hash; parsing must work")
}
