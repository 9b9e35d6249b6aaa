//! `collbench compare`: a run against a baseline per (op, dtype, redop, placement, size), with a
//! change flagged only where it is beyond the noise the baseline measured in its own iterations.
//!
//! The rule (also printed with every comparison and in the README), for each row and metric:
//! noise s = the baseline's relative spread: for p50, max((p90-p50)/p50, per-rank spread of the
//! batched time (max rank - min rank)/time); for busbw (a mean over iterations, so outliers move
//! it) also the coefficient of variation stdev/mean; for p99, (p99.9-p90)/p99. A change is flagged
//! when |delta| > max(floor, k x s), k = 2, floor = 5%. Rows whose baseline has fewer than 10
//! samples (1000 for p99: fewer leave under 10 samples above it) are not judged; a baseline
//! without per-iteration data (an nccl-tests import without -I) is judged on busbw only, against
//! a fixed 10% (nccl-tests' own 0.9x rule).

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use super::read::{key_name, LoadedRun, RecordData, RecordKey};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rule {
    pub k: f64,
    pub floor: f64,
    pub min_samples: u64,
    pub min_samples_tail: u64,
    /// Threshold when the baseline has no per-iteration data.
    pub no_noise: f64,
}

impl Default for Rule {
    fn default() -> Self {
        Rule {
            k: 2.0,
            floor: 0.05,
            min_samples: 10,
            min_samples_tail: 1000,
            no_noise: 0.10,
        }
    }
}

impl Rule {
    pub fn describe(&self) -> String {
        format!(
            "flag a change when |delta| > max({:.0}%, {} x s), s = the baseline's own relative spread \
             (p50: max((p90-p50)/p50, (slowest-fastest rank batched time)/time); busbw: that or stdev/mean if larger; \
             p99: (p99.9-p90)/p99); \
             rows with fewer than {} baseline samples ({} for p99) are not judged; without per-iteration \
             data busbw is judged against {:.0}%",
            self.floor * 100.0,
            self.k,
            self.min_samples,
            self.min_samples_tail,
            self.no_noise * 100.0
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Regression,
    Improved,
    NotJudged,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Regression => "REGRESSION",
            Status::Improved => "improved",
            Status::NotJudged => "not judged",
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub op: String,
    pub dtype: String,
    pub redop: String,
    pub placement: String,
    pub size_bytes: u64,
    pub metric: &'static str,
    pub baseline: f64,
    pub run: f64,
    /// (run - baseline) / baseline, in percent.
    pub delta_pct: f64,
    /// The baseline's relative spread s, in percent (None when not measured).
    pub noise_pct: Option<f64>,
    pub threshold_pct: Option<f64>,
    pub status: Status,
}

#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    pub baseline: String,
    pub run: String,
    pub rule: String,
    pub regressions: usize,
    pub improvements: usize,
    pub judged: usize,
    pub warnings: Vec<String>,
    pub rows: Vec<Row>,
}

fn rel(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

/// The baseline's relative spread for a metric, or None when it cannot be measured.
fn noise(rule: &Rule, b: &RecordData, metric: &str) -> Option<f64> {
    let l = &b.latency;
    match metric {
        "busbw" | "p50" => {
            if l.samples < rule.min_samples {
                return None;
            }
            let iter = rel(l.p90_us - l.p50_us, l.p50_us);
            let ranks = rel(b.time_us_max_rank - b.time_us_min_rank, b.time_us);
            let cv = if metric == "busbw" {
                rel(l.stdev_us, l.mean_us)
            } else {
                0.0
            };
            Some(iter.max(ranks).max(cv).max(0.0))
        }
        _ => {
            if l.samples < rule.min_samples_tail {
                return None;
            }
            Some(rel(l.p999_us - l.p90_us, l.p99_us).max(0.0))
        }
    }
}

fn judge(rule: &Rule, b: &RecordData, r: &RecordData, metric: &'static str) -> Option<Row> {
    let (bv, rv, higher_is_better) = match metric {
        "busbw" => (b.busbw_gbps, r.busbw_gbps, true),
        "p50" => (b.latency.p50_us, r.latency.p50_us, false),
        _ => (b.latency.p99_us, r.latency.p99_us, false),
    };
    if metric != "busbw" && (!b.has_latency() || !r.has_latency()) {
        return None;
    }
    let delta = if bv > 0.0 { (rv - bv) / bv } else { 0.0 };
    let s = noise(rule, b, metric);
    let threshold = match s {
        Some(s) => Some(rule.floor.max(rule.k * s)),
        None if metric == "busbw" && !b.has_latency() => Some(rule.no_noise),
        None => None,
    };
    // A zero baseline (a world of 1, or a 0-byte row) has no meaningful relative change.
    let status = match threshold {
        _ if bv <= 0.0 => Status::NotJudged,
        None => Status::NotJudged,
        Some(t) if delta.abs() <= t => Status::Ok,
        Some(_) => {
            let worse = if higher_is_better {
                delta < 0.0
            } else {
                delta > 0.0
            };
            if worse {
                Status::Regression
            } else {
                Status::Improved
            }
        }
    };
    Some(Row {
        op: r.op.clone(),
        dtype: r.dtype.clone(),
        redop: r.redop.clone(),
        placement: r.placement.clone(),
        size_bytes: r.size_bytes,
        metric,
        baseline: bv,
        run: rv,
        delta_pct: delta * 100.0,
        noise_pct: s.map(|s| s * 100.0),
        threshold_pct: threshold.map(|t| t * 100.0),
        status,
    })
}

fn list(keys: &[&RecordKey]) -> String {
    let mut names: Vec<String> = keys.iter().take(4).map(|k| key_name(k)).collect();
    if keys.len() > 4 {
        names.push(format!("and {} more", keys.len() - 4));
    }
    names.join(", ")
}

/// Compares `run` against `baseline`; Err names what differs when the two do not cover the same rows.
pub fn compare(baseline: &LoadedRun, run: &LoadedRun, rule: &Rule) -> Result<Comparison, String> {
    let index = |l: &LoadedRun| -> Result<BTreeMap<RecordKey, RecordData>, String> {
        let mut m = BTreeMap::new();
        for r in &l.run.results {
            if m.insert(r.key(), r.clone()).is_some() {
                return Err(format!(
                    "{}: results hold {} twice; a run.json has one record per (op, dtype, redop, placement, size)",
                    l.file.display(),
                    key_name(&r.key())
                ));
            }
        }
        Ok(m)
    };
    let (bi, ri) = (index(baseline)?, index(run)?);
    if bi.is_empty() {
        return Err(format!(
            "{}: the baseline has no results to compare against",
            baseline.file.display()
        ));
    }
    let only_base: Vec<&RecordKey> = bi.keys().filter(|k| !ri.contains_key(*k)).collect();
    let only_run: Vec<&RecordKey> = ri.keys().filter(|k| !bi.contains_key(*k)).collect();
    if !only_base.is_empty() || !only_run.is_empty() {
        let mut parts = Vec::new();
        if !only_base.is_empty() {
            parts.push(format!(
                "{} lacks {} row(s) the baseline has: {}",
                run.file.display(),
                only_base.len(),
                list(&only_base)
            ));
        }
        if !only_run.is_empty() {
            parts.push(format!(
                "the baseline {} lacks {} row(s) the run has: {}",
                baseline.file.display(),
                only_run.len(),
                list(&only_run)
            ));
        }
        return Err(format!(
            "results: the runs cover different op/size sets: {}; compare runs of the same sweep (same --op, -d, -o, -b/-e/-f, --placement)",
            parts.join("; ")
        ));
    }
    let mut warnings: Vec<String> = baseline
        .warnings
        .iter()
        .chain(&run.warnings)
        .cloned()
        .collect();
    if baseline.run.world_size != run.run.world_size {
        warnings.push(format!(
            "world sizes differ (baseline {} ranks, run {}): busbw is normalized for it, latency is not",
            baseline.run.world_size, run.run.world_size
        ));
    }
    let mut rows = Vec::new();
    for (k, b) in &bi {
        let r = &ri[k];
        for metric in ["busbw", "p50", "p99"] {
            if let Some(row) = judge(rule, b, r, metric) {
                rows.push(row);
            }
        }
    }
    let count = |s: Status| rows.iter().filter(|r| r.status == s).count();
    Ok(Comparison {
        baseline: baseline.dir.display().to_string(),
        run: run.dir.display().to_string(),
        rule: rule.describe(),
        regressions: count(Status::Regression),
        improvements: count(Status::Improved),
        judged: rows.len() - count(Status::NotJudged),
        warnings,
        rows,
    })
}

fn fmt_val(metric: &str, v: f64) -> String {
    if metric == "busbw" {
        format!("{v:.3} GB/s")
    } else {
        format!("{} us", super::table::fmt_us(v))
    }
}

impl Comparison {
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "## collbench compare\n");
        let _ = writeln!(
            s,
            "baseline `{}` · run `{}`\n\n**{} regression(s), {} improvement(s)** beyond noise in {} judged comparisons.\n",
            self.baseline, self.run, self.regressions, self.improvements, self.judged
        );
        let _ = writeln!(s, "Rule: {}.\n", self.rule);
        for w in &self.warnings {
            let _ = writeln!(s, "> **warning:** {w}\n");
        }
        s.push_str("| op | type | redop | placement | size | metric | baseline | run | change | noise s | threshold | status |\n");
        s.push_str("|---|---|---|---|---:|---|---:|---:|---:|---:|---:|---|\n");
        for r in &self.rows {
            let pct = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.1}%"));
            let status = if r.status == Status::Regression {
                format!("**{}**", r.status.label())
            } else {
                r.status.label().to_string()
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {:+.1}% | {} | {} | {} |",
                r.op,
                r.dtype,
                r.redop,
                r.placement,
                crate::plan::size::format_size(r.size_bytes),
                r.metric,
                fmt_val(r.metric, r.baseline),
                fmt_val(r.metric, r.run),
                r.delta_pct,
                pct(r.noise_pct),
                pct(r.threshold_pct),
                status
            );
        }
        s
    }

    pub fn json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("comparison serializes");
        s.push('\n');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::LatencySummary;
    use crate::report::read::RecordData;

    fn rec(p50: f64, p90: f64, samples: u64) -> RecordData {
        RecordData {
            op: "all_reduce".into(),
            dtype: "float".into(),
            redop: "sum".into(),
            root: -1,
            placement: "out_of_place".into(),
            size_bytes: 1 << 20,
            count: 1 << 18,
            iterations: 100,
            time_us: p50,
            time_us_min_rank: p50,
            time_us_max_rank: p50,
            algbw_gbps: 1e3 / p50,
            busbw_gbps: 1e3 / p50,
            wrong: Some(0),
            latency: LatencySummary {
                samples,
                p50_us: p50,
                p90_us: p90,
                p99_us: p90 * 1.1,
                p999_us: p90 * 1.2,
                max_us: p90 * 1.3,
                min_us: p50 * 0.9,
                mean_us: p50,
                stdev_us: 0.0,
                clamped: 0,
            },
            skew: LatencySummary::default(),
            per_rank: vec![],
            histogram_tag: String::new(),
            start_unix_s: 0.0,
        }
    }

    #[test]
    fn threshold_is_k_times_spread_with_a_floor() {
        let rule = Rule::default();
        // Spread 10%: threshold 20%; a 19% slower p50 is within, 21% beyond.
        let b = rec(100.0, 110.0, 200);
        let row = judge(&rule, &b, &rec(119.0, 130.0, 200), "p50").unwrap();
        assert_eq!(row.status, Status::Ok);
        assert!((row.threshold_pct.unwrap() - 20.0).abs() < 1e-9);
        let row = judge(&rule, &b, &rec(121.0, 130.0, 200), "p50").unwrap();
        assert_eq!(row.status, Status::Regression);
        let row = judge(&rule, &b, &rec(121.0, 130.0, 200), "busbw").unwrap();
        assert_eq!(
            row.status,
            Status::Ok,
            "busbw 1/1.21 = -17.4% is within 20%"
        );
        // Tight baseline: the 5% floor applies.
        let tight = rec(100.0, 100.5, 200);
        let row = judge(&rule, &tight, &rec(104.0, 105.0, 200), "p50").unwrap();
        assert_eq!((row.status, row.threshold_pct), (Status::Ok, Some(5.0)));
        assert_eq!(
            judge(&rule, &tight, &rec(94.0, 95.0, 200), "p50")
                .unwrap()
                .status,
            Status::Improved
        );
    }

    #[test]
    fn too_few_samples_are_not_judged() {
        let rule = Rule::default();
        let b = rec(100.0, 110.0, 5);
        assert_eq!(
            judge(&rule, &b, &rec(300.0, 330.0, 5), "p50")
                .unwrap()
                .status,
            Status::NotJudged
        );
        // p99 needs 1000 samples.
        let b = rec(100.0, 110.0, 999);
        assert_eq!(
            judge(&rule, &b, &rec(300.0, 330.0, 999), "p99")
                .unwrap()
                .status,
            Status::NotJudged
        );
        let b = rec(100.0, 110.0, 1000);
        assert_eq!(
            judge(&rule, &b, &rec(300.0, 330.0, 1000), "p99")
                .unwrap()
                .status,
            Status::Regression
        );
    }

    #[test]
    fn without_iterations_busbw_is_judged_against_ten_percent() {
        let rule = Rule::default();
        let b = rec(100.0, 110.0, 0);
        assert!(judge(&rule, &b, &rec(100.0, 110.0, 0), "p50").is_none());
        // busbw 1000/p50: 10 -> 9.17 (-8.3%) is within 10%, 10 -> 8.85 (-11.5%) beyond.
        let row = judge(&rule, &b, &rec(109.0, 120.0, 0), "busbw").unwrap();
        assert_eq!((row.status, row.threshold_pct), (Status::Ok, Some(10.0)));
        assert_eq!(
            judge(&rule, &b, &rec(113.0, 120.0, 0), "busbw")
                .unwrap()
                .status,
            Status::Regression
        );
    }
}
