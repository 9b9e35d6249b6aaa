//! Reads a results folder back: run.json into typed structs (with errors that name the file,
//! line, column and field) and histograms.hlog into exact HdrHistograms by tag.

use crate::metrics::{LatencySummary, RankSummary};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine;
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::Histogram;
use serde::Deserialize;

/// Schema versions this build reads.
pub const KNOWN_SCHEMA_VERSIONS: &[u64] = &[1];

#[derive(Debug, Clone, PartialEq)]
pub enum ReadError {
    NotFound(PathBuf),
    Io(PathBuf, String),
    NotJson {
        file: PathBuf,
        line: usize,
        column: usize,
        msg: String,
    },
    Truncated {
        file: PathBuf,
        line: usize,
        column: usize,
    },
    UnknownSchema {
        file: PathBuf,
        found: String,
    },
    Field {
        file: PathBuf,
        line: usize,
        column: usize,
        field: String,
        msg: String,
    },
    Histograms(PathBuf, String),
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let known = KNOWN_SCHEMA_VERSIONS
            .iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        match self {
            ReadError::NotFound(p) => write!(
                f,
                "{}: not found; pass a results folder (one that holds run.json) or a run.json file",
                p.display()
            ),
            ReadError::Io(p, e) => write!(f, "{}: cannot read: {e}", p.display()),
            ReadError::NotJson {
                file,
                line,
                column,
                msg,
            } => write!(
                f,
                "{}:{line}:{column}: not JSON ({msg}); is this a collbench run.json?",
                file.display()
            ),
            ReadError::Truncated { file, line, column } => write!(
                f,
                "{}:{line}:{column}: truncated: the JSON ends early (a copy cut short, or a disk that filled up); \
                 collbench rewrites run.json atomically, so take it from the results folder again",
                file.display()
            ),
            ReadError::UnknownSchema { file, found } => write!(
                f,
                "{}: field schema_version: {found} is not a version this collbench reads (known: {known}); \
                 use the collbench that wrote it, or a newer one",
                file.display()
            ),
            ReadError::Field {
                file,
                line,
                column,
                field,
                msg,
            } => write!(
                f,
                "{}:{line}:{column}: field {field}: {msg}",
                file.display()
            ),
            ReadError::Histograms(p, e) => write!(f, "{}: {e}", p.display()),
        }
    }
}

impl std::error::Error for ReadError {}

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct HostData {
    pub hostname: String,
    pub ranks: Vec<usize>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct RankData {
    pub rank: usize,
    pub local_rank: usize,
    pub hostname: String,
    pub pid: u32,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct BackendData {
    pub name: String,
    pub library_version: String,
}

/// The parts of the sweep config a report shows.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct ConfigData {
    pub ops: Vec<String>,
    pub dtypes: Vec<String>,
    pub redops: Vec<String>,
    pub sizes: Vec<u64>,
    pub iterations: u32,
    pub warmup: u32,
    pub check_iterations: u32,
    pub placements: Vec<String>,
    pub timeout: Option<f64>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct RecordData {
    pub op: String,
    pub dtype: String,
    pub redop: String,
    pub root: i32,
    pub placement: String,
    pub size_bytes: u64,
    pub count: u64,
    pub iterations: u32,
    pub time_us: f64,
    pub time_us_min_rank: f64,
    pub time_us_max_rank: f64,
    pub algbw_gbps: f64,
    pub busbw_gbps: f64,
    pub wrong: Option<u64>,
    pub latency: LatencySummary,
    pub skew: LatencySummary,
    pub per_rank: Vec<RankSummary>,
    pub histogram_tag: String,
    pub start_unix_s: f64,
}

/// What identifies a row across runs: (op, dtype, redop, placement, size).
pub type RecordKey = (String, String, String, String, u64);

impl RecordData {
    pub fn key(&self) -> RecordKey {
        (
            self.op.clone(),
            self.dtype.clone(),
            self.redop.clone(),
            self.placement.clone(),
            self.size_bytes,
        )
    }

    /// (op, dtype, redop, placement): one line in a plot.
    pub fn series(&self) -> String {
        series_name(&self.op, &self.dtype, &self.redop, &self.placement)
    }

    /// Whether per-iteration latencies were measured (an import without -I has none).
    pub fn has_latency(&self) -> bool {
        self.latency.samples > 0
    }
}

pub fn series_name(op: &str, dtype: &str, redop: &str, placement: &str) -> String {
    if redop == "none" {
        format!("{op} {dtype} {placement}")
    } else {
        format!("{op} {dtype} {redop} {placement}")
    }
}

pub fn key_name(k: &RecordKey) -> String {
    format!(
        "{} {}",
        series_name(&k.0, &k.1, &k.2, &k.3),
        crate::plan::size::format_size(k.4)
    )
}

#[derive(Clone, Debug, Deserialize, PartialEq, Default)]
pub struct SummaryData {
    pub records: u64,
    pub wrong_total: u64,
    pub wrong_ok: bool,
    pub avg_busbw_gbps: BTreeMap<String, f64>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct FilesData {
    pub histograms: String,
    pub progress: String,
}

/// One check of a readiness verdict, read leniently: the fields a table shows.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckData {
    pub name: String,
    pub status: String,
    pub measured: String,
    pub expected: String,
    /// For busbw checks: (op, size range in bytes, expected GB/s), drawn on the busbw plot.
    pub busbw_line: Option<(String, u64, u64, f64)>,
}

/// The optional top-level "verdict": an overall ready/not_ready and a list of checks.
#[derive(Clone, Debug, PartialEq)]
pub struct VerdictData {
    pub overall: String,
    pub topology: Option<String>,
    pub checks: Vec<CheckData>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct DetectionData {
    pub at_s: f64,
    pub after_s: Option<f64>,
    pub rank: Option<i64>,
    pub host: Option<String>,
    #[serde(default)]
    pub device: Option<String>,
    pub mechanism: Option<String>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct PhaseData {
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    pub busbw_gbps: Option<f64>,
}

/// One injected fault, as the controller records it (times in seconds since the sweep start).
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct FaultData {
    pub id: i64,
    pub kind: String,
    pub target: String,
    #[serde(default)]
    pub params: serde_json::Value,
    #[serde(default)]
    pub start: serde_json::Value,
    #[serde(default)]
    pub sent_at_s: Option<f64>,
    pub applied_at_s: Option<f64>,
    #[serde(default)]
    pub revert_began_at_s: Option<f64>,
    pub reverted_at_s: Option<f64>,
    pub revert: Option<String>,
    pub detected: Option<DetectionData>,
    pub outcome: Option<String>,
    pub phases: Option<BTreeMap<String, PhaseData>>,
}

/// Where an imported run came from.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct SourceData {
    pub tool: String,
    pub file: String,
    #[serde(default)]
    pub details: serde_json::Value,
}

/// run.json as this build reads it; fields other writers add are ignored.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct RunData {
    pub schema_version: u64,
    pub collbench_version: String,
    pub status: String,
    pub command_line: Vec<String>,
    pub start_time: String,
    pub end_time: Option<String>,
    pub launcher: String,
    pub world_size: usize,
    pub hosts: Vec<HostData>,
    pub ranks: Vec<RankData>,
    pub backend: BackendData,
    pub config: ConfigData,
    pub notes: Vec<String>,
    pub results: Vec<RecordData>,
    pub summary: SummaryData,
    pub files: FilesData,
    pub error: Option<String>,
    #[serde(default, deserialize_with = "de_verdict")]
    pub verdict: Option<VerdictData>,
    #[serde(default)]
    pub faults: Option<Vec<FaultData>>,
    #[serde(default)]
    pub sweep_start_unix_s: Option<f64>,
    #[serde(default)]
    pub source: Option<SourceData>,
}

fn text_of(v: Option<&serde_json::Value>) -> String {
    match v {
        None | Some(serde_json::Value::Null) => String::new(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Number(n)) => {
            let x = n.as_f64().unwrap_or(0.0);
            if x.fract() == 0.0 && x.abs() < 1e15 {
                format!("{x:.0}")
            } else {
                format!("{}", (x * 1000.0).round() / 1000.0)
            }
        }
        Some(other) => other.to_string(),
    }
}

fn de_verdict<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<VerdictData>, D::Error> {
    let v: Option<serde_json::Value> = Option::deserialize(d)?;
    let Some(v) = v else { return Ok(None) };
    let obj = v
        .as_object()
        .ok_or_else(|| serde::de::Error::custom("verdict is not an object"))?;
    let overall = match (obj.get("overall"), obj.get("ready"), obj.get("status")) {
        (Some(serde_json::Value::String(s)), _, _) => s.clone(),
        (_, Some(serde_json::Value::Bool(b)), _) => {
            if *b { "ready" } else { "not_ready" }.to_string()
        }
        (_, _, Some(serde_json::Value::String(s))) => s.clone(),
        _ => {
            return Err(serde::de::Error::custom(
                "verdict has no overall (\"ready\" or \"not_ready\")",
            ))
        }
    };
    let mut checks = Vec::new();
    for c in obj
        .get("checks")
        .and_then(|c| c.as_array())
        .into_iter()
        .flatten()
    {
        let unit = text_of(c.get("unit"));
        let with_unit = |s: String| {
            if unit.is_empty() || s.is_empty() {
                s
            } else {
                format!("{s} {unit}")
            }
        };
        let name = text_of(c.get("name"));
        let metric = text_of(c.get("metric"));
        let op = text_of(c.get("op"));
        let size = c.get("size_bytes").and_then(|v| v.as_u64());
        let lo = c.get("min_bytes").and_then(|v| v.as_u64()).or(size);
        let hi = c.get("max_bytes").and_then(|v| v.as_u64()).or(size);
        let expected_num = c.get("expected").and_then(|v| v.as_f64());
        let busbw_line = match (lo, hi, expected_num) {
            (Some(lo), Some(hi), Some(e))
                if !op.is_empty() && (metric.contains("busbw") || name.contains("busbw")) =>
            {
                Some((op.clone(), lo, hi, e))
            }
            _ => None,
        };
        checks.push(CheckData {
            name,
            status: text_of(c.get("status")),
            measured: with_unit(text_of(c.get("measured"))),
            expected: with_unit(text_of(c.get("expected"))),
            busbw_line,
        });
    }
    Ok(Some(VerdictData {
        overall,
        topology: obj.get("topology").map(|t| match t {
            serde_json::Value::Object(o) => text_of(o.get("name")),
            other => text_of(Some(other)),
        }),
        checks,
    }))
}

/// A run read from disk, with what the reader noticed.
#[derive(Clone, Debug)]
pub struct LoadedRun {
    pub dir: PathBuf,
    pub file: PathBuf,
    pub run: RunData,
    /// E.g. that the run is still running (or was killed), so what it holds is partial.
    pub warnings: Vec<String>,
}

impl LoadedRun {
    /// The folder's name, to label the run in comparisons and trends.
    pub fn name(&self) -> String {
        self.dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.dir.display().to_string())
    }

    /// Exact merged histograms by tag, when histograms.hlog is there and readable.
    pub fn histograms(&self) -> Result<BTreeMap<String, Histogram<u64>>, ReadError> {
        read_hlog(&self.dir.join(&self.run.files.histograms))
    }
}

/// Resolves a results folder or a run.json path to (folder, run.json).
pub fn locate(path: &Path) -> Result<(PathBuf, PathBuf), ReadError> {
    if !path.exists() {
        return Err(ReadError::NotFound(path.to_path_buf()));
    }
    if path.is_dir() {
        let file = path.join("run.json");
        if !file.exists() {
            return Err(ReadError::NotFound(file));
        }
        Ok((path.to_path_buf(), file))
    } else {
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        Ok((dir, path.to_path_buf()))
    }
}

/// Parses run.json text; `file` only names it in errors.
pub fn parse(file: &Path, text: &str) -> Result<(RunData, Vec<String>), ReadError> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        if e.is_eof() {
            ReadError::Truncated {
                file: file.to_path_buf(),
                line: e.line(),
                column: e.column(),
            }
        } else {
            ReadError::NotJson {
                file: file.to_path_buf(),
                line: e.line(),
                column: e.column(),
                msg: strip_position(&e.to_string()),
            }
        }
    })?;
    let Some(obj) = value.as_object() else {
        return Err(ReadError::Field {
            file: file.to_path_buf(),
            line: 1,
            column: 1,
            field: "(top level)".into(),
            msg: "is not an object; a collbench run.json is one JSON object".into(),
        });
    };
    match obj.get("schema_version") {
        None => {
            return Err(ReadError::UnknownSchema {
                file: file.to_path_buf(),
                found: "missing".into(),
            })
        }
        Some(v)
            if v.as_u64()
                .is_some_and(|n| KNOWN_SCHEMA_VERSIONS.contains(&n)) => {}
        Some(v) => {
            return Err(ReadError::UnknownSchema {
                file: file.to_path_buf(),
                found: v.to_string(),
            })
        }
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let run: RunData = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner();
        ReadError::Field {
            file: file.to_path_buf(),
            line: inner.line(),
            column: inner.column(),
            field,
            msg: strip_position(&inner.to_string()),
        }
    })?;
    let mut warnings = Vec::new();
    if run.status == "running" {
        warnings.push(format!(
            "{}: status is \"running\": the run is still going or was killed; this is a partial run ({} records)",
            file.display(),
            run.results.len()
        ));
    }
    if run.status == "failed" {
        warnings.push(format!(
            "{}: status is \"failed\": {}",
            file.display(),
            run.error.as_deref().unwrap_or("no error recorded")
        ));
    }
    Ok((run, warnings))
}

fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// Loads a results folder (or a run.json path).
pub fn load(path: &Path) -> Result<LoadedRun, ReadError> {
    let (dir, file) = locate(path)?;
    let text =
        std::fs::read_to_string(&file).map_err(|e| ReadError::Io(file.clone(), e.to_string()))?;
    let (run, warnings) = parse(&file, &text)?;
    Ok(LoadedRun {
        dir,
        file,
        run,
        warnings,
    })
}

/// Reads an HdrHistogram interval log; the histograms of intervals with the same tag are added.
pub fn read_hlog(path: &Path) -> Result<BTreeMap<String, Histogram<u64>>, ReadError> {
    let bytes =
        std::fs::read(path).map_err(|e| ReadError::Io(path.to_path_buf(), e.to_string()))?;
    let mut out: BTreeMap<String, Histogram<u64>> = BTreeMap::new();
    let mut de = Deserializer::new();
    for (i, entry) in IntervalLogIterator::new(&bytes).enumerate() {
        let entry = entry.map_err(|e| {
            ReadError::Histograms(
                path.to_path_buf(),
                format!(
                    "entry {}: not an HdrHistogram interval log line ({e:?})",
                    i + 1
                ),
            )
        })?;
        let LogEntry::Interval(h) = entry else {
            continue;
        };
        let tag = h.tag().map(|t| t.as_str().to_string()).unwrap_or_default();
        let raw = base64::engine::general_purpose::STANDARD
            .decode(h.encoded_histogram())
            .map_err(|e| {
                ReadError::Histograms(
                    path.to_path_buf(),
                    format!("histogram {tag}: bad base64 ({e})"),
                )
            })?;
        let hist: Histogram<u64> = de.deserialize(&mut raw.as_slice()).map_err(|e| {
            ReadError::Histograms(
                path.to_path_buf(),
                format!("histogram {tag}: does not decode ({e:?})"),
            )
        })?;
        match out.get_mut(&tag) {
            Some(acc) => acc.add(&hist).map_err(|e| {
                ReadError::Histograms(
                    path.to_path_buf(),
                    format!("histogram {tag}: does not merge ({e:?})"),
                )
            })?,
            None => {
                out.insert(tag, hist);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal() -> serde_json::Value {
        serde_json::json!({
            "schema_version": 1, "collbench_version": "0.1.0", "status": "complete",
            "command_line": ["collbench"], "start_time": "2026-12-03T10:00:00Z",
            "end_time": "2026-12-03T10:00:01Z", "launcher": "open_mpi", "world_size": 2,
            "hosts": [{"hostname": "h", "ranks": [0, 1]}],
            "ranks": [{"rank": 0, "local_rank": 0, "hostname": "h", "pid": 1},
                      {"rank": 1, "local_rank": 1, "hostname": "h", "pid": 2}],
            "backend": {"name": "mpi", "library_version": "Open MPI"},
            "config": {"ops": ["all_reduce"], "dtypes": ["float"], "redops": ["sum"], "min_bytes": 8,
                       "max_bytes": 8, "step": {"factor": 2}, "sizes": [8], "iterations": 5, "warmup": 1,
                       "check_iterations": 1, "placements": ["out_of_place"], "timeout": 120.0,
                       "debug_corrupt_rank": null},
            "notes": [], "results": [], "error": null,
            "summary": {"records": 0, "wrong_total": 0, "wrong_ok": true, "avg_busbw_gbps": {}},
            "files": {"histograms": "histograms.hlog", "progress": "progress.jsonl"}
        })
    }

    fn err(text: &str) -> String {
        parse(Path::new("r/run.json"), text)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn reads_a_minimal_run() {
        let (run, warnings) = parse(Path::new("run.json"), &minimal().to_string()).unwrap();
        assert_eq!(run.world_size, 2);
        assert!(warnings.is_empty());
        assert!(run.verdict.is_none());
    }

    #[test]
    fn errors_name_file_line_column_and_field() {
        let e = err("{\n  \"schema_version\": 1,\n  oops\n}");
        assert!(e.starts_with("r/run.json:3:3: not JSON"), "{e}");
        let text = serde_json::to_string_pretty(&minimal()).unwrap();
        let e = err(&text[..text.len() / 2]);
        assert!(e.contains("truncated"), "{e}");
        let mut v = minimal();
        v["schema_version"] = 7.into();
        let e = err(&v.to_string());
        assert!(
            e.contains("schema_version: 7") && e.contains("known: 1"),
            "{e}"
        );
        let mut v = minimal();
        v["world_size"] = "two".into();
        let e = err(&serde_json::to_string_pretty(&v).unwrap());
        assert!(e.contains("field world_size: invalid type"), "{e}");
        assert!(e.starts_with("r/run.json:"), "{e}");
    }

    #[test]
    fn running_status_warns_partial() {
        let mut v = minimal();
        v["status"] = "running".into();
        let (_, warnings) = parse(Path::new("run.json"), &v.to_string()).unwrap();
        assert!(warnings[0].contains("partial"), "{warnings:?}");
    }

    #[test]
    fn verdict_is_read_generically() {
        let mut v = minimal();
        v["verdict"] = serde_json::json!({"ready": false, "checks": [
            {"name": "all_reduce busbw 8G", "status": "fail", "measured": 401.5, "expected": 460,
             "unit": "GB/s", "op": "all_reduce", "metric": "busbw_gbps", "size_bytes": 8589934592u64}]});
        let (run, _) = parse(Path::new("run.json"), &v.to_string()).unwrap();
        let verdict = run.verdict.unwrap();
        assert_eq!(verdict.overall, "not_ready");
        assert_eq!(verdict.checks[0].measured, "401.5 GB/s");
        assert_eq!(
            verdict.checks[0].busbw_line,
            Some(("all_reduce".into(), 8589934592, 8589934592, 460.0))
        );
    }
}
