//! Topology files (topologies/*.toml): a cluster kind's nodes, GPUs, fabric and NICs, and the
//! checks a healthy one passes, resolved into typed values; every error names the file and line.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::size::format_size;
use super::spans::{Lines, PlanFileError};
use super::{BackendKind, Collective};

/// Where a check applies: on one host, or across hosts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    IntraNode,
    InterNode,
    Any,
}

impl Scope {
    pub fn name(self) -> &'static str {
        match self {
            Scope::IntraNode => "intra_node",
            Scope::InterNode => "inter_node",
            Scope::Any => "any",
        }
    }
}

/// What a check measures, and which way is better.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Bus bandwidth in GB/s; a minimum.
    BusbwGbps,
    /// Median per-iteration latency over all ranks, in microseconds; a maximum.
    LatencyP50Us,
    /// 99th percentile per-iteration latency over all ranks, in microseconds; a maximum.
    LatencyP99Us,
}

impl Metric {
    const ALL: [(&'static str, Metric); 3] = [
        ("busbw_gbps", Metric::BusbwGbps),
        ("latency_p50_us", Metric::LatencyP50Us),
        ("latency_p99_us", Metric::LatencyP99Us),
    ];

    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, m)| *m == self)
            .map_or("?", |(n, _)| n)
    }

    /// Whether a larger value is better (bandwidth) or worse (latency).
    pub fn higher_is_better(self) -> bool {
        self == Metric::BusbwGbps
    }

    pub fn unit(self) -> &'static str {
        match self {
            Metric::BusbwGbps => "GB/s",
            Metric::LatencyP50Us | Metric::LatencyP99Us => "us",
        }
    }
}

/// One threshold check: a metric of one collective over a size range, with pass and warn levels.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Check {
    pub name: String,
    pub op: Collective,
    pub scope: Scope,
    pub metric: Metric,
    pub min_bytes: u64,
    pub max_bytes: u64,
    /// At or better than this: pass.
    pub pass: f64,
    /// At or better than this (but worse than pass): warn; worse: fail.
    pub warn: f64,
    pub line: usize,
}

impl Check {
    pub fn sizes(&self) -> String {
        if self.min_bytes == self.max_bytes {
            format_size(self.min_bytes)
        } else {
            format!(
                "{}-{}",
                format_size(self.min_bytes),
                format_size(self.max_bytes)
            )
        }
    }
}

/// The straggler rule: a rank whose median, across records, of (its p50 / the median rank's p50)
/// is beyond a factor either way warns or fails.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StragglerRule {
    pub warn_factor: f64,
    pub fail_factor: f64,
    /// Only records of at least this many bytes count.
    pub min_bytes: u64,
}

impl Default for StragglerRule {
    fn default() -> Self {
        StragglerRule {
            warn_factor: 1.5,
            fail_factor: 2.0,
            min_bytes: 0,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Nodes {
    Count(usize),
    Names(Vec<String>),
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Nic {
    pub kind: String,
    pub model: Option<String>,
    pub count: u32,
    pub gbps: f64,
}

/// A resolved topology file.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Topology {
    pub file: PathBuf,
    pub name: String,
    pub description: Option<String>,
    pub nodes: Option<Nodes>,
    pub gpus_per_node: u32,
    /// Ranks each node must run [default: gpus_per_node when that is not 0].
    pub ranks_per_node: Option<u32>,
    pub intra_node: String,
    pub backend: Option<BackendKind>,
    pub nics: Vec<Nic>,
    pub checks: Vec<Check>,
    pub straggler: StragglerRule,
}

impl Topology {
    pub fn expected_ranks_per_node(&self) -> Option<u32> {
        self.ranks_per_node
            .or((self.gpus_per_node > 0).then_some(self.gpus_per_node))
    }
}

impl fmt::Display for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nodes = match &self.nodes {
            None => "any number of nodes".to_string(),
            Some(Nodes::Count(n)) => format!("{n} node(s)"),
            Some(Nodes::Names(v)) => format!("nodes {}", v.join(", ")),
        };
        writeln!(
            f,
            "{}: ok, topology {}: {nodes}, {} GPU(s) per node, intra-node {}",
            self.file.display(),
            self.name,
            self.gpus_per_node,
            self.intra_node
        )?;
        for n in &self.nics {
            writeln!(
                f,
                "  nic: {} x {} {} Gbps{}",
                n.count,
                n.kind,
                n.gbps,
                n.model
                    .as_deref()
                    .map_or(String::new(), |m| format!(" ({m})"))
            )?;
        }
        for c in &self.checks {
            let (cmp, worse) = if c.metric.higher_is_better() {
                (">=", "<")
            } else {
                ("<=", ">")
            };
            writeln!(
                f,
                "  check {} (line {}): {} {} at {} [{}]: pass {cmp} {u}{unit}, warn {cmp} {w}{unit}, fail {worse} {w}{unit}",
                c.name,
                c.line,
                c.op.name(),
                c.metric.name(),
                c.sizes(),
                c.scope.name(),
                u = c.pass,
                w = c.warn,
                unit = format_args!(" {}", c.metric.unit()),
            )?;
        }
        write!(
            f,
            "  straggler: a rank's median p50 ratio to the median rank beyond {}x warns, beyond {}x fails (records >= {})",
            self.straggler.warn_factor,
            self.straggler.fail_factor,
            format_size(self.straggler.min_bytes)
        )
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    topology: Spanned<RawHeader>,
    #[serde(default)]
    nic: Vec<Spanned<RawNic>>,
    #[serde(default)]
    check: Vec<Spanned<RawCheck>>,
    straggler: Option<Spanned<RawStraggler>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeader {
    name: Spanned<String>,
    description: Option<String>,
    nodes: Option<Spanned<toml::Value>>,
    gpus_per_node: Spanned<i64>,
    ranks_per_node: Option<Spanned<i64>>,
    intra_node: Spanned<String>,
    backend: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNic {
    kind: Spanned<String>,
    model: Option<String>,
    count: Spanned<i64>,
    gbps: Spanned<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCheck {
    name: Option<String>,
    op: Spanned<String>,
    scope: Spanned<String>,
    metric: Spanned<String>,
    size: Option<Spanned<toml::Value>>,
    min_size: Option<Spanned<toml::Value>>,
    max_size: Option<Spanned<toml::Value>>,
    pass: Spanned<f64>,
    warn: Spanned<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStraggler {
    warn_factor: Spanned<f64>,
    fail_factor: Spanned<f64>,
    min_size: Option<Spanned<toml::Value>>,
}

/// Reads and validates a topology file; every problem is reported with file and line.
pub fn load(path: &Path) -> Result<Topology, Vec<PlanFileError>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![PlanFileError {
            file: path.to_path_buf(),
            line: 0,
            problem: format!("cannot read: {e}"),
            fix: "pass the path of a readable topology file (see topologies/)".into(),
        }]
    })?;
    parse(path, &text)
}

const OPS: &str = "all_reduce, all_to_all";

pub fn parse(path: &Path, text: &str) -> Result<Topology, Vec<PlanFileError>> {
    let lines = Lines { file: path, text };
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        vec![lines.err(
            e.span().unwrap_or(0..0),
            e.message().trim().replace('\n', " "),
            "see the topology format in README.md and topologies/*.toml ([topology], [[nic]], [[check]], [straggler])",
        )]
    })?;
    let mut errors = Vec::new();
    let h = raw.topology.get_ref();
    if h.name.get_ref().trim().is_empty() {
        errors.push(lines.err(h.name.span(), "name is empty", "name the cluster kind"));
    }
    let count = |v: &Spanned<i64>, key: &str, min: i64, errors: &mut Vec<PlanFileError>| {
        let n = *v.get_ref();
        if n < min || n > u32::MAX as i64 {
            errors.push(lines.err(
                v.span(),
                format!("{key} = {n} is out of range"),
                &format!("use a whole number of {min} or more"),
            ));
            None
        } else {
            Some(n as u32)
        }
    };
    let gpus_per_node = count(&h.gpus_per_node, "gpus_per_node", 0, &mut errors).unwrap_or(0);
    let ranks_per_node = h
        .ranks_per_node
        .as_ref()
        .and_then(|v| count(v, "ranks_per_node", 1, &mut errors));
    let nodes = h.nodes.as_ref().and_then(|v| match v.get_ref() {
        toml::Value::Integer(n) if *n >= 1 => Some(Nodes::Count(*n as usize)),
        toml::Value::Array(a)
            if !a.is_empty()
                && a.iter()
                    .all(|x| x.as_str().is_some_and(|s| !s.trim().is_empty())) =>
        {
            Some(Nodes::Names(
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect(),
            ))
        }
        other => {
            errors.push(lines.err(
                v.span(),
                format!("nodes = {other} is neither a node count nor a list of host names"),
                "write nodes = 2 or nodes = [\"node-a\", \"node-b\"], or leave it out for any number",
            ));
            None
        }
    });
    let backend = h.backend.as_ref().and_then(|v| match v.get_ref().as_str() {
        "nccl" => Some(BackendKind::Nccl),
        "mpi" => Some(BackendKind::Mpi),
        other => {
            errors.push(lines.err(
                v.span(),
                format!("unknown backend '{other}'"),
                "use nccl or mpi, or leave it out for either",
            ));
            None
        }
    });

    let mut nics = Vec::new();
    for n in &raw.nic {
        let r = n.get_ref();
        let c = count(&r.count, "nic count", 1, &mut errors);
        if !(*r.gbps.get_ref() > 0.0 && r.gbps.get_ref().is_finite()) {
            errors.push(lines.err(
                r.gbps.span(),
                format!("gbps = {} is not a positive rate", r.gbps.get_ref()),
                "write the line rate of one NIC in Gbit/s, e.g. gbps = 400",
            ));
        }
        if let Some(c) = c {
            nics.push(Nic {
                kind: r.kind.get_ref().clone(),
                model: r.model.clone(),
                count: c,
                gbps: *r.gbps.get_ref(),
            });
        }
    }

    let mut checks: Vec<Check> = Vec::new();
    for c in &raw.check {
        match resolve_check(&lines, c) {
            Ok(x) => {
                if let Some(prev) = checks.iter().find(|p| p.name == x.name) {
                    errors.push(lines.err(
                        c.span(),
                        format!(
                            "check name '{}' is used already at line {}",
                            x.name, prev.line
                        ),
                        "give each check its own name",
                    ));
                } else {
                    checks.push(x);
                }
            }
            Err(mut e) => errors.append(&mut e),
        }
    }

    let mut straggler = StragglerRule::default();
    if let Some(s) = &raw.straggler {
        let r = s.get_ref();
        let (w, f) = (*r.warn_factor.get_ref(), *r.fail_factor.get_ref());
        if !(w > 1.0 && w.is_finite()) {
            errors.push(lines.err(
                r.warn_factor.span(),
                format!("warn_factor = {w} must be above 1"),
                "use a factor like 1.5 (a rank 1.5x off the median rank warns)",
            ));
        }
        if !(f >= w && f.is_finite()) {
            errors.push(lines.err(
                r.fail_factor.span(),
                format!("fail_factor = {f} must be at least warn_factor ({w})"),
                "make fail_factor >= warn_factor, e.g. 2",
            ));
        }
        straggler.warn_factor = w;
        straggler.fail_factor = f;
        if let Some(v) = &r.min_size {
            match lines.size(v, "min_size") {
                Ok(b) => straggler.min_bytes = b,
                Err(e) => errors.push(e),
            }
        }
    }
    if checks.is_empty() && raw.straggler.is_none() && errors.is_empty() {
        errors.push(lines.err(
            raw.topology.span(),
            "the topology has no [[check]] and no [straggler] rule, so it judges nothing",
            "add at least one [[check]]",
        ));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Topology {
        file: path.to_path_buf(),
        name: h.name.get_ref().clone(),
        description: h.description.clone(),
        nodes,
        gpus_per_node,
        ranks_per_node,
        intra_node: h.intra_node.get_ref().clone(),
        backend,
        nics,
        checks,
        straggler,
    })
}

fn resolve_check(lines: &Lines, c: &Spanned<RawCheck>) -> Result<Check, Vec<PlanFileError>> {
    let mut errors = Vec::new();
    let r = c.get_ref();
    let op = Collective::parse(r.op.get_ref());
    if op.is_none() {
        errors.push(lines.err(
            r.op.span(),
            format!("unknown op '{}'", r.op.get_ref()),
            &format!("use one of {OPS}"),
        ));
    }
    let scope = match r.scope.get_ref().as_str() {
        "intra_node" => Some(Scope::IntraNode),
        "inter_node" => Some(Scope::InterNode),
        "any" => Some(Scope::Any),
        other => {
            errors.push(lines.err(
                r.scope.span(),
                format!("unknown scope '{other}'"),
                "use intra_node (all ranks on one host), inter_node (ranks on 2+ hosts) or any",
            ));
            None
        }
    };
    let metric = Metric::ALL
        .iter()
        .find(|(n, _)| *n == r.metric.get_ref().as_str())
        .map(|(_, m)| *m);
    if metric.is_none() {
        errors.push(lines.err(
            r.metric.span(),
            format!("unknown metric '{}'", r.metric.get_ref()),
            "use busbw_gbps (a minimum), latency_p50_us or latency_p99_us (maximums)",
        ));
    }
    let mut size = |v: &Option<Spanned<toml::Value>>, key: &str| {
        v.as_ref()
            .and_then(|v| lines.size(v, key).map_err(|e| errors.push(e)).ok())
    };
    let (one, lo, hi) = (
        size(&r.size, "size"),
        size(&r.min_size, "min_size"),
        size(&r.max_size, "max_size"),
    );
    let range = match (&r.size, &r.min_size, &r.max_size) {
        (Some(_), None, None) => one.map(|s| (s, s)),
        (None, Some(_), Some(_)) => lo.zip(hi),
        (Some(v), _, _) => {
            errors.push(lines.err(
                v.span(),
                "size is given together with min_size/max_size",
                "give either size or both min_size and max_size",
            ));
            None
        }
        _ => {
            errors.push(lines.err(
                c.span(),
                "a check needs the sizes it judges",
                "add size = \"16G\", or min_size and max_size",
            ));
            None
        }
    };
    if let Some((lo, hi)) = range {
        if lo > hi {
            errors.push(lines.err(
                r.min_size.as_ref().map_or(c.span(), |v| v.span()),
                format!(
                    "min_size {} is above max_size {}",
                    format_size(lo),
                    format_size(hi)
                ),
                "swap them",
            ));
        }
    }
    let (pass, warn) = (*r.pass.get_ref(), *r.warn.get_ref());
    for (v, key) in [(&r.pass, "pass"), (&r.warn, "warn")] {
        if !(*v.get_ref() > 0.0 && v.get_ref().is_finite()) {
            errors.push(lines.err(
                v.span(),
                format!("{key} = {} is not a positive level", v.get_ref()),
                "write the level in the metric's unit (GB/s or us)",
            ));
        }
    }
    if let Some(m) = metric {
        let (ok, fix) = if m.higher_is_better() {
            (
                warn <= pass,
                "for a bandwidth, warn is the lower level: warn <= pass",
            )
        } else {
            (
                warn >= pass,
                "for a latency, warn is the higher level: warn >= pass",
            )
        };
        if !ok {
            errors.push(lines.err(
                r.warn.span(),
                format!("warn = {warn} is on the wrong side of pass = {pass}"),
                fix,
            ));
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let (op, scope, metric) = (
        op.expect("checked"),
        scope.expect("checked"),
        metric.expect("checked"),
    );
    let (min_bytes, max_bytes) = range.expect("checked");
    let mut check = Check {
        name: String::new(),
        op,
        scope,
        metric,
        min_bytes,
        max_bytes,
        pass,
        warn,
        line: lines.line_of(c.span()),
    };
    check.name = r.name.clone().unwrap_or_else(|| {
        format!(
            "{} {} {} {}",
            op.name(),
            metric.name(),
            check.sizes(),
            scope.name()
        )
    });
    Ok(check)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[topology]
name = "t"
gpus_per_node = 8
intra_node = "NVLink"
backend = "nccl"

[[nic]]
kind = "infiniband"
count = 8
gbps = 400

[[check]]
op = "all_reduce"
scope = "intra_node"
metric = "busbw_gbps"
min_size = "8G"
max_size = "16G"
pass = 480
warn = 460

[[check]]
name = "small latency"
op = "all_to_all"
scope = "any"
metric = "latency_p50_us"
size = 1024
pass = 50
warn = 100

[straggler]
warn_factor = 1.2
fail_factor = 1.5
min_size = "1M"
"#;

    fn errs(text: &str) -> Vec<String> {
        parse(Path::new("t.toml"), text)
            .unwrap_err()
            .iter()
            .map(|e| e.to_string())
            .collect()
    }

    #[test]
    fn parses_checks_nics_and_rule() {
        let t = parse(Path::new("t.toml"), GOOD).unwrap();
        assert_eq!(t.checks.len(), 2);
        assert_eq!(t.checks[0].name, "all_reduce busbw_gbps 8G-16G intra_node");
        assert_eq!(t.checks[0].min_bytes, 8 << 30);
        assert_eq!(t.checks[0].line, 13);
        assert_eq!(t.checks[1].min_bytes, 1024);
        assert_eq!(t.nics[0].count, 8);
        assert_eq!(t.straggler.min_bytes, 1 << 20);
        assert_eq!(t.expected_ranks_per_node(), Some(8));
        assert_eq!(t.backend, Some(BackendKind::Nccl));
    }

    #[test]
    fn bad_values_name_their_line() {
        let e = errs(&GOOD.replace("op = \"all_to_all\"", "op = \"broadcast\""));
        assert!(
            e[0].starts_with("t.toml:24: unknown op 'broadcast'"),
            "{e:?}"
        );
        let e = errs(&GOOD.replace("warn = 460", "warn = 500"));
        assert!(
            e[0].starts_with("t.toml:20: warn = 500 is on the wrong side"),
            "{e:?}"
        );
        let e = errs(&GOOD.replace("warn = 100", "warn = 10"));
        assert!(e[0].contains(":29: warn = 10"), "{e:?}");
        let e = errs(&GOOD.replace("size = 1024", "size = \"big\""));
        assert!(e[0].contains(":27: size:"), "{e:?}");
        let e = errs(&GOOD.replace("scope = \"any\"", "scope = \"rack\""));
        assert!(e[0].contains(":25: unknown scope 'rack'"), "{e:?}");
        let e = errs(&GOOD.replace("fail_factor = 1.5", "fail_factor = 1.1"));
        assert!(e[0].contains(":33: fail_factor"), "{e:?}");
        let e = errs(&GOOD.replace("gbps = 400", "gbps = 400\ncolour = 1"));
        assert!(
            e[0].contains("t.toml:12:") && e[0].contains("colour"),
            "{e:?}"
        );
        let e = errs(&GOOD.replace("size = 1024\n", ""));
        assert!(e[0].contains(":22: a check needs the sizes"), "{e:?}");
        // Several problems are all reported.
        let e = errs(
            &GOOD
                .replace("op = \"all_to_all\"", "op = \"x\"")
                .replace("metric = \"busbw_gbps\"", "metric = \"y\""),
        );
        assert_eq!(e.len(), 2, "{e:?}");
    }
}
