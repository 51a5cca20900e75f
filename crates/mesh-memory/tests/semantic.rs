//! Semantic memory: chunking, search by meaning with the real model, metadata filters,
//! reopening a disk store, bad input and damaged records.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mesh_memory::embed::{self, MiniLm};
use mesh_memory::semantic::{ChunkParams, MAX_K, chunk};
use mesh_memory::{Attributes, Error, HashingEmbedder, Semantic};
use mesh_store::{DiskStore, Kv as _, MemStore, Store as _};

fn model() -> MiniLm {
    let dir = embed::minilm_dir();
    assert!(
        dir.join("model.safetensors").is_file(),
        "the all-MiniLM-L6-v2 model is not in {}: run `cargo xtask models` (`cargo xtask test` \
         does this first)",
        dir.display()
    );
    MiniLm::load(&dir).unwrap()
}

fn meta(pairs: &[(&str, &str)]) -> Attributes {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

const NOTES: &[(&str, &str, &str)] = &[
    (
        "cooking",
        "personal",
        "To make bread, mix flour, water, salt and yeast, knead the dough and let it rise before baking it in a hot oven.",
    ),
    (
        "consensus",
        "work",
        "The validators agree on each block with a quorum certificate; a faulty primary is replaced after a view change.",
    ),
    (
        "training",
        "work",
        "Each client trains the model on its own data and sends a compressed update to the aggregator every round.",
    ),
    (
        "travel",
        "personal",
        "The train to the mountains leaves at seven in the morning and the hotel is near the station.",
    ),
];

#[test]
fn chunks_have_the_asked_size_and_overlap() {
    let text = (0..300)
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join("  \n ");
    let chunks = chunk(
        &text,
        ChunkParams {
            words: 100,
            overlap: 10,
        },
    );
    let sizes: Vec<usize> = chunks.iter().map(|c| c.split(' ').count()).collect();
    assert_eq!(sizes, [100, 100, 100, 30]);
    assert!(chunks[1].starts_with("w90 "));
    assert!(chunks[3].ends_with("w299"));
    assert!(chunk(" \n\t ", ChunkParams::default()).is_empty());
    assert_eq!(chunk("one", ChunkParams::default()), ["one"]);
}

#[test]
fn the_real_model_finds_notes_by_meaning_and_filters_apply() {
    let store = MemStore::new();
    let m = model();
    let mut memory = Semantic::open(&store, "semantic", &m).unwrap();
    for (source, area, text) in NOTES {
        memory.add(source, text, &meta(&[("area", area)])).unwrap();
    }
    assert_eq!(memory.len(), NOTES.len());
    // Paraphrased questions that share few words with the notes.
    for (query, want) in [
        ("how do I bake a loaf?", "cooking"),
        ("who replaces a broken leader node?", "consensus"),
        ("federated learning rounds", "training"),
        ("when does my railway journey start?", "travel"),
    ] {
        let hits = memory.search(query, 2, &Attributes::new()).unwrap();
        assert_eq!(hits[0].chunk.source, want, "{query}: {hits:?}");
        assert!(hits[0].similarity > hits[1].similarity);
    }
    // A filter keeps only matching chunks, even when the best match is excluded.
    let hits = memory
        .search("how do I bake a loaf?", 3, &meta(&[("area", "work")]))
        .unwrap();
    assert_eq!(hits.len(), 2);
    assert!(hits.iter().all(|h| h.chunk.metadata["area"] == "work"));
    let none = memory
        .search("bread", 3, &meta(&[("area", "nowhere")]))
        .unwrap();
    assert!(none.is_empty());
}

#[test]
fn a_disk_store_reopens_with_the_same_chunks_and_answers() {
    let dir = tempfile::tempdir().unwrap();
    let embedder = HashingEmbedder::new(384).unwrap();
    let first;
    {
        let store = DiskStore::open(dir.path()).unwrap();
        let mut memory = Semantic::open(&store, "semantic", embedder).unwrap();
        for (source, area, text) in NOTES {
            memory.add(source, text, &meta(&[("area", area)])).unwrap();
        }
        first = memory
            .search("mix flour, water, salt and yeast", 2, &Attributes::new())
            .unwrap();
    }
    let store = DiskStore::open(dir.path()).unwrap();
    let mut memory = Semantic::open(&store, "semantic", embedder).unwrap();
    assert_eq!(memory.len(), NOTES.len());
    let again = memory
        .search("mix flour, water, salt and yeast", 2, &Attributes::new())
        .unwrap();
    assert_eq!(first, again);
    assert_eq!(first[0].chunk.source, "cooking");
    // New chunks continue the ids.
    let ids = memory
        .add("more", "another note", &Attributes::new())
        .unwrap();
    assert_eq!(ids, [NOTES.len() as u64]);
    assert_eq!(memory.get(ids[0]).unwrap().text, "another note");
}

#[test]
fn bad_input_is_refused_with_typed_errors() {
    let store = MemStore::new();
    let mut memory = Semantic::open(&store, "s", HashingEmbedder::new(16).unwrap()).unwrap();
    let none = Attributes::new();
    assert!(matches!(
        memory.add("src", "", &none),
        Err(Error::Empty { .. })
    ));
    assert!(matches!(
        memory.add("src", "  \n ", &none),
        Err(Error::Empty { .. })
    ));
    assert!(matches!(
        memory.add("bad source!", "text", &none),
        Err(Error::BadName { .. })
    ));
    let huge = "word ".repeat(20_000);
    assert!(matches!(
        memory.add("src", &huge, &none),
        Err(Error::TooLong { .. })
    ));
    assert!(matches!(
        memory.add("src", "text", &meta(&[("bad key", "v")])),
        Err(Error::BadName { .. })
    ));
    assert!(memory.is_empty(), "nothing refused was stored");
    memory.add("src", "some text", &none).unwrap();
    assert!(matches!(
        memory.search("q", 0, &none),
        Err(Error::Invalid(_))
    ));
    assert!(matches!(
        memory.search("q", MAX_K + 1, &none),
        Err(Error::Invalid(_))
    ));
    assert!(memory.search("", 1, &none).is_err());
}

#[test]
fn damaged_records_and_another_dimension_are_corrupt() {
    let store = MemStore::new();
    {
        let mut memory = Semantic::open(&store, "s", HashingEmbedder::new(16).unwrap()).unwrap();
        memory.add("src", "a note", &Attributes::new()).unwrap();
    }
    // Opened with an embedder of another dimension.
    let e = Semantic::open(&store, "s", HashingEmbedder::new(32).unwrap()).unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    // A truncated record.
    let kv = store.kv("s").unwrap();
    let (key, value) = kv.scan_prefix(b"C", 1).unwrap().remove(0);
    kv.put(&key, &value[..value.len() - 3]).unwrap();
    let e = Semantic::open(&store, "s", HashingEmbedder::new(16).unwrap()).unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    // A record under an unexpected id.
    kv.put(&key, &value).unwrap();
    let mut far = key.clone();
    far[8] = 9;
    kv.put(&far, &value).unwrap();
    let e = Semantic::open(&store, "s", HashingEmbedder::new(16).unwrap()).unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
}
