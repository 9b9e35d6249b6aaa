//! The readiness verdict: every topology check judged against a run's records (pass, warn, fail,
//! or skipped with the reason), stragglers named by rank and host, and the overall ready / not ready.
//!
//! Straggler rule: per record (size >= the rule's min_size, 3+ ranks), each rank's p50 latency over
//! the median rank's p50; a rank's score is the median of that ratio across records, and its
//! factor is max(score, 1/score). A factor beyond warn_factor warns, beyond fail_factor fails.
//! A score below 1 means the other ranks wait inside each call for this rank (it arrives late, as
//! a rank that is slow before each collective does); above 1, the rank is slow inside the call.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use crate::bootstrap::RankInfo;
use crate::metrics::Record;
use crate::plan::size::format_size;
use crate::plan::topology::{Check, Metric, Nodes, Scope, StragglerRule, Topology};
use crate::report::RunDoc;
use crate::runner::localize::Localization;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pass,
    Skipped,
    Warn,
    Fail,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Skipped => "SKIP",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Overall {
    Ready,
    NotReady,
}

#[derive(Clone, Debug, Serialize)]
pub struct TopologyRef {
    pub name: String,
    pub file: String,
}

/// One judged check. `measured`/`expected` are numbers for threshold checks, text otherwise.
#[derive(Clone, Debug, Serialize)]
pub struct CheckResult {
    pub name: String,
    pub status: Status,
    pub measured: serde_json::Value,
    pub expected: serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warn_level: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub op: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
    /// Which row was worst, who was flagged, or why the check was skipped.
    pub detail: String,
}

impl CheckResult {
    fn plain(
        name: &str,
        status: Status,
        measured: String,
        expected: String,
        detail: String,
    ) -> Self {
        CheckResult {
            name: name.to_string(),
            status,
            measured: measured.into(),
            expected: expected.into(),
            warn_level: None,
            unit: None,
            metric: None,
            op: None,
            scope: None,
            min_bytes: None,
            max_bytes: None,
            detail,
        }
    }
}

/// A rank's (or node's) latency relative to the median rank.
#[derive(Clone, Debug, Serialize)]
pub struct RankScore {
    pub rank: usize,
    pub host: String,
    /// Median over records of (this rank's p50 / the median rank's p50).
    pub p50_ratio: f64,
    /// max(ratio, 1/ratio).
    pub factor: f64,
    /// Median over records of this rank's p50, in us.
    pub p50_us: f64,
    pub records: usize,
    pub status: Status,
}

#[derive(Clone, Debug, Serialize)]
pub struct NodeScore {
    pub host: String,
    pub ranks: Vec<usize>,
    /// Median of its ranks' p50 ratios.
    pub p50_ratio: f64,
    pub factor: f64,
    pub status: Status,
}

#[derive(Clone, Debug, Serialize)]
pub struct Verdict {
    pub overall: Overall,
    pub topology: TopologyRef,
    /// The straggler rule, in words.
    pub rule: String,
    pub checks: Vec<CheckResult>,
    /// Ranks the straggler rule flagged (warn or fail), worst first.
    pub stragglers: Vec<RankScore>,
    pub ranks: Vec<RankScore>,
    pub nodes: Vec<NodeScore>,
    /// `--localize`: node pairs, suspects and what the re-pairing confirmed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub localization: Option<Localization>,
}

impl Verdict {
    /// Adds the `localize` check from a localization and judges the overall again.
    pub fn add_localization(&mut self, l: Localization) {
        let pairs: usize = l.rounds.iter().map(Vec::len).sum();
        let expected = format!("every node pair within {}x of the typical pair", l.factor);
        let culprits: Vec<String> = l
            .suspects
            .iter()
            .filter(|c| c.confirmed)
            .map(|c| {
                format!(
                    "node {}: slow with {}/{} partners, and again with healthy {} ({}x)",
                    c.node,
                    c.slow_pairs,
                    c.pairs,
                    c.confirmed_with.as_deref().unwrap_or("?"),
                    c.factor
                )
            })
            .chain(l.bad_links.iter().filter(|b| b.confirmed).map(|b| {
                format!(
                    "link {}-{}: {}x while both nodes are fine with the others, again on a re-run",
                    b.a, b.b, b.factor
                )
            }))
            .collect();
        let unconfirmed: Vec<String> = l
            .suspects
            .iter()
            .filter(|c| !c.confirmed)
            .map(|c| {
                format!(
                    "node {} (slow with {}/{} partners)",
                    c.node, c.slow_pairs, c.pairs
                )
            })
            .chain(
                l.bad_links
                    .iter()
                    .filter(|b| !b.confirmed)
                    .map(|b| format!("link {}-{}", b.a, b.b)),
            )
            .collect();
        let slowest = l
            .rounds
            .iter()
            .flatten()
            .max_by(|a, b| a.factor.total_cmp(&b.factor));
        let summary = format!(
            "{} node(s), {} pair(s) in {} round(s) of {} x all_reduce {}, fastest of {} passes; typical pair {} us; slowest {}",
            l.nodes.len(),
            pairs,
            l.rounds.len(),
            l.iterations,
            format_size(l.size_bytes),
            l.passes,
            l.baseline_us,
            slowest.map_or("-".to_string(), |p| format!("{}-{} at {}x", p.a, p.b, p.factor))
        );
        let check = if let Some(note) = &l.note {
            CheckResult::plain(
                "localize",
                Status::Skipped,
                "-".into(),
                expected,
                format!("not applicable: {note}"),
            )
        } else if !culprits.is_empty() {
            CheckResult::plain(
                "localize",
                Status::Fail,
                culprits.join("; "),
                expected,
                summary,
            )
        } else if !unconfirmed.is_empty() {
            CheckResult::plain(
                "localize",
                Status::Warn,
                format!("not confirmed on re-pairing: {}", unconfirmed.join(", ")),
                expected,
                summary,
            )
        } else {
            CheckResult::plain(
                "localize",
                Status::Pass,
                format!("no bad node or link in {pairs} pair(s)"),
                expected,
                summary,
            )
        };
        self.checks.push(check);
        self.localization = Some(l);
        self.overall = overall(&self.checks);
    }

    pub fn is_ready(&self) -> bool {
        self.overall == Overall::Ready
    }

    /// One line for the exit message: what failed.
    pub fn summary(&self) -> String {
        let count = |s| self.checks.iter().filter(|c| c.status == s).count();
        let failed: Vec<&str> = self
            .checks
            .iter()
            .filter(|c| c.status == Status::Fail)
            .map(|c| c.name.as_str())
            .collect();
        let mut s = format!(
            "verdict against topology {}: {} ({} passed, {} warned, {} failed, {} skipped)",
            self.topology.name,
            match self.overall {
                Overall::Ready => "ready",
                Overall::NotReady => "not ready",
            },
            count(Status::Pass),
            count(Status::Warn),
            count(Status::Fail),
            count(Status::Skipped)
        );
        if !failed.is_empty() {
            let _ = write!(s, "; failed: {}", failed.join(", "));
        } else if self.overall == Overall::NotReady {
            s.push_str("; no check could be evaluated");
        }
        s
    }

    /// The verdict as table lines for the terminal, nccl-tests style (`#` comments).
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "#\n# Verdict against topology {} ({}): {}",
            self.topology.name,
            self.topology.file,
            match self.overall {
                Overall::Ready => "READY",
                Overall::NotReady => "NOT READY",
            }
        );
        let w = self
            .checks
            .iter()
            .map(|c| c.name.len())
            .max()
            .unwrap_or(5)
            .max(5);
        let _ = writeln!(
            s,
            "#  {:<6} {:<w$}  {:<36}  expected",
            "status", "check", "measured"
        );
        for c in &self.checks {
            let _ = writeln!(
                s,
                "#  {:<6} {:<w$}  {:<36}  {}",
                c.status.label(),
                c.name,
                value_text(&c.measured, c.unit.as_deref()),
                expected_text(c)
            );
            if !c.detail.is_empty() {
                let _ = writeln!(s, "#  {:<6} {:<w$}  ({})", "", "", c.detail);
            }
        }
        let _ = writeln!(s, "# rule: {}", self.rule);
        s
    }
}

fn value_text(v: &serde_json::Value, unit: Option<&str>) -> String {
    match v {
        serde_json::Value::Number(n) => {
            let x = n.as_f64().unwrap_or(0.0);
            format!("{} {}", round3(x), unit.unwrap_or(""))
                .trim_end()
                .to_string()
        }
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn expected_text(c: &CheckResult) -> String {
    match (&c.expected, c.warn_level, &c.metric) {
        (serde_json::Value::Number(n), Some(w), Some(m)) => {
            let cmp = if m == Metric::BusbwGbps.name() {
                ">="
            } else {
                "<="
            };
            format!(
                "{cmp} {} {} (warn {cmp} {})",
                round3(n.as_f64().unwrap_or(0.0)),
                c.unit.as_deref().unwrap_or(""),
                round3(w)
            )
        }
        (v, _, _) => value_text(v, None),
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Four significant digits (a ratio of 0.0097 must not read as 0.01).
fn sig4(x: f64) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let scale = 10f64.powi(3 - x.abs().log10().floor() as i32);
    (x * scale).round() / scale
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn level(higher_is_better: bool, value: f64, pass: f64, warn: f64) -> Status {
    let at_least = |x: f64, l: f64| if higher_is_better { x >= l } else { x <= l };
    if at_least(value, pass) {
        Status::Pass
    } else if at_least(value, warn) {
        Status::Warn
    } else {
        Status::Fail
    }
}

fn row_name(r: &Record) -> String {
    crate::report::read::series_name(r.op.name(), r.dtype.name(), &r.redop, r.placement.name())
        + " "
        + &format_size(r.size_bytes)
}

fn judge(c: &Check, records: &[Record], hosts: usize) -> CheckResult {
    let mut out = CheckResult {
        name: c.name.clone(),
        status: Status::Skipped,
        measured: serde_json::Value::Null,
        expected: c.pass.into(),
        warn_level: Some(c.warn),
        unit: Some(c.metric.unit().into()),
        metric: Some(c.metric.name().into()),
        op: Some(c.op.name().into()),
        scope: Some(c.scope.name().into()),
        min_bytes: Some(c.min_bytes),
        max_bytes: Some(c.max_bytes),
        detail: String::new(),
    };
    match c.scope {
        Scope::IntraNode if hosts != 1 => {
            out.detail = format!(
                "not applicable: an intra_node check needs every rank on one host; this run used {hosts} hosts"
            );
            return out;
        }
        Scope::InterNode if hosts < 2 => {
            out.detail =
                "not applicable: an inter_node check needs ranks on 2+ hosts; this run used one host"
                    .into();
            return out;
        }
        _ => {}
    }
    let rows: Vec<&Record> = records
        .iter()
        .filter(|r| {
            r.op == c.op
                && r.size_bytes > 0
                && (c.min_bytes..=c.max_bytes).contains(&r.size_bytes)
                && (c.metric == Metric::BusbwGbps || r.latency.samples > 0)
        })
        .collect();
    let value = |r: &Record| match c.metric {
        Metric::BusbwGbps => r.busbw_gbps,
        Metric::LatencyP50Us => r.latency.p50_us,
        Metric::LatencyP99Us => r.latency.p99_us,
    };
    let better = |a: f64, b: f64| {
        if c.metric.higher_is_better() {
            a > b
        } else {
            a < b
        }
    };
    let Some(worst) = rows
        .iter()
        .copied()
        .reduce(|w, r| if better(value(w), value(r)) { r } else { w })
    else {
        let measured: Vec<u64> = {
            let mut v: Vec<u64> = records
                .iter()
                .filter(|r| r.op == c.op)
                .map(|r| r.size_bytes)
                .collect();
            v.dedup();
            v
        };
        out.detail = match (measured.first(), measured.last()) {
            (Some(lo), Some(hi)) => format!(
                "not measured: this run's {} sizes were {}-{}; run with -b/-e covering {}",
                c.op.name(),
                format_size(*lo),
                format_size(*hi),
                c.sizes()
            ),
            _ => format!(
                "not measured: this run did not time {}; add it to --op",
                c.op.name()
            ),
        };
        return out;
    };
    let v = value(worst);
    out.status = level(c.metric.higher_is_better(), v, c.pass, c.warn);
    out.measured = round3(v).into();
    out.detail = format!("worst of {} row(s): {}", rows.len(), row_name(worst));
    out
}

struct Findings {
    check: CheckResult,
    flagged: Vec<RankScore>,
    ranks: Vec<RankScore>,
    nodes: Vec<NodeScore>,
}

fn stragglers(rule: &StragglerRule, results: &[Record], infos: &[RankInfo], n: usize) -> Findings {
    let expected = format!(
        "within {}x of the median rank (warn {}x)",
        rule.fail_factor, rule.warn_factor
    );
    let host_of = |rank: usize| {
        infos
            .iter()
            .find(|r| r.rank == rank)
            .map_or_else(|| "?".to_string(), |r| r.hostname.clone())
    };
    let skipped = |why: String| Findings {
        check: CheckResult::plain(
            "straggler",
            Status::Skipped,
            "-".into(),
            expected.clone(),
            why,
        ),
        flagged: Vec::new(),
        ranks: Vec::new(),
        nodes: Vec::new(),
    };
    if n < 3 {
        return skipped(format!(
            "not applicable: {n} rank(s); telling a late rank from the ranks waiting for it needs 3 or more"
        ));
    }
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); n];
    let mut p50s: Vec<Vec<f64>> = vec![Vec::new(); n];
    let mut medians = Vec::new();
    for r in results {
        if r.size_bytes == 0 || r.size_bytes < rule.min_bytes || r.per_rank.len() != n {
            continue;
        }
        let mut p: Vec<f64> = r.per_rank.iter().map(|s| s.p50_us).collect();
        let m = median(&mut p);
        if m.is_nan() || m <= 0.0 {
            continue;
        }
        medians.push(m);
        for s in &r.per_rank {
            if s.rank < n {
                // A floor of 10 ns keeps a rank with no wait at all finite.
                ratios[s.rank].push(s.p50_us.max(0.01) / m);
                p50s[s.rank].push(s.p50_us);
            }
        }
    }
    if ratios.iter().all(Vec::is_empty) {
        return skipped(format!(
            "not measured: no record of {} or more with per-rank latencies",
            format_size(rule.min_bytes.max(1))
        ));
    }
    let status_of = |factor: f64| {
        if factor > rule.fail_factor {
            Status::Fail
        } else if factor > rule.warn_factor {
            Status::Warn
        } else {
            Status::Pass
        }
    };
    let ranks: Vec<RankScore> = (0..n)
        .map(|rank| {
            let ratio = median(&mut ratios[rank].clone());
            let factor = ratio.max(1.0 / ratio);
            RankScore {
                rank,
                host: host_of(rank),
                p50_ratio: sig4(ratio),
                factor: round3(factor),
                p50_us: round3(median(&mut p50s[rank].clone())),
                records: ratios[rank].len(),
                status: status_of(factor),
            }
        })
        .collect();
    let mut by_host: BTreeMap<String, Vec<&RankScore>> = BTreeMap::new();
    for r in &ranks {
        by_host.entry(r.host.clone()).or_default().push(r);
    }
    let nodes: Vec<NodeScore> = by_host
        .into_iter()
        .map(|(host, rs)| {
            let ratio = median(&mut rs.iter().map(|r| r.p50_ratio).collect::<Vec<_>>());
            let factor = ratio.max(1.0 / ratio);
            NodeScore {
                host,
                ranks: rs.iter().map(|r| r.rank).collect(),
                p50_ratio: sig4(ratio),
                factor: round3(factor),
                status: status_of(factor),
            }
        })
        .collect();
    let mut flagged: Vec<RankScore> = ranks
        .iter()
        .filter(|r| r.status != Status::Pass)
        .cloned()
        .collect();
    flagged.sort_by(|a, b| b.factor.total_cmp(&a.factor));
    let typical = round3(median(&mut medians));
    let describe = |r: &RankScore| {
        if r.p50_ratio < 1.0 {
            format!(
                "rank {} on host {}: the other ranks wait for it, {:.1}x its time per call",
                r.rank, r.host, r.factor
            )
        } else {
            format!(
                "rank {} on host {} is {:.1}x the median rank",
                r.rank, r.host, r.factor
            )
        }
    };
    let explain = |r: &RankScore| {
        format!(
            "rank {}: p50 {} us against the median rank's {} us (medians over {} records){}",
            r.rank,
            r.p50_us,
            typical,
            r.records,
            if r.p50_ratio < 1.0 {
                "; it arrives late to each call, and the others wait inside the call for it"
            } else {
                "; it is slow inside the call"
            }
        )
    };
    let check = match flagged.first() {
        None => {
            let worst = ranks
                .iter()
                .max_by(|a, b| a.factor.total_cmp(&b.factor))
                .expect("3+ ranks");
            CheckResult::plain(
                "straggler",
                Status::Pass,
                format!("worst: rank {} at {:.2}x", worst.rank, worst.factor),
                expected,
                format!("{} ranks, median over {} record(s)", n, worst.records),
            )
        }
        Some(w) => CheckResult::plain(
            "straggler",
            w.status,
            describe(w),
            expected,
            flagged.iter().map(explain).collect::<Vec<_>>().join("; "),
        ),
    };
    Findings {
        check,
        flagged,
        ranks,
        nodes,
    }
}

/// Judges a finished run against a topology.
pub fn evaluate(t: &Topology, doc: &RunDoc) -> Verdict {
    let hosts = doc.hosts.len().max(1);
    let mut checks = Vec::new();
    if let Some(b) = t.backend {
        let want = match b {
            crate::plan::BackendKind::Nccl => "nccl",
            crate::plan::BackendKind::Mpi => "mpi",
        };
        let ok = doc.backend.name == want;
        checks.push(CheckResult::plain(
            "backend",
            if ok { Status::Pass } else { Status::Fail },
            doc.backend.name.clone(),
            want.to_string(),
            if ok {
                String::new()
            } else {
                format!(
                    "this topology's levels are for {want} runs; pass --backend {want} on hosts of this kind"
                )
            },
        ));
    }
    match &t.nodes {
        None => {}
        Some(Nodes::Count(want)) => {
            let ok = hosts == *want;
            checks.push(CheckResult::plain(
                "nodes",
                if ok { Status::Pass } else { Status::Fail },
                format!("{hosts} host(s)"),
                format!("{want} node(s)"),
                if ok {
                    String::new()
                } else {
                    format!("this topology has {want} node(s); the run's ranks were on {hosts}")
                },
            ));
        }
        Some(Nodes::Names(names)) => {
            let seen: Vec<&str> = doc.hosts.iter().map(|h| h.hostname.as_str()).collect();
            let missing: Vec<&str> = names
                .iter()
                .map(String::as_str)
                .filter(|n| !seen.contains(n))
                .collect();
            let extra: Vec<&str> = seen
                .iter()
                .copied()
                .filter(|h| !names.iter().any(|n| n == h))
                .collect();
            let status = if !missing.is_empty() {
                Status::Fail
            } else if !extra.is_empty() {
                Status::Warn
            } else {
                Status::Pass
            };
            let mut detail = Vec::new();
            if !missing.is_empty() {
                detail.push(format!("no rank ran on {}", missing.join(", ")));
            }
            if !extra.is_empty() {
                detail.push(format!("hosts not in the topology: {}", extra.join(", ")));
            }
            checks.push(CheckResult::plain(
                "nodes",
                status,
                seen.join(", "),
                names.join(", "),
                detail.join("; "),
            ));
        }
    }
    if let Some(want) = t.expected_ranks_per_node() {
        let off: Vec<String> = doc
            .hosts
            .iter()
            .filter(|h| h.ranks.len() != want as usize)
            .map(|h| format!("{} ran {}", h.hostname, h.ranks.len()))
            .collect();
        checks.push(CheckResult::plain(
            "ranks per node",
            if off.is_empty() {
                Status::Pass
            } else {
                Status::Fail
            },
            if off.is_empty() {
                format!("{want} on each of {hosts} host(s)")
            } else {
                off.join(", ")
            },
            format!("{want}"),
            if off.is_empty() {
                String::new()
            } else {
                format!(
                    "a node of this kind runs {want} ranks (one per GPU); start {want} per node"
                )
            },
        ));
    }
    for c in &t.checks {
        checks.push(judge(c, &doc.results, hosts));
    }
    let f = stragglers(&t.straggler, &doc.results, &doc.ranks, doc.world_size);
    checks.push(f.check);
    if hosts > 1 && !f.nodes.is_empty() {
        let worst = f
            .nodes
            .iter()
            .max_by(|a, b| a.factor.total_cmp(&b.factor))
            .expect("nodes");
        checks.push(CheckResult::plain(
            "node skew",
            worst.status,
            format!("host {}: {}x the median rank", worst.host, worst.factor),
            format!(
                "within {}x (warn {}x)",
                t.straggler.fail_factor, t.straggler.warn_factor
            ),
            format!("median of each host's ranks' p50 ratios, over {hosts} hosts"),
        ));
    }
    Verdict {
        overall: overall(&checks),
        topology: TopologyRef {
            name: t.name.clone(),
            file: t.file.display().to_string(),
        },
        rule: format!(
            "straggler: per record (size >= {}), a rank's p50 over the median rank's p50; a rank's factor is the median of that ratio across records (or its inverse, if below 1); above {}x warns, above {}x fails",
            format_size(t.straggler.min_bytes),
            t.straggler.warn_factor,
            t.straggler.fail_factor
        ),
        checks,
        stragglers: f.flagged,
        ranks: f.ranks,
        nodes: f.nodes,
        localization: None,
    }
}

/// Not ready when any check failed, or when none could be judged.
fn overall(checks: &[CheckResult]) -> Overall {
    let failed = checks.iter().any(|c| c.status == Status::Fail);
    let judged = checks
        .iter()
        .any(|c| matches!(c.status, Status::Pass | Status::Warn));
    if failed || !judged {
        Overall::NotReady
    } else {
        Overall::Ready
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{LatencyHistogram, RankSummary};
    use crate::plan::{Collective, DType, Placement};

    fn record(size: u64, p50s: &[f64]) -> Record {
        Record {
            op: Collective::AllReduce,
            dtype: DType::Float,
            redop: "sum".into(),
            root: -1,
            placement: Placement::OutOfPlace,
            size_bytes: size,
            count: size / 4,
            iterations: 20,
            time_us: 1.0,
            time_us_min_rank: 1.0,
            time_us_max_rank: 1.0,
            algbw_gbps: 1.0,
            busbw_gbps: 1.0,
            wrong: Some(0),
            latency: Default::default(),
            skew: Default::default(),
            per_rank: p50s
                .iter()
                .enumerate()
                .map(|(rank, &p50_us)| RankSummary {
                    rank,
                    time_us: p50_us,
                    wrong: 0,
                    p50_us,
                    p99_us: p50_us,
                    max_us: p50_us,
                    mean_us: p50_us,
                    wrong_source: None,
                })
                .collect(),
            histogram_tag: String::new(),
            start_unix_s: 0.0,
            histogram: LatencyHistogram::new(),
        }
    }

    fn info(rank: usize, host: &str) -> RankInfo {
        RankInfo {
            rank,
            local_rank: 0,
            hostname: host.into(),
            pid: 1,
            gpu: None,
            pci_bus_id: None,
            gpu_name: None,
        }
    }

    #[test]
    fn a_rank_slow_inside_the_call_is_named_with_its_host() {
        let rule = StragglerRule {
            warn_factor: 1.5,
            fail_factor: 2.0,
            min_bytes: 1024,
        };
        let infos = [info(0, "a"), info(1, "a"), info(2, "b"), info(3, "b")];
        // Rank 3 takes 3x in most records; one record where it is not, and a small record
        // (below min_size) where rank 0 looks slow, do not change the verdict.
        let records = [
            record(512, &[90.0, 10.0, 10.0, 10.0]),
            record(1024, &[10.0, 11.0, 10.0, 30.0]),
            record(2048, &[20.0, 20.0, 21.0, 61.0]),
            record(4096, &[40.0, 41.0, 40.0, 40.0]),
        ];
        let f = stragglers(&rule, &records, &infos, 4);
        assert_eq!(f.check.status, Status::Fail);
        assert_eq!(f.flagged.len(), 1);
        assert_eq!(f.flagged[0].rank, 3);
        assert_eq!(f.flagged[0].records, 3);
        assert_eq!(
            f.check.measured,
            serde_json::Value::from("rank 3 on host b is 2.9x the median rank")
        );
        // Host b's ranks: 1.0x and 2.9x, median 2.0x; host a is 1.0x.
        let b = f.nodes.iter().find(|n| n.host == "b").unwrap();
        assert_eq!(b.ranks, vec![2, 3]);
        assert!(b.factor > 1.5 && b.factor < 2.1, "{b:?}");
        assert_eq!(
            f.nodes.iter().find(|n| n.host == "a").unwrap().status,
            Status::Pass
        );

        let healthy = [record(2048, &[20.0, 21.0, 19.0, 20.5])];
        let f = stragglers(&rule, &healthy, &infos, 4);
        assert_eq!(f.check.status, Status::Pass);
        assert!(f.flagged.is_empty());
        let f = stragglers(&rule, &healthy, &infos[..2], 2);
        assert_eq!(f.check.status, Status::Skipped);
    }

    #[test]
    fn levels_go_the_metric_s_way() {
        assert_eq!(level(true, 480.0, 480.0, 460.0), Status::Pass);
        assert_eq!(level(true, 470.0, 480.0, 460.0), Status::Warn);
        assert_eq!(level(true, 459.9, 480.0, 460.0), Status::Fail);
        assert_eq!(level(false, 10.0, 50.0, 100.0), Status::Pass);
        assert_eq!(level(false, 80.0, 50.0, 100.0), Status::Warn);
        assert_eq!(level(false, 100.1, 50.0, 100.0), Status::Fail);
    }

    #[test]
    fn medians_and_significant_digits() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&mut []).is_nan());
        assert_eq!(sig4(0.009_683_2), 0.009_683);
        assert_eq!(sig4(103.2719), 103.3);
    }
}
