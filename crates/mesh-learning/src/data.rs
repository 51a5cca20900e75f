//! Data sets in memory, the digits parser, train/test splits and partitioning across clients.
//!
//! A [`Dataset`] is a dense row-major matrix of `f32` features with one class label per row.
//! Parsing takes bytes from the caller: this crate never opens files (the data set itself is
//! fetched and verified by `cargo xtask data`).

use crate::error::{Error, Result};
use crate::rng::Rng;

/// Samples in scikit-learn's 8x8 digits set.
pub const DIGITS_SAMPLES: usize = 1797;
/// Features of a digit: 8x8 pixels.
pub const DIGITS_FEATURES: usize = 64;
/// Classes of the digits set: 0 to 9.
pub const DIGITS_CLASSES: usize = 10;
/// The largest pixel value of the digits set (pixels count set bits of a 4x4 block of a
/// 32x32 bitmap).
pub const DIGITS_MAX_PIXEL: f32 = 16.0;

/// Side of an MNIST image in pixels.
pub const MNIST_SIDE: usize = 28;
/// Features of an MNIST image: 28x28 pixels.
pub const MNIST_FEATURES: usize = MNIST_SIDE * MNIST_SIDE;
/// Most images an MNIST file may hold (the original set has 70,000).
pub const MNIST_MAX_SAMPLES: usize = 70_000;
/// The first bytes of the MNIST file `cargo xtask data` writes.
pub const MNIST_MAGIC: &[u8; 8] = b"AGMNIST1";

/// Features and labels of a classification data set.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    features: Vec<f32>,
    labels: Vec<u32>,
    dim: usize,
    classes: usize,
}

impl Dataset {
    /// A data set of `labels.len()` rows of `dim` features each (row-major), labels below
    /// `classes`. Rejects mismatched lengths, labels out of range and non-finite features.
    pub fn new(features: Vec<f32>, labels: Vec<u32>, dim: usize, classes: usize) -> Result<Self> {
        if dim == 0 || classes < 2 {
            return Err(Error::invalid(
                "data set",
                format!("needs at least one feature and two classes (got {dim}, {classes})"),
            ));
        }
        if features.len() != labels.len() * dim {
            return Err(Error::invalid(
                "data set",
                format!(
                    "{} features for {} rows of {dim}",
                    features.len(),
                    labels.len()
                ),
            ));
        }
        if let Some(bad) = labels.iter().find(|&&l| l as usize >= classes) {
            return Err(Error::invalid(
                "data set",
                format!("label {bad} with {classes} classes"),
            ));
        }
        if let Some(i) = features.iter().position(|x| !x.is_finite()) {
            return Err(Error::invalid(
                "data set",
                format!("non-finite feature in row {}", i / dim),
            ));
        }
        Ok(Self {
            features,
            labels,
            dim,
            classes,
        })
    }

    /// Parses scikit-learn's `digits.csv` (the content of `sklearn/datasets/data/digits.csv.gz`
    /// once decompressed): one image per line, 64 pixel values in `0..=16` then the label in
    /// `0..=9`, comma-separated, numbers written as integers or floats. Pixels are scaled to
    /// `[0, 1]`. Every line must be well-formed and the file must hold exactly
    /// [`DIGITS_SAMPLES`] images.
    pub fn digits_from_csv(text: &str) -> Result<Self> {
        const WHAT: &str = "digits csv";
        let malformed = |line: usize, detail: String| Error::Malformed {
            what: WHAT,
            line,
            detail,
        };
        let mut features = Vec::with_capacity(DIGITS_SAMPLES * DIGITS_FEATURES);
        let mut labels = Vec::with_capacity(DIGITS_SAMPLES);
        for (i, line) in text.lines().enumerate() {
            let line_no = i + 1;
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let mut fields = 0;
            for (j, field) in line.split(',').enumerate() {
                fields += 1;
                if j > DIGITS_FEATURES {
                    continue;
                }
                let value: f64 = field.trim().parse().map_err(|_| {
                    malformed(
                        line_no,
                        format!("field {} is not a number: {field:?}", j + 1),
                    )
                })?;
                let max = if j == DIGITS_FEATURES {
                    (DIGITS_CLASSES - 1) as f64
                } else {
                    f64::from(DIGITS_MAX_PIXEL)
                };
                if value.fract() != 0.0 || !(0.0..=max).contains(&value) {
                    return Err(malformed(
                        line_no,
                        format!(
                            "field {} is {value}, expected an integer in 0..={max}",
                            j + 1
                        ),
                    ));
                }
                if j == DIGITS_FEATURES {
                    labels.push(value as u32);
                } else {
                    features.push(value as f32 / DIGITS_MAX_PIXEL);
                }
            }
            if fields != DIGITS_FEATURES + 1 {
                return Err(malformed(
                    line_no,
                    format!("{fields} fields, expected {}", DIGITS_FEATURES + 1),
                ));
            }
        }
        if labels.len() != DIGITS_SAMPLES {
            return Err(malformed(
                0,
                format!("{} images, expected {DIGITS_SAMPLES}", labels.len()),
            ));
        }
        Self::new(features, labels, DIGITS_FEATURES, DIGITS_CLASSES)
    }

    /// Parses the MNIST file `cargo xtask data` writes (`mnist.bin`, converted from a registry
    /// package that ships MNIST digits): [`MNIST_MAGIC`], the image count (`u32`
    /// little-endian), the height and width (one byte each, both 28), then per image its
    /// label (one byte, `0..=9`) and its 784 pixels (one byte each, row-major, `0..=255`).
    /// Pixels are scaled to `[0, 1]`. A wrong magic, size, count or label is an error.
    pub fn mnist_from_bytes(bytes: &[u8]) -> Result<Self> {
        const WHAT: &str = "mnist file";
        let malformed = |detail: String| Error::Malformed {
            what: WHAT,
            line: 0,
            detail,
        };
        let header = MNIST_MAGIC.len() + 6;
        if bytes.len() < header || &bytes[..MNIST_MAGIC.len()] != MNIST_MAGIC {
            return Err(malformed("not an agentmesh MNIST file (bad magic)".into()));
        }
        let mut count = [0u8; 4];
        count.copy_from_slice(&bytes[8..12]);
        let count = u32::from_le_bytes(count) as usize;
        let (rows, cols) = (bytes[12] as usize, bytes[13] as usize);
        if rows != MNIST_SIDE || cols != MNIST_SIDE {
            return Err(malformed(format!(
                "images of {rows}x{cols}, expected {MNIST_SIDE}x{MNIST_SIDE}"
            )));
        }
        if count == 0 || count > MNIST_MAX_SAMPLES {
            return Err(malformed(format!(
                "{count} images, expected 1..={MNIST_MAX_SAMPLES}"
            )));
        }
        let record = 1 + MNIST_FEATURES;
        if bytes.len() - header != count * record {
            return Err(malformed(format!(
                "{} bytes of images, expected {} for {count}",
                bytes.len() - header,
                count * record
            )));
        }
        let mut features = Vec::with_capacity(count * MNIST_FEATURES);
        let mut labels = Vec::with_capacity(count);
        for (i, image) in bytes[header..].chunks_exact(record).enumerate() {
            let label = image[0];
            if usize::from(label) >= DIGITS_CLASSES {
                return Err(malformed(format!("image {i} has label {label}")));
            }
            labels.push(u32::from(label));
            features.extend(image[1..].iter().map(|&p| f32::from(p) / 255.0));
        }
        Self::new(features, labels, MNIST_FEATURES, DIGITS_CLASSES)
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Features per row.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of classes (labels are below it).
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// All features, row-major.
    pub fn features(&self) -> &[f32] {
        &self.features
    }

    /// All labels.
    pub fn labels(&self) -> &[u32] {
        &self.labels
    }

    /// The features of row `i`.
    pub fn row(&self, i: usize) -> Option<&[f32]> {
        self.features.get(i * self.dim..(i + 1) * self.dim)
    }

    /// How many rows carry each label.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes];
        for &l in &self.labels {
            counts[l as usize] += 1;
        }
        counts
    }

    /// The rows at `indices`, in that order; out-of-range indices are an error.
    pub fn subset(&self, indices: &[usize]) -> Result<Self> {
        let mut features = Vec::with_capacity(indices.len() * self.dim);
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            let row = self
                .row(i)
                .ok_or_else(|| Error::invalid("subset", format!("row {i} of {}", self.len())))?;
            features.extend_from_slice(row);
            labels.push(self.labels[i]);
        }
        Ok(Self {
            features,
            labels,
            dim: self.dim,
            classes: self.classes,
        })
    }

    /// A seeded, stratified train/test split: within each class, a shuffled
    /// `round(test_fraction * count)` rows go to the test set. Returns `(train, test)`.
    pub fn split(&self, test_fraction: f64, rng: &mut Rng) -> Result<(Self, Self)> {
        if !(test_fraction > 0.0 && test_fraction < 1.0) {
            return Err(Error::invalid(
                "split",
                format!("test fraction {test_fraction} outside (0, 1)"),
            ));
        }
        let mut train = Vec::new();
        let mut test = Vec::new();
        for mut rows in self.rows_by_class() {
            rng.shuffle(&mut rows);
            let n_test = (test_fraction * rows.len() as f64).round() as usize;
            test.extend_from_slice(&rows[..n_test]);
            train.extend_from_slice(&rows[n_test..]);
        }
        rng.shuffle(&mut train);
        rng.shuffle(&mut test);
        Ok((self.subset(&train)?, self.subset(&test)?))
    }

    fn rows_by_class(&self) -> Vec<Vec<usize>> {
        let mut by_class = vec![Vec::new(); self.classes];
        for (i, &l) in self.labels.iter().enumerate() {
            by_class[l as usize].push(i);
        }
        by_class
    }

    /// IID partition: the rows shuffled and dealt into `clients` shards whose sizes differ by
    /// at most one. Returns row indices per client.
    pub fn partition_iid(&self, clients: usize, rng: &mut Rng) -> Result<Vec<Vec<usize>>> {
        if clients == 0 || clients > self.len() {
            return Err(Error::invalid(
                "partition",
                format!("{clients} clients for {} rows", self.len()),
            ));
        }
        let mut rows: Vec<usize> = (0..self.len()).collect();
        rng.shuffle(&mut rows);
        let mut shards = vec![Vec::new(); clients];
        for (k, row) in rows.into_iter().enumerate() {
            shards[k % clients].push(row);
        }
        Ok(shards)
    }

    /// Non-IID partition by label skew (Hsu, Qi and Brown 2019): for each class, a draw
    /// `p ~ Dirichlet(alpha)` over the clients decides what share of that class's rows each
    /// client gets. Small `alpha` (0.1) gives clients few classes; large `alpha` approaches IID.
    /// Draws are repeated until every client holds at least `min_rows` rows (at most 1,000
    /// attempts). Returns row indices per client.
    pub fn partition_dirichlet(
        &self,
        clients: usize,
        alpha: f64,
        min_rows: usize,
        rng: &mut Rng,
    ) -> Result<Vec<Vec<usize>>> {
        if clients == 0 || clients.saturating_mul(min_rows) > self.len() {
            return Err(Error::invalid(
                "partition",
                format!(
                    "{clients} clients of at least {min_rows} rows from {} rows",
                    self.len()
                ),
            ));
        }
        if !(alpha > 0.0 && alpha.is_finite()) {
            return Err(Error::invalid(
                "partition",
                format!("Dirichlet concentration {alpha}"),
            ));
        }
        let by_class = self.rows_by_class();
        for _ in 0..1000 {
            let mut shards = vec![Vec::new(); clients];
            for rows in &by_class {
                let mut rows = rows.clone();
                rng.shuffle(&mut rows);
                let p = rng.dirichlet(alpha, clients);
                let mut start = 0;
                let mut cumulative = 0.0;
                for (client, share) in p.iter().enumerate() {
                    cumulative += share;
                    let end = if client + 1 == clients {
                        rows.len()
                    } else {
                        ((cumulative * rows.len() as f64).round() as usize).clamp(start, rows.len())
                    };
                    shards[client].extend_from_slice(&rows[start..end]);
                    start = end;
                }
            }
            if shards.iter().all(|s| s.len() >= min_rows) {
                for shard in &mut shards {
                    rng.shuffle(shard);
                }
                return Ok(shards);
            }
        }
        Err(Error::invalid(
            "partition",
            format!("no Dirichlet({alpha}) draw gave {clients} clients {min_rows} rows each"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An MNIST file of `n` images (pixel `p` of image `i` is `(i + p) % 256`).
    fn mnist(n: usize) -> Vec<u8> {
        let mut out = MNIST_MAGIC.to_vec();
        out.extend_from_slice(&(n as u32).to_le_bytes());
        out.extend_from_slice(&[28, 28]);
        for i in 0..n {
            out.push((i % 10) as u8);
            out.extend((0..MNIST_FEATURES).map(|p| ((i + p) % 256) as u8));
        }
        out
    }

    #[test]
    fn mnist_files_parse_and_bad_ones_are_refused() {
        let d = Dataset::mnist_from_bytes(&mnist(12)).expect("a valid file");
        assert_eq!((d.len(), d.dim(), d.classes()), (12, MNIST_FEATURES, 10));
        assert_eq!(d.labels()[11], 1);
        assert_eq!(d.row(1).expect("row")[0], 1.0 / 255.0);
        assert_eq!(d.row(0).expect("row")[255], 1.0);
        let good = mnist(3);
        let mut bad_magic = good.clone();
        bad_magic[0] = b'X';
        let mut bad_label = good.clone();
        bad_label[14] = 10;
        let mut bad_side = good.clone();
        bad_side[12] = 27;
        let mut huge = good.clone();
        huge[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        let mut empty = good.clone();
        empty[8..12].copy_from_slice(&0u32.to_le_bytes());
        empty.truncate(14);
        for (name, bytes) in [
            ("magic", bad_magic),
            ("label", bad_label),
            ("side", bad_side),
            ("count", huge),
            ("empty", empty),
            ("truncated", good[..good.len() - 1].to_vec()),
            ("trailing", [good.as_slice(), &[0]].concat()),
            ("header only", good[..10].to_vec()),
        ] {
            assert!(
                matches!(
                    Dataset::mnist_from_bytes(&bytes),
                    Err(Error::Malformed { .. })
                ),
                "{name}"
            );
        }
    }

    /// A small synthetic digits file: `n` lines of 64 pixels and a label.
    fn csv(n: usize) -> String {
        (0..n)
            .map(|i| {
                let mut fields: Vec<String> = (0..64).map(|p| ((i + p) % 17).to_string()).collect();
                fields.push((i % 10).to_string());
                fields.join(",")
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn toy(n: usize) -> Dataset {
        let labels: Vec<u32> = (0..n as u32).map(|i| i % 10).collect();
        let features: Vec<f32> = (0..n * 4).map(|i| i as f32).collect();
        Dataset::new(features, labels, 4, 10).unwrap()
    }

    #[test]
    fn parses_a_well_formed_file_in_either_number_style() {
        let d = Dataset::digits_from_csv(&csv(DIGITS_SAMPLES)).unwrap();
        assert_eq!((d.len(), d.dim(), d.classes()), (1797, 64, 10));
        assert_eq!(d.row(1).unwrap()[0], 1.0 / 16.0);
        assert_eq!(d.labels()[13], 3);
        // scikit-learn writes floats in scientific notation.
        let floats = csv(DIGITS_SAMPLES).replace(",16", ",1.600000000000000000e+01");
        assert_eq!(Dataset::digits_from_csv(&floats).unwrap(), d);
    }

    #[test]
    fn malformed_files_are_refused_with_the_line() {
        let good = csv(DIGITS_SAMPLES);
        let mut lines: Vec<String> = good.lines().map(String::from).collect();
        let check = |lines: &[String], line: usize, needle: &str| {
            let err = Dataset::digits_from_csv(&lines.join("\n")).unwrap_err();
            let msg = err.to_string();
            assert!(
                matches!(err, Error::Malformed { line: l, .. } if l == line)
                    && msg.contains(needle),
                "{msg}"
            );
        };
        let orig = lines[4].clone();
        lines[4] = orig.replacen("0", "x", 1);
        check(&lines, 5, "not a number");
        lines[4] = format!("{orig},3");
        check(&lines, 5, "66 fields");
        lines[4] = orig.rsplit_once(',').unwrap().0.to_owned();
        check(&lines, 5, "64 fields");
        lines[4] = format!("{},10", orig.rsplit_once(',').unwrap().0);
        check(&lines, 5, "0..=9");
        lines[4] = orig.replacen("4", "17", 1);
        check(&lines, 5, "0..=16");
        lines[4] = orig.replacen("4", "4.5", 1);
        check(&lines, 5, "integer");
        lines[4] = orig;
        lines.pop();
        check(&lines, 0, "1796 images");
    }

    #[test]
    fn new_rejects_inconsistent_data() {
        assert!(Dataset::new(vec![0.0; 5], vec![0, 1], 2, 2).is_err());
        assert!(Dataset::new(vec![0.0; 4], vec![0, 2], 2, 2).is_err());
        assert!(Dataset::new(vec![0.0, f32::NAN, 0.0, 0.0], vec![0, 1], 2, 2).is_err());
        assert!(Dataset::new(vec![], vec![], 2, 2).unwrap().is_empty());
    }

    #[test]
    fn split_is_seeded_stratified_and_disjoint() {
        let d = toy(200);
        let (train, test) = d.split(0.25, &mut Rng::new(1)).unwrap();
        assert_eq!((train.len(), test.len()), (150, 50));
        assert_eq!(test.class_counts(), vec![5; 10]);
        // Rows are distinct (first feature identifies the row), and together they are all.
        let mut firsts: Vec<u32> = train
            .features()
            .chunks(4)
            .chain(test.features().chunks(4))
            .map(|r| r[0] as u32)
            .collect();
        firsts.sort_unstable();
        assert_eq!(firsts, (0..200).map(|i| i * 4).collect::<Vec<_>>());
        let (train2, test2) = d.split(0.25, &mut Rng::new(1)).unwrap();
        assert_eq!((&train, &test), (&train2, &test2));
        let (train3, _) = d.split(0.25, &mut Rng::new(2)).unwrap();
        assert_ne!(train, train3);
        assert!(d.split(0.0, &mut Rng::new(1)).is_err());
    }

    fn assert_partition(shards: &[Vec<usize>], n: usize) {
        let mut all: Vec<usize> = shards.iter().flatten().copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..n).collect::<Vec<_>>());
    }

    #[test]
    fn iid_partition_deals_everything_evenly() {
        let d = toy(103);
        let shards = d.partition_iid(10, &mut Rng::new(5)).unwrap();
        assert_partition(&shards, 103);
        assert!(shards.iter().all(|s| s.len() == 10 || s.len() == 11));
        assert!(d.partition_iid(0, &mut Rng::new(5)).is_err());
    }

    #[test]
    fn dirichlet_partition_skews_labels_more_as_alpha_shrinks() {
        let d = toy(1000);
        // The mean over clients of the largest share one class has of a client's rows.
        let skew = |alpha: f64| {
            let shards = d
                .partition_dirichlet(10, alpha, 10, &mut Rng::new(9))
                .unwrap();
            assert_partition(&shards, 1000);
            assert!(shards.iter().all(|s| s.len() >= 10));
            shards
                .iter()
                .map(|s| {
                    let sub = d.subset(s).unwrap();
                    *sub.class_counts().iter().max().unwrap() as f64 / s.len() as f64
                })
                .sum::<f64>()
                / 10.0
        };
        let (skewed, mild, iid) = (skew(0.1), skew(1.0), skew(1000.0));
        assert!(
            skewed > 0.6 && skewed > mild && mild > iid && iid < 0.2,
            "{skewed} {mild} {iid}"
        );
        assert!(
            d.partition_dirichlet(10, 0.5, 101, &mut Rng::new(9))
                .is_err()
        );
        assert!(d.partition_dirichlet(10, 0.0, 1, &mut Rng::new(9)).is_err());
    }
}
