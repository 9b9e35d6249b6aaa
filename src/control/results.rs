//! The results the ranks upload to the controller: merged per sweep row (op, type, reduction, size,
//! placement) as they arrive,
//! written once at the end as controller_results.json (summary and V2 histogram per key).

use std::path::Path;

use serde::Serialize;

use super::controller::Timeline;
use crate::metrics::LatencySummary;
use crate::Failure;

pub const FILE: &str = "controller_results.json";

#[derive(Serialize)]
struct Doc<'a> {
    registered_ranks: usize,
    world_size: Option<usize>,
    results: Vec<Row<'a>>,
}

#[derive(Serialize)]
struct Row<'a> {
    op: &'a str,
    dtype: &'a str,
    redop: &'a str,
    size_bytes: u64,
    placement: &'a str,
    ranks: u64,
    uploads: u64,
    latency: LatencySummary,
    /// `LatencyHistogram::to_bytes`, base64.
    histogram: String,
}

/// Writes the merged results into `dir` (atomically) and says where; without a folder, prints
/// each key's summary instead.
pub fn write(dir: Option<&Path>, t: &Timeline) -> Result<(), Failure> {
    use base64::Engine;
    let t0 = std::time::Instant::now();
    let rows: Vec<Row> = t
        .results
        .iter()
        .map(|m| Row {
            op: &m.key.op,
            dtype: &m.key.dtype,
            redop: &m.key.redop,
            size_bytes: m.key.size,
            placement: &m.key.placement,
            ranks: m.ranks,
            uploads: m.uploads,
            latency: m.hist.summary(),
            histogram: base64::engine::general_purpose::STANDARD.encode(m.hist.to_bytes()),
        })
        .collect();
    let uploads: u64 = rows.iter().map(|r| r.uploads).sum();
    let Some(dir) = dir else {
        for r in &rows {
            println!(
                "# {} {} {} {} B {}: {} ranks, {} samples, p50 {:.1} us, p99 {:.1} us",
                r.op,
                r.dtype,
                r.redop,
                r.size_bytes,
                r.placement,
                r.ranks,
                r.latency.samples,
                r.latency.p50_us,
                r.latency.p99_us
            );
        }
        return Ok(());
    };
    let doc = Doc {
        registered_ranks: t.registered,
        world_size: t.world_size,
        results: rows,
    };
    let path = dir.join(FILE);
    let bytes = serde_json::to_vec_pretty(&doc).expect("results serialize");
    std::fs::create_dir_all(dir)
        .and_then(|_| crate::report::outputs::write_atomic(&path, &bytes))
        .map_err(|e| Failure::CouldNotRun(format!("writing {}: {e}", path.display())))?;
    println!(
        "# {uploads} uploaded histograms from {} ranks merged into {} results: {} ({:.1} ms to write)",
        t.registered,
        doc.results.len(),
        path.display(),
        t0.elapsed().as_secs_f64() * 1e3
    );
    Ok(())
}
