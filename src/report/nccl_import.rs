//! `collbench import-nccl-tests`: turns nccl-tests' JSON output (`-J FILE.json`, file version 3,
//! written by src/util.cu of nccl-tests 2.19) into a collbench results folder.
//!
//! Quirks of that writer handled here: booleans are the strings "true"/"false", NaN is the
//! string "nan", root is a space-padded string ("%6i"), times are "%lf" numbers, `nwrong` is a
//! double or null (no check), per-iteration times (with -I) sit under `out_of_place_per_iter` /
//! `in_place_per_iter` (`times_us`, max over processes, and `per_process_max_times_us`), and
//! times of day are local time without a zone ("%Y-%m-%d %H:%M:%S").

use std::path::Path;

use serde_json::Value;

use super::hlog::HlogExporter;
use super::json::write_atomic;
use super::read;
use super::{BackendInfo, Exporter, Files, HostEntry, RunDoc, RunStatus, SCHEMA_VERSION};
use crate::bootstrap::{Launcher, RankInfo};
use crate::metrics::{self, LatencyHistogram, RankSummary, Record};
use crate::plan::size::Step;
use crate::plan::{Collective, DType, Placement, RedOp, SweepPlan};

/// nccl-tests JSON file versions this importer knows.
pub const KNOWN_VERSIONS: &[u64] = &[3];

#[derive(Debug)]
pub enum ImportError {
    /// The input is wrong (exit 2).
    Bad(String),
    /// The output could not be written (exit 3).
    Io(String),
}

struct Ctx<'a> {
    file: &'a Path,
}

impl Ctx<'_> {
    fn bad(&self, field: &str, msg: impl std::fmt::Display) -> ImportError {
        ImportError::Bad(format!("{}: field {field}: {msg}", self.file.display()))
    }

    fn get<'v>(&self, v: &'v Value, path: &str, key: &str) -> Result<&'v Value, ImportError> {
        v.get(key)
            .ok_or_else(|| self.bad(&join(path, key), "missing; is this nccl-tests' -J output?"))
    }

    /// A number, or nccl-tests' "nan" string (as NaN), or a numeric string.
    fn num(&self, v: &Value, path: &str) -> Result<f64, ImportError> {
        match v {
            Value::Number(n) => Ok(n.as_f64().unwrap_or(f64::NAN)),
            Value::String(s) if s.trim().eq_ignore_ascii_case("nan") => Ok(f64::NAN),
            Value::String(s) => s
                .trim()
                .parse()
                .map_err(|_| self.bad(path, format!("\"{s}\" is not a number"))),
            other => Err(self.bad(path, format!("{other} is not a number"))),
        }
    }

    fn int(&self, v: &Value, path: &str) -> Result<i64, ImportError> {
        let x = self.num(v, path)?;
        if x.is_finite() && x.fract() == 0.0 {
            Ok(x as i64)
        } else {
            Err(self.bad(path, format!("{x} is not a whole number")))
        }
    }

    /// nccl-tests writes booleans as the strings "true"/"false".
    fn boolean(&self, v: &Value, path: &str) -> Result<bool, ImportError> {
        match v {
            Value::Bool(b) => Ok(*b),
            Value::String(s) if s == "true" => Ok(true),
            Value::String(s) if s == "false" => Ok(false),
            Value::Number(n) => Ok(n.as_f64() != Some(0.0)),
            other => Err(self.bad(path, format!("{other} is not \"true\" or \"false\""))),
        }
    }

    fn string<'v>(&self, v: &'v Value, path: &str) -> Result<&'v str, ImportError> {
        v.as_str()
            .ok_or_else(|| self.bad(path, format!("{v} is not a string")))
    }

    fn list<'v>(&self, v: &'v Value, path: &str) -> Result<&'v Vec<Value>, ImportError> {
        v.as_array().ok_or_else(|| self.bad(path, "is not a list"))
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// "2025-11-20 14:03:07" (local time, no zone) as RFC 3339, taken as UTC.
fn nccl_time(s: &str) -> Option<(String, f64)> {
    let t = format!("{}Z", s.trim().replacen(' ', "T", 1));
    let st = humantime::parse_rfc3339(&t).ok()?;
    let secs = st.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs_f64();
    Some((t, secs))
}

fn collective_of(program: &str) -> Option<Collective> {
    let base = Path::new(program).file_name()?.to_str()?;
    match base.strip_suffix("_perf").unwrap_or(base) {
        "all_reduce" | "allreduce" => Some(Collective::AllReduce),
        "alltoall" | "all_to_all" => Some(Collective::AllToAll),
        _ => None,
    }
}

fn dtype_of(name: &str) -> Option<DType> {
    let n = match name {
        "char" => "int8",
        "int" => "int32",
        other => other,
    };
    DType::ALL.into_iter().find(|d| d.name() == n)
}

fn redop_of(name: &str) -> Option<RedOp> {
    RedOp::ALL.into_iter().find(|r| r.name() == name)
}

/// NCCL_VERSION_CODE as X.Y.Z (codes >= 2.9 are X*10000 + Y*100 + Z).
fn nccl_version(code: i64) -> String {
    if code >= 20900 {
        format!("{}.{}.{}", code / 10000, code / 100 % 100, code % 100)
    } else {
        format!("{}.{}.{}", code / 1000, code / 100 % 10, code % 100)
    }
}

fn launcher_of(env: &[Value]) -> Launcher {
    let has = |p: &str| {
        env.iter()
            .filter_map(Value::as_str)
            .any(|e| e.starts_with(p))
    };
    if has("OMPI_COMM_WORLD_SIZE=") {
        Launcher::OpenMpi
    } else if has("SLURM_PROCID=") {
        Launcher::Slurm
    } else if has("PMI_RANK=") {
        Launcher::Pmi
    } else if has("WORLD_SIZE=") {
        Launcher::TorchStyle
    } else {
        Launcher::None
    }
}

fn us_to_ns(us: f64) -> u64 {
    (us * 1000.0).round().max(1.0) as u64
}

/// Per-iteration data of one placement: every process row (or the max row alone).
struct PerIter {
    rows: Vec<Vec<f64>>,
    per_process: bool,
}

impl Ctx<'_> {
    fn per_iter(&self, v: &Value, path: &str) -> Result<Option<PerIter>, ImportError> {
        if v.is_null() {
            return Ok(None);
        }
        let skip = match v.get("skipped_iterations") {
            Some(s) => self.int(s, &join(path, "skipped_iterations"))?.max(0) as usize,
            None => 0,
        };
        let read_row = |row: &Value, p: &str| -> Result<Vec<f64>, ImportError> {
            let vals = self.list(row, p)?;
            let mut out = Vec::with_capacity(vals.len());
            for (i, t) in vals.iter().enumerate().skip(skip) {
                let x = self.num(t, &format!("{p}[{i}]"))?;
                if x.is_finite() && x >= 0.0 {
                    out.push(x);
                }
            }
            Ok(out)
        };
        if let Some(pp) = v.get("per_process_max_times_us") {
            let p = join(path, "per_process_max_times_us");
            let rows = self
                .list(pp, &p)?
                .iter()
                .enumerate()
                .map(|(i, r)| read_row(r, &format!("{p}[{i}]")))
                .collect::<Result<Vec<_>, _>>()?;
            if !rows.is_empty() {
                return Ok(Some(PerIter {
                    rows,
                    per_process: true,
                }));
            }
        }
        let times = self.get(v, path, "times_us")?;
        Ok(Some(PerIter {
            rows: vec![read_row(times, &join(path, "times_us"))?],
            per_process: false,
        }))
    }
}

pub struct Imported {
    pub records: usize,
    pub notes: Vec<String>,
}

/// Reads `file` and writes a results folder at `out` (which must not hold a run yet).
pub fn import(file: &Path, out: &Path) -> Result<Imported, ImportError> {
    let cx = Ctx { file };
    let text = std::fs::read_to_string(file).map_err(|e| {
        ImportError::Bad(format!(
            "{}: cannot read ({e}); pass the file nccl-tests wrote with -J",
            file.display()
        ))
    })?;
    let doc: Value = serde_json::from_str(&text).map_err(|e| {
        let what = if e.is_eof() {
            "truncated: the JSON ends early (nccl-tests closes it only when it exits; was it killed?)".to_string()
        } else {
            format!("not JSON ({})", e.to_string().split(" at line").next().unwrap_or(""))
        };
        ImportError::Bad(format!("{}:{}:{}: {what}", file.display(), e.line(), e.column()))
    })?;
    let version = cx.int(cx.get(&doc, "", "version")?, "version")?;
    if !KNOWN_VERSIONS.contains(&(version as u64)) {
        return Err(cx.bad(
            "version",
            format!("nccl-tests JSON file version {version} is not one this importer reads (known: 3, from nccl-tests 2.19)"),
        ));
    }
    let args: Vec<String> = cx
        .list(cx.get(&doc, "", "args")?, "args")?
        .iter()
        .filter_map(|a| a.as_str().map(str::to_string))
        .collect();
    let program = args.first().cloned().unwrap_or_default();
    let op = collective_of(&program).ok_or_else(|| {
        cx.bad(
            "args[0]",
            format!("'{program}' is not all_reduce_perf or alltoall_perf; collbench models all-reduce and all-to-all only"),
        )
    })?;
    let env = doc
        .get("env")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let cfg = cx.get(&doc, "", "config")?;
    let cfg_int = |k: &str| -> Result<i64, ImportError> {
        cx.int(cx.get(cfg, "config", k)?, &join("config", k))
    };
    let nthreads = cfg_int("nthreads")?.max(1) as usize;
    let ngpus = cfg_int("ngpus")?.max(1) as usize;
    let per_proc = nthreads * ngpus;
    let iterations = cfg_int("iterations")?.max(1) as u32;
    let warmup = cfg_int("warmup_iters")?.max(0) as u32;
    let validation = cfg_int("validation")?.max(0) as u32;
    let min_bytes = cfg_int("minimum_bytes")?.max(0) as u64;
    let max_bytes = cfg_int("maximum_bytes")?.max(0) as u64;
    let step = match (cfg.get("step_factor"), cfg.get("step_bytes")) {
        (Some(f), _) => Step::Factor(cx.int(f, "config.step_factor")?.max(2) as u64),
        (None, Some(b)) => Step::Bytes(cx.int(b, "config.step_bytes")?.max(1) as u64),
        (None, None) => Step::Factor(2),
    };
    let per_iter_timing = match cfg.get("per_iter_timing") {
        Some(v) => cx.boolean(v, "config.per_iter_timing")?,
        None => false,
    };
    let devices = cx.list(cx.get(cfg, "config", "devices")?, "config.devices")?;
    if devices.is_empty() {
        return Err(cx.bad(
            "config.devices",
            "is empty; nccl-tests lists one device line per process",
        ));
    }
    let world = devices.len() * per_proc;

    let mut ranks = Vec::new();
    let mut hosts: Vec<HostEntry> = Vec::new();
    for (p, d) in devices.iter().enumerate() {
        let path = format!("config.devices[{p}]");
        let host = cx
            .string(cx.get(d, &path, "hostname")?, &join(&path, "hostname"))?
            .to_string();
        let pid = cx
            .int(cx.get(d, &path, "pid")?, &join(&path, "pid"))?
            .max(0) as u32;
        let first = cx
            .int(cx.get(d, &path, "rank")?, &join(&path, "rank"))?
            .max(0) as usize;
        for g in 0..per_proc {
            let rank = first + g;
            let local_rank = ranks
                .iter()
                .filter(|r: &&RankInfo| r.hostname == host)
                .count();
            match hosts.iter_mut().find(|h| h.hostname == host) {
                Some(h) => h.ranks.push(rank),
                None => hosts.push(HostEntry {
                    hostname: host.clone(),
                    ranks: vec![rank],
                }),
            }
            ranks.push(RankInfo {
                rank,
                local_rank,
                hostname: host.clone(),
                pid,
                gpu: None,
                pci_bus_id: None,
                gpu_name: None,
            });
        }
    }

    let (start_time, start_unix) = doc
        .get("start_time")
        .and_then(Value::as_str)
        .and_then(nccl_time)
        .ok_or_else(|| cx.bad("start_time", "missing or not \"YYYY-MM-DD HH:MM:SS\""))?;
    let end_time = doc
        .get("end_time")
        .and_then(Value::as_str)
        .and_then(nccl_time)
        .map(|t| t.0);

    let results = cx.list(cx.get(&doc, "", "results")?, "results")?;
    if results.is_empty() {
        return Err(cx.bad("results", "is empty: the run measured nothing"));
    }
    let mut records: Vec<Record> = Vec::new();
    let mut clock = start_unix;
    let mut dtypes: Vec<DType> = Vec::new();
    let mut redops: Vec<RedOp> = Vec::new();
    let mut sizes: Vec<u64> = Vec::new();
    let mut placements: Vec<Placement> = Vec::new();
    let mut nan_rows = 0;
    let mut any_per_process = false;
    for (i, res) in results.iter().enumerate() {
        let path = format!("results[{i}]");
        let size = cx
            .int(cx.get(res, &path, "size")?, &join(&path, "size"))?
            .max(0) as u64;
        let count = cx
            .int(cx.get(res, &path, "count")?, &join(&path, "count"))?
            .max(0) as u64;
        let tname = cx.string(cx.get(res, &path, "type")?, &join(&path, "type"))?;
        let dtype = dtype_of(tname).ok_or_else(|| {
            cx.bad(&join(&path, "type"), format!("'{tname}' is not a type collbench knows (int8..uint64, half, float, double, bfloat16)"))
        })?;
        let rname = cx.string(cx.get(res, &path, "redop")?, &join(&path, "redop"))?;
        let redop = match rname {
            "none" => None,
            r => Some(redop_of(r).ok_or_else(|| {
                cx.bad(
                    &join(&path, "redop"),
                    format!("'{r}' is not sum, prod, min, max or avg"),
                )
            })?),
        };
        if op.reduces() != redop.is_some() {
            return Err(cx.bad(
                &join(&path, "redop"),
                format!("'{rname}' does not fit {}", op.name()),
            ));
        }
        let root = match res.get("root") {
            Some(Value::String(s)) => s.trim().parse::<i32>().map_err(|_| {
                cx.bad(
                    &join(&path, "root"),
                    format!("\"{s}\" is not a padded integer"),
                )
            })?,
            Some(v) => cx.int(v, &join(&path, "root"))? as i32,
            None => -1,
        };
        let actual = match res.get("actual_iterations") {
            Some(v) => cx.int(v, &join(&path, "actual_iterations"))?.max(1) as u32,
            None => iterations,
        };
        let redop_name = redop.map_or("none", RedOp::name).to_string();
        for (key, placement) in [
            ("out_of_place", Placement::OutOfPlace),
            ("in_place", Placement::InPlace),
        ] {
            let body = match res.get(key) {
                None | Some(Value::Null) => continue,
                Some(b) => b,
            };
            let bp = join(&path, key);
            let time_v = body
                .get("time")
                .or_else(|| body.get("cpu_time"))
                .ok_or_else(|| cx.bad(&join(&bp, "time"), "missing"))?;
            let time_us = cx.num(time_v, &join(&bp, "time"))?;
            let alg = cx.num(cx.get(body, &bp, "alg_bw")?, &join(&bp, "alg_bw"))?;
            let bus = cx.num(cx.get(body, &bp, "bus_bw")?, &join(&bp, "bus_bw"))?;
            let wrong = match body.get("nwrong") {
                None | Some(Value::Null) => None,
                Some(v) => {
                    let w = cx.num(v, &join(&bp, "nwrong"))?;
                    Some(if w.is_finite() { w.max(0.0) as u64 } else { 0 })
                }
            };
            let clean = |x: f64| {
                if x.is_finite() && x >= 0.0 {
                    x
                } else {
                    0.0
                }
            };
            if !(time_us.is_finite() && alg.is_finite() && bus.is_finite()) {
                nan_rows += 1;
            }
            let per_iter = match res.get(format!("{key}_per_iter")) {
                Some(v) => cx.per_iter(v, &format!("{path}.{key}_per_iter"))?,
                None => None,
            };
            let mut hist = LatencyHistogram::new();
            let mut per_rank = Vec::new();
            let mut skew = LatencyHistogram::new();
            if let Some(pi) = &per_iter {
                any_per_process |= pi.per_process;
                for (p, row) in pi.rows.iter().enumerate() {
                    let mut h = LatencyHistogram::new();
                    for &t in row {
                        h.record(us_to_ns(t));
                        hist.record(us_to_ns(t));
                    }
                    if pi.per_process {
                        let s = h.summary();
                        per_rank.push(RankSummary {
                            rank: p * per_proc,
                            time_us: s.mean_us,
                            wrong: 0,
                            p50_us: s.p50_us,
                            p99_us: s.p99_us,
                            max_us: s.max_us,
                            mean_us: s.mean_us,
                            wrong_source: None,
                        });
                    }
                }
                if pi.per_process && pi.rows.len() > 1 {
                    let n = pi.rows.iter().map(Vec::len).min().unwrap_or(0);
                    let hi: Vec<u64> = (0..n)
                        .map(|i| pi.rows.iter().map(|r| us_to_ns(r[i])).max().unwrap_or(0))
                        .collect();
                    let lo: Vec<u64> = (0..n)
                        .map(|i| pi.rows.iter().map(|r| us_to_ns(r[i])).min().unwrap_or(0))
                        .collect();
                    skew = metrics::skew_histogram(&hi, &lo);
                }
            }
            if !dtypes.contains(&dtype) {
                dtypes.push(dtype);
            }
            if let Some(r) = redop {
                if !redops.contains(&r) {
                    redops.push(r);
                }
            }
            if !sizes.contains(&size) {
                sizes.push(size);
            }
            if !placements.contains(&placement) {
                placements.push(placement);
            }
            let latency = hist.summary();
            records.push(Record {
                op,
                dtype,
                redop: redop_name.clone(),
                root,
                placement,
                size_bytes: size,
                count,
                iterations: actual,
                time_us: clean(time_us),
                time_us_min_rank: clean(time_us),
                time_us_max_rank: clean(time_us),
                algbw_gbps: clean(alg),
                busbw_gbps: clean(bus),
                wrong,
                latency,
                skew: skew.summary(),
                per_rank,
                histogram_tag: Record::tag_for(op, dtype, &redop_name, placement, size),
                start_unix_s: clock,
                histogram: hist,
            });
            clock += clean(time_us) * 1e-6 * actual as f64;
        }
    }
    if records.is_empty() {
        return Err(cx.bad("results", "no entry has out_of_place or in_place numbers"));
    }

    let mut notes = vec![format!(
        "imported from nccl-tests JSON (file version {version}) {}; its times of day are local time without a zone, taken here as UTC",
        file.display()
    )];
    notes.push(
        "time_us is nccl-tests' reported time (reduced across ranks per its -a flag); per-rank min/max batched times are not in its output, so both equal it"
            .into(),
    );
    if !per_iter_timing {
        notes.push("no per-iteration times (nccl-tests ran without -I): latency percentiles, skew and the per-rank heat map are empty".into());
    } else if any_per_process {
        notes.push(format!(
            "per-iteration latencies: every iteration of every process row (nccl-tests' per_process_max_times_us, max over the {per_proc} GPU(s) of a process); per_rank entries are per process, labelled by its first rank"
        ));
    } else {
        notes.push(
            "per-iteration latencies: nccl-tests' times_us (max over all ranks per iteration)"
                .into(),
        );
    }
    if nan_rows > 0 {
        notes.push(format!(
            "{nan_rows} row(s) had \"nan\" time or bandwidth; written as 0"
        ));
    }
    let errors: Vec<String> = doc
        .get("errors")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|e| e.as_str().map(str::to_string))
                .filter(|e| !e.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let status = if !errors.is_empty() || end_time.is_none() {
        RunStatus::Failed
    } else {
        RunStatus::Complete
    };
    let error = match status {
        RunStatus::Failed if errors.is_empty() => {
            Some("nccl-tests wrote no end_time: it did not finish".into())
        }
        RunStatus::Failed => Some(format!("nccl-tests reported: {}", errors.join("; "))),
        _ => None,
    };
    let nccl = doc
        .get("nccl_version")
        .and_then(|v| cx.int(v, "nccl_version").ok())
        .map_or("unknown".to_string(), nccl_version);
    if redops.is_empty() {
        redops.push(RedOp::Sum);
    }
    let mut doc_out = RunDoc {
        schema_version: SCHEMA_VERSION,
        collbench_version: env!("CARGO_PKG_VERSION").to_string(),
        status,
        command_line: args.clone(),
        start_time,
        end_time: end_time.or_else(|| (status == RunStatus::Failed).then(super::rfc3339_now)),
        launcher: launcher_of(&env),
        world_size: world,
        hosts,
        ranks,
        backend: BackendInfo {
            name: "nccl".into(),
            library_version: format!("NCCL {nccl} (nccl-tests {program})"),
        },
        config: SweepPlan {
            ops: vec![op],
            dtypes,
            redops,
            min_bytes,
            max_bytes,
            step,
            sizes,
            iterations,
            warmup,
            check_iterations: validation,
            placements,
            timeout: None,
            debug_corrupt_rank: None,
            debug_slow_rank: None,
            localize: false,
            repeat: 1,
            run_for: None,
        },
        notes: notes.clone(),
        results: records,
        summary: Default::default(),
        files: Files {
            histograms: "histograms.hlog".into(),
            progress: "progress.jsonl".into(),
        },
        error,
        verdict: None,
    };
    doc_out.refresh_summary();

    if out.join("run.json").exists() {
        return Err(ImportError::Bad(format!(
            "--out: {} already holds a run (run.json); choose another folder or remove it",
            out.display()
        )));
    }
    let io = |e: std::io::Error| ImportError::Io(format!("writing {}: {e}", out.display()));
    std::fs::create_dir_all(out).map_err(io)?;
    let mut hlog = HlogExporter::new(out, &doc_out.files.histograms, start_unix);
    hlog.start(&doc_out).map_err(io)?;
    hlog.step(&doc_out, &doc_out.results).map_err(io)?;
    let mut progress = Vec::new();
    for r in &doc_out.results {
        progress.extend(serde_json::to_vec(r).map_err(|e| io(std::io::Error::other(e)))?);
        progress.push(b'\n');
    }
    std::fs::write(out.join(&doc_out.files.progress), progress).map_err(io)?;
    let mut value = serde_json::to_value(&doc_out).map_err(|e| io(std::io::Error::other(e)))?;
    value["source"] = serde_json::json!({
        "tool": "nccl-tests",
        "file": file.display().to_string(),
        "details": {
            "json_version": version,
            "nccl_version": nccl,
            "per_iter_timing": per_iter_timing,
            "out_of_bounds": doc.get("out_of_bounds").cloned().unwrap_or(Value::Null),
            "average_bus_bandwidth": doc.get("average_bus_bandwidth").cloned().unwrap_or(Value::Null),
        }
    });
    let mut bytes = serde_json::to_vec_pretty(&value).map_err(|e| io(std::io::Error::other(e)))?;
    bytes.push(b'\n');
    write_atomic(&out.join("run.json"), &bytes).map_err(io)?;
    let loaded = read::load(out).map_err(|e| ImportError::Io(e.to_string()))?;
    super::outputs::write_all(&loaded, &Default::default()).map_err(io)?;
    Ok(Imported {
        records: doc_out.results.len(),
        notes,
    })
}
