//! What a run tells people and programs: the run document (run.json), and one exporter per
//! output format behind one trait, each called after every size so a crash keeps what was measured.

pub mod commands;
pub mod compare;
pub mod csv;
pub mod history;
pub mod hlog;
pub mod html;
pub mod json;
pub mod markdown;
pub mod nccl_import;
pub mod outputs;
pub mod phase;
pub mod progress;
pub mod prom;
pub mod read;
pub mod svg;
pub mod table;
pub mod verdict;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::bootstrap::{Launcher, RankInfo};
use crate::metrics::Record;
use crate::plan::SweepPlan;

pub const SCHEMA_VERSION: u32 = 1;

#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Complete,
    Failed,
}

#[derive(Clone, Debug, Serialize)]
pub struct BackendInfo {
    pub name: String,
    pub library_version: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct HostEntry {
    pub hostname: String,
    pub ranks: Vec<usize>,
}

#[derive(Clone, Debug, Serialize, Default)]
pub struct Summary {
    pub records: u64,
    pub wrong_total: u64,
    pub wrong_ok: bool,
    /// Mean bus bandwidth over all rows of each collective, as nccl-tests' "Avg bus bandwidth".
    pub avg_busbw_gbps: BTreeMap<String, f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Files {
    pub histograms: String,
    pub progress: String,
}

/// Everything run.json holds.
#[derive(Clone, Debug, Serialize)]
pub struct RunDoc {
    pub schema_version: u32,
    pub collbench_version: String,
    pub status: RunStatus,
    pub command_line: Vec<String>,
    pub start_time: String,
    pub end_time: Option<String>,
    pub launcher: Launcher,
    pub world_size: usize,
    pub hosts: Vec<HostEntry>,
    pub ranks: Vec<RankInfo>,
    pub backend: BackendInfo,
    pub config: SweepPlan,
    pub notes: Vec<String>,
    pub results: Vec<Record>,
    pub summary: Summary,
    pub files: Files,
    pub error: Option<String>,
    /// The readiness verdict, when the run had `--topology`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verdict: Option<verdict::Verdict>,
}

impl RunDoc {
    /// Recomputes the summary from the records.
    pub fn refresh_summary(&mut self) {
        let mut sums: BTreeMap<String, (f64, u64)> = BTreeMap::new();
        for r in &self.results {
            let e = sums.entry(r.op.name().to_string()).or_default();
            e.0 += r.busbw_gbps;
            e.1 += 1;
        }
        let wrong_total = self.results.iter().filter_map(|r| r.wrong).sum();
        self.summary = Summary {
            records: self.results.len() as u64,
            wrong_total,
            wrong_ok: wrong_total == 0,
            avg_busbw_gbps: sums
                .into_iter()
                .map(|(k, (s, n))| (k, s / n.max(1) as f64))
                .collect(),
        };
    }
}

/// UTC time as RFC 3339 with seconds.
pub fn rfc3339_now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// One output format. `step` gets the records of one size (all placements) as they are measured.
pub trait Exporter {
    fn start(&mut self, run: &RunDoc) -> std::io::Result<()>;
    fn step(&mut self, run: &RunDoc, records: &[Record]) -> std::io::Result<()>;
    fn finish(&mut self, run: &RunDoc) -> std::io::Result<()>;
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
