//! The embedding engine on the real all-MiniLM-L6-v2 (fetched by `cargo xtask models`):
//! token ids and vectors pinned against reference implementations (`tests/reference/`),
//! paraphrases against unrelated sentences, bad input and damaged model files.

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use mesh_memory::embed::{self, MAX_TEXT_BYTES, Tokenizer};
use mesh_memory::{Embedder, Error, HashingEmbedder, MiniLm};

/// The model's directory; panics with what to run when its files are missing.
fn model_dir() -> PathBuf {
    let dir = embed::minilm_dir();
    for file in ["config.json", "tokenizer.json", "model.safetensors"] {
        assert!(
            dir.join(file).is_file(),
            "the all-MiniLM-L6-v2 model is not in {} (no {file}): run `cargo xtask models` to \
             fetch and verify it (`cargo xtask test` does this first)",
            dir.display()
        );
    }
    dir
}

/// The model, loaded once for all tests of this file.
fn model() -> &'static MiniLm {
    static MODEL: OnceLock<MiniLm> = OnceLock::new();
    MODEL.get_or_init(|| {
        let dir = model_dir();
        MiniLm::load(&dir)
            .unwrap_or_else(|e| panic!("{e}: run `cargo xtask models` to fetch the model again"))
    })
}

fn reference(name: &str) -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/reference")
        .join(name);
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[test]
fn token_ids_match_the_reference_tokenizer() {
    let bytes = std::fs::read(model_dir().join("tokenizer.json")).unwrap();
    let tokenizer = Tokenizer::from_json(&bytes).unwrap();
    let cases = reference("tokens.json");
    let cases = cases.as_array().unwrap();
    // 12 picked by hand, then 300 random ones.
    assert_eq!(cases.len(), 312);
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|id| id.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(tokenizer.encode(text, usize::MAX), want, "text {text:?}");
    }
    // The model's own tokenizer is the same, and truncation keeps [CLS] .. [SEP] at 256.
    let long = "word ".repeat(1_000);
    let ids = model().tokenizer().encode(&long, MiniLm::MAX_TOKENS);
    assert_eq!(ids.len(), MiniLm::MAX_TOKENS);
    assert_eq!((ids[0], ids[255]), (101, 102));
}

#[test]
fn vectors_match_the_numpy_reference() {
    let cases = reference("embeddings.json");
    let cases = cases.as_array().unwrap();
    let texts: Vec<&str> = cases.iter().map(|c| c["text"].as_str().unwrap()).collect();
    // As one padded batch (the reference ran each text alone, unpadded).
    let got = model().embed(&texts).unwrap();
    assert_eq!(got.len(), cases.len());
    for (case, v) in cases.iter().zip(&got) {
        let want: Vec<f32> = case["vector"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(v.len(), 384);
        let worst = v
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        println!(
            "{:>3} tokens, max |ours - numpy| = {worst:.2e}: {:?}",
            case["tokens"],
            case["text"]
                .as_str()
                .unwrap()
                .chars()
                .take(30)
                .collect::<String>()
        );
        assert!(worst < 1e-5, "{worst} for {:?}", case["text"]);
    }
}

/// Pairs of paraphrases; any two sentences from different pairs are unrelated.
const PARAPHRASES: &[(&str, &str)] = &[
    (
        "A man is playing a guitar.",
        "Someone is strumming a guitar.",
    ),
    (
        "The cat is sleeping on the sofa.",
        "A cat naps on the couch.",
    ),
    (
        "How do I reset my password?",
        "What are the steps to change a forgotten password?",
    ),
    (
        "The stock market fell sharply today.",
        "Share prices dropped steeply on the exchange today.",
    ),
    (
        "She is cooking pasta in the kitchen.",
        "A woman is preparing spaghetti in the kitchen.",
    ),
    (
        "The train to Berlin was delayed by an hour.",
        "Our Berlin train arrived an hour late.",
    ),
    (
        "Children are playing football in the park.",
        "Kids are kicking a soccer ball around the park.",
    ),
    (
        "The meeting has been moved to Friday.",
        "We rescheduled the meeting for Friday.",
    ),
    (
        "It is raining heavily outside.",
        "There is a heavy downpour outside.",
    ),
    (
        "The agent stores its memories in a vector index.",
        "An index of vectors keeps the agent's memories.",
    ),
];

#[test]
fn paraphrases_are_closer_than_unrelated_sentences() {
    let texts: Vec<&str> = PARAPHRASES.iter().flat_map(|(a, b)| [*a, *b]).collect();
    let v = model().embed(&texts).unwrap();
    let paraphrase: Vec<f32> = (0..PARAPHRASES.len())
        .map(|i| dot(&v[2 * i], &v[2 * i + 1]))
        .collect();
    let mut unrelated = Vec::new();
    for i in 0..texts.len() {
        for j in i + 1..texts.len() {
            if i / 2 != j / 2 {
                unrelated.push(dot(&v[i], &v[j]));
            }
        }
    }
    let min_para = paraphrase.iter().copied().fold(f32::INFINITY, f32::min);
    let max_unrel = unrelated.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mean_unrel = unrelated.iter().sum::<f32>() / unrelated.len() as f32;
    println!("paraphrase cosines: {paraphrase:.3?}");
    println!(
        "paraphrases min {min_para:.3}; {} unrelated pairs: max {max_unrel:.3}, mean \
         {mean_unrel:.3}; margin {:.3}",
        unrelated.len(),
        min_para - max_unrel
    );
    assert!(
        min_para - max_unrel >= MARGIN,
        "margin {}",
        min_para - max_unrel
    );

    // The hashing fallback sees shared words only: it does not separate these.
    let h = HashingEmbedder::default().embed(&texts).unwrap();
    let h_min = (0..PARAPHRASES.len())
        .map(|i| dot(&h[2 * i], &h[2 * i + 1]))
        .fold(f32::INFINITY, f32::min);
    println!("hashing fallback: paraphrases min {h_min:.3}");
}

/// What `paraphrases_are_closer_than_unrelated_sentences` asserts.
const MARGIN: f32 = 0.2;

#[test]
fn every_vector_has_unit_norm_and_padding_changes_nothing() {
    let texts = [
        "short",
        "A somewhat longer sentence about agents that remember what they learnt.",
        "Ünïcödé, 北京, and emoji 🦀 in one line",
        &"many words ".repeat(200),
    ];
    let batch = model().embed(&texts).unwrap();
    for (text, v) in texts.iter().zip(&batch) {
        let norm = dot(v, v).sqrt();
        assert!((norm - 1.0).abs() <= 1e-5, "norm {norm}");
        let alone = model().embed_one(text).unwrap();
        let worst = alone
            .iter()
            .zip(v)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(worst <= 1e-5, "batch vs alone differ by {worst}");
    }
    assert_eq!(model().dimension(), 384);
    assert!(model().embed(&[]).unwrap().is_empty());
    // More texts than one chunk, in their order.
    let many: Vec<String> = (0..70).map(|i| format!("note number {i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let out = model().embed(&many).unwrap();
    assert_eq!(out[45], model().embed_one(many[45]).unwrap().clone());
}

#[test]
fn bad_input_is_a_typed_error() {
    let m = model();
    assert!(matches!(
        m.embed(&["fine", ""]),
        Err(Error::EmptyText { index: 1 })
    ));
    assert!(matches!(
        m.embed(&[" \n\t "]),
        Err(Error::EmptyText { index: 0 })
    ));
    // Only characters the normaliser drops.
    assert!(matches!(
        m.embed(&["\u{200b}\u{7}\u{feff}"]),
        Err(Error::EmptyText { index: 0 })
    ));
    let long = "x".repeat(MAX_TEXT_BYTES + 1);
    assert!(matches!(
        m.embed(&["fine", &long]),
        Err(Error::TextTooLong {
            index: 1,
            limit: MAX_TEXT_BYTES,
            ..
        })
    ));
}

#[test]
fn missing_or_damaged_model_files_are_named() {
    let src = model_dir();
    let missing = MiniLm::load(Path::new("/nonexistent/models/x")).unwrap_err();
    assert!(
        matches!(&missing, Error::Model { path, .. } if path.ends_with("config.json")),
        "{missing}"
    );
    let dir = tempfile::tempdir().unwrap();
    let copy = |name: &str| std::fs::copy(src.join(name), dir.path().join(name)).unwrap();
    copy("config.json");
    copy("tokenizer.json");
    let load_err = || {
        let err = MiniLm::load(dir.path()).unwrap_err();
        match &err {
            Error::Model { path, .. } => (path.file_name().unwrap().to_owned(), err.to_string()),
            other => panic!("not a model error: {other}"),
        }
    };
    assert_eq!(load_err().0, "model.safetensors");
    // Truncated weights.
    let weights = std::fs::read(src.join("model.safetensors")).unwrap();
    std::fs::write(dir.path().join("model.safetensors"), &weights[..4096]).unwrap();
    let (file, msg) = load_err();
    assert_eq!(file, "model.safetensors", "{msg}");
    // A malformed tokenizer and a config of another architecture.
    std::fs::write(dir.path().join("tokenizer.json"), b"{\"model\": 1}").unwrap();
    assert_eq!(load_err().0, "tokenizer.json");
    std::fs::write(
        dir.path().join("config.json"),
        br#"{"model_type": "gpt2", "hidden_act": "gelu"}"#,
    )
    .unwrap();
    let (file, msg) = load_err();
    assert_eq!(file, "config.json");
    assert!(msg.contains("model_type"), "{msg}");
}
