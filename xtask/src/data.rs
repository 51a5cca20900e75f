//! `cargo xtask data`: the data sets the tests use, fetched from a package registry with its
//! ordinary client and verified by hash.
//!
//! The 8x8 handwritten digits (1,797 images) ship inside scikit-learn's wheels as
//! `sklearn/datasets/data/digits.csv.gz`. We download one pinned wheel with pip (which checks
//! the wheel's sha256, recorded below from PyPI's JSON API), check that hash again ourselves,
//! read the one entry out of the zip, check its hash, decompress it and check the CSV's hash,
//! and store the CSV as `target/data/digits.csv` (or `$CARGO_TARGET_DIR/data/digits.csv`).
//! A present file with the right hash is not fetched again.

use std::fs;
use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, Result, bail, ensure};

use crate::fetch::{Wheel, sha256_hex, write_atomic, zip_entry};

/// The pinned wheel: any scikit-learn wheel carries the same data file; this is the
/// smallest file of release 1.9.1.
const WHEEL_REQUIREMENT: &str = "scikit-learn==1.9.1";
const WHEEL_FILE: &str = "scikit_learn-1.9.1-cp313-cp313-win_arm64.whl";
/// pip's platform selection for that file.
const WHEEL_PLATFORM: &[&str] = &[
    "--platform",
    "win_arm64",
    "--python-version",
    "3.13",
    "--implementation",
    "cp",
    "--abi",
    "cp313",
];
/// The wheel's sha256 as PyPI's JSON API lists it (`digests.sha256` of that file).
const WHEEL_SHA256: &str = "613f0a783ca05aa844a4e1ac42d48425058f2c52be73f40f8cd98b7cd111acd6";
/// The entry inside the wheel.
const ENTRY: &str = "sklearn/datasets/data/digits.csv.gz";
/// sha256 of that entry (the gzip file as stored in the wheel).
const ENTRY_SHA256: &str = "09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22";
/// The file we store, and the sha256 of its content (the decompressed CSV).
pub(crate) const DIGITS_FILE: &str = "digits.csv";
const DIGITS_SHA256: &str = "6ebb3d2fee246a4e99363262ddf8a00a3c41bee6014c373ed9d9216ba7f651b8";

/// `cargo xtask data`.
pub(crate) fn run(args: &[String]) -> Result<()> {
    if let Some(unknown) = args.first() {
        bail!("`cargo xtask data` takes no options (got {unknown:?})");
    }
    ensure_digits().map(|path| println!("data: {}", path.display()))
}

/// Where the data sets live: `$CARGO_TARGET_DIR/data` or `<workspace>/target/data`.
pub(crate) fn data_dir() -> PathBuf {
    crate::util::target_dir().join("data")
}

/// Makes sure `digits.csv` is present and intact; returns its path.
pub(crate) fn ensure_digits() -> Result<PathBuf> {
    let dir = data_dir();
    let path = dir.join(DIGITS_FILE);
    if let Ok(bytes) = fs::read(&path) {
        if sha256_hex(&bytes) == DIGITS_SHA256 {
            return Ok(path);
        }
        println!(
            "data: {} has the wrong hash; fetching again",
            path.display()
        );
    }
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let wheel_dir = dir.join("wheel");
    let bytes = Wheel {
        requirement: WHEEL_REQUIREMENT,
        file: WHEEL_FILE,
        sha256: WHEEL_SHA256,
        platform: WHEEL_PLATFORM,
        purpose: "the scikit-learn wheel holding the digits data",
        log: "data",
    }
    .fetch(&wheel_dir)?;
    let gz =
        zip_entry(&bytes, ENTRY).with_context(|| format!("reading {ENTRY} from {WHEEL_FILE}"))?;
    ensure!(
        sha256_hex(&gz) == ENTRY_SHA256,
        "{ENTRY} in {WHEEL_FILE} does not have the pinned sha256 {ENTRY_SHA256}"
    );
    let mut csv = Vec::new();
    flate2::read::GzDecoder::new(gz.as_slice())
        .read_to_end(&mut csv)
        .with_context(|| format!("decompressing {ENTRY}"))?;
    ensure!(
        sha256_hex(&csv) == DIGITS_SHA256,
        "decompressed {ENTRY} does not have the pinned sha256 {DIGITS_SHA256}"
    );
    write_atomic(&path, &csv)?;
    // The wheel has served its purpose; the checked CSV is what the tests read.
    let _ = fs::remove_dir_all(&wheel_dir);
    println!(
        "data: stored {} ({} bytes, sha256 checked)",
        path.display(),
        csv.len()
    );
    Ok(path)
}
