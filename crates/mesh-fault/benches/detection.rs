//! Detection time against false suspicions, over a range of phi thresholds, in the simulated
//! link of `mesh_fault::model` (heartbeats every 500 ms, 0-100 ms jitter, 1% loss; one
//! interval of acceptable pause; 8 peer-hours per threshold). Prints a table and writes the
//! curve to `target/fault-detection.csv` and `target/fault-detection.png`.

#![allow(
    missing_docs,
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use mesh_fault::PhiConfig;
use mesh_fault::model::{Link, run};

const THRESHOLDS: &[f64] = &[0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 10.0, 12.0, 16.0];
const SEEDS: u64 = 8;

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"))
}

fn main() {
    let link = Link::default();
    let config = PhiConfig {
        acceptable_pause: Duration::from_millis(link.interval_ms),
        ..PhiConfig::default()
    };
    let mut rows = Vec::new();
    println!("threshold  false suspicions/peer-hour  mean detection ms  worst detection ms");
    for &t in THRESHOLDS {
        let (mut falses, mut sum, mut worst, mut n) = (0u32, 0u64, 0u64, 0u64);
        for seed in 1..=SEEDS {
            let o = run(link, config, t, seed, Duration::from_secs(3_600));
            falses += o.false_suspicions;
            if let Some(d) = o.detection_ms {
                sum += d;
                worst = worst.max(d);
                n += 1;
            }
        }
        let rate = f64::from(falses) / SEEDS as f64;
        let mean = sum as f64 / n.max(1) as f64;
        println!("{t:>9.1}  {rate:>26.2}  {mean:>17.0}  {worst:>18}");
        rows.push((t, rate, mean, worst));
    }
    let dir = target_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let csv = dir.join("fault-detection.csv");
    let mut f = std::fs::File::create(&csv).unwrap();
    writeln!(
        f,
        "threshold,false_suspicions_per_peer_hour,mean_detection_ms,worst_detection_ms"
    )
    .unwrap();
    for (t, rate, mean, worst) in &rows {
        writeln!(f, "{t},{rate},{mean:.1},{worst}").unwrap();
    }
    let png = dir.join("fault-detection.png");
    std::fs::write(&png, plot(&rows)).unwrap();
    println!("curve written to {} and {}", csv.display(), png.display());
}

/// A 640x400 greyscale plot: x = false suspicions per peer-hour (log scale from 0.01), y =
/// mean detection time (0 to the largest); one dot per threshold, joined by lines; axes.
fn plot(rows: &[(f64, f64, f64, u64)]) -> Vec<u8> {
    const W: usize = 640;
    const H: usize = 400;
    const M: usize = 40;
    let mut px = vec![255u8; W * H];
    let max_y = rows.iter().map(|r| r.2).fold(1.0, f64::max);
    let max_x = rows.iter().map(|r| r.1).fold(1.0, f64::max).log10();
    let min_x = -2.0f64;
    let to_px = |rate: f64, ms: f64| {
        let lx = rate.max(0.01).log10();
        let x = M as f64 + (lx - min_x) / (max_x - min_x).max(1e-9) * (W - 2 * M) as f64;
        let y = (H - M) as f64 - ms / max_y * (H - 2 * M) as f64;
        (x.round() as i64, y.round() as i64)
    };
    let mut set = |x: i64, y: i64, v: u8| {
        if (0..W as i64).contains(&x) && (0..H as i64).contains(&y) {
            px[y as usize * W + x as usize] = v;
        }
    };
    for x in M..W - M {
        set(x as i64, (H - M) as i64, 0);
    }
    for y in M..H - M {
        set(M as i64, y as i64, 0);
    }
    let points: Vec<(i64, i64)> = rows.iter().map(|r| to_px(r.1, r.2)).collect();
    for pair in points.windows(2) {
        let ((x0, y0), (x1, y1)) = (pair[0], pair[1]);
        let steps = (x1 - x0).abs().max((y1 - y0).abs()).max(1);
        for s in 0..=steps {
            set(x0 + (x1 - x0) * s / steps, y0 + (y1 - y0) * s / steps, 90);
        }
    }
    for &(x, y) in &points {
        for dx in -3..=3 {
            for dy in -3..=3 {
                set(x + dx, y + dy, 0);
            }
        }
    }
    encode_png(W, H, &px)
}

/// A greyscale 8-bit PNG (zlib-compressed scanlines, CRC-32 per chunk).
fn encode_png(w: usize, h: usize, px: &[u8]) -> Vec<u8> {
    let mut raw = Vec::with_capacity((w + 1) * h);
    for row in px.chunks(w) {
        raw.push(0); // filter: none
        raw.extend_from_slice(row);
    }
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(&raw).unwrap();
    let idat = z.finish().unwrap();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&(w as u32).to_be_bytes());
    ihdr.extend_from_slice(&(h as u32).to_be_bytes());
    // Depth 8, greyscale, deflate, no filter, no interlace.
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    for (kind, data) in [(&b"IHDR"[..], &ihdr[..]), (b"IDAT", &idat), (b"IEND", &[])] {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut crc = crc32fast::Hasher::new();
        crc.update(kind);
        crc.update(data);
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        out.extend_from_slice(&crc.finalize().to_be_bytes());
    }
    out
}
