//! The fault plan: a TOML file of faults (kind, target, start, duration, parameters) resolved into
//! typed, validated values. Every error names the file and line and says how to fix it.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::Collective;
use crate::control::link::{BitRate, IfaceName, Percent};

/// What a fault does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    Kill,
    Hang,
    Slow,
    Exit,
    Corrupt,
    Down,
    Loss,
    Rate,
    Partition,
    Flap,
    Delay,
}

impl FaultKind {
    const ALL: [(&'static str, FaultKind); 11] = [
        ("kill", FaultKind::Kill),
        ("hang", FaultKind::Hang),
        ("slow", FaultKind::Slow),
        ("exit", FaultKind::Exit),
        ("corrupt", FaultKind::Corrupt),
        ("down", FaultKind::Down),
        ("loss", FaultKind::Loss),
        ("rate", FaultKind::Rate),
        ("partition", FaultKind::Partition),
        ("flap", FaultKind::Flap),
        ("delay", FaultKind::Delay),
    ];

    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, k)| *k == self)
            .map_or("?", |(n, _)| n)
    }

    /// Link faults change a host's network and need root and `--allow-privileged`.
    pub fn is_link(self) -> bool {
        matches!(
            self,
            FaultKind::Down
                | FaultKind::Loss
                | FaultKind::Rate
                | FaultKind::Partition
                | FaultKind::Flap
                | FaultKind::Delay
        )
    }

    /// Whether the fault lasts (and so needs `duration`) or is a single event.
    fn needs_duration(self) -> bool {
        !matches!(self, FaultKind::Kill | FaultKind::Exit | FaultKind::Corrupt)
    }
}

/// Who a fault hits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    Rank(usize),
    Node(String),
    Link { node: String, iface: String },
    Pair(String, String),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Rank(r) => write!(f, "rank:{r}"),
            Target::Node(n) => write!(f, "node:{n}"),
            Target::Link { node, iface } => write!(f, "link:{node}/{iface}"),
            Target::Pair(a, b) => write!(f, "pair:{a},{b}"),
        }
    }
}

/// A host name as it may appear in a target: letters, digits, `-_.`.
fn valid_host(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

impl Target {
    fn parse(text: &str) -> Result<Target, String> {
        let (kind, rest) = text
            .split_once(':')
            .ok_or_else(|| format!("target '{text}' has no kind"))?;
        let host_ok = valid_host;
        match kind {
            "rank" => rest
                .parse()
                .map(Target::Rank)
                .map_err(|_| format!("'{rest}' is not a rank number")),
            "node" if host_ok(rest) => Ok(Target::Node(rest.to_string())),
            "link" => match rest.split_once('/') {
                Some((n, i)) if host_ok(n) && IfaceName::parse(i).is_ok() => Ok(Target::Link {
                    node: n.to_string(),
                    iface: i.to_string(),
                }),
                _ => Err(format!(
                    "'{rest}' is not NODE/IFACE (interface names: up to 15 of A-Z a-z 0-9 - _ .)"
                )),
            },
            "pair" => match rest.split_once(',') {
                Some((a, b)) if host_ok(a) && host_ok(b) && a != b => {
                    Ok(Target::Pair(a.to_string(), b.to_string()))
                }
                _ => Err(format!("'{rest}' is not two different nodes NODE_A,NODE_B")),
            },
            "node" => Err(format!("'{rest}' is not a host name")),
            _ => Err(format!("unknown target kind '{kind}'")),
        }
    }
}

/// When a fault starts: a time after the sweep starts, or the moment a rank reaches a call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Start {
    After(#[serde(with = "duration_ms")] Duration),
    At {
        op: Collective,
        size: u64,
        iteration: u64,
    },
}

impl fmt::Display for Start {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Start::After(d) => write!(f, "{}", humantime::format_duration(*d)),
            Start::At {
                op,
                size,
                iteration,
            } => write!(
                f,
                "{} {} iteration {iteration}",
                op.name(),
                super::size::format_size(*size)
            ),
        }
    }
}

/// One resolved fault.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    pub id: usize,
    pub kind: FaultKind,
    pub target: Target,
    pub start: Start,
    #[serde(with = "opt_duration_ms")]
    pub duration: Option<Duration>,
    /// slow: sleep before each collective; delay: added latency.
    #[serde(with = "opt_duration_ms")]
    pub delay: Option<Duration>,
    /// loss: percent of packets dropped.
    pub loss_percent: Option<f64>,
    /// rate: bits per second.
    pub rate_bps: Option<u64>,
    /// flap: one down + up cycle.
    #[serde(with = "opt_duration_ms")]
    pub period: Option<Duration>,
    pub seed: Option<u64>,
    /// Line of the `[[fault]]` in the plan file.
    pub line: usize,
}

impl Fault {
    /// The parameters as the timeline shows them.
    pub fn params(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        let d = |d: Duration| humantime::format_duration(d).to_string().into();
        if let Some(x) = self.duration {
            m.insert("duration".into(), d(x));
        }
        if let Some(x) = self.delay {
            m.insert("delay".into(), d(x));
        }
        if let Some(x) = self.loss_percent {
            m.insert("loss".into(), format!("{x}%").into());
        }
        if let Some(x) = self.rate_bps {
            m.insert("rate_bps".into(), x.into());
        }
        if let Some(x) = self.period {
            m.insert("period".into(), d(x));
        }
        if let Some(x) = self.seed {
            m.insert("seed".into(), x.into());
        }
        m
    }
}

/// The whole plan: how the controller watches, and the faults.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FaultPlan {
    pub file: PathBuf,
    /// Interval between a rank's heartbeats.
    pub heartbeat: Duration,
    /// A rank is declared missing after this long without a heartbeat.
    pub heartbeat_timeout: Duration,
    /// No rank advancing for this long while heartbeats go on is a stall.
    pub stall: Duration,
    /// After a detection, tear the job down when it makes no progress for this long.
    pub abort_after: Duration,
    pub faults: Vec<Fault>,
}

impl FaultPlan {
    /// No faults: the controller only watches the ranks (and is their rendezvous).
    pub fn watch_only(stall: Duration) -> FaultPlan {
        FaultPlan {
            file: PathBuf::from("(no fault plan)"),
            heartbeat: Duration::from_secs(1),
            heartbeat_timeout: Duration::from_secs(10),
            stall,
            abort_after: Duration::from_secs(5),
            faults: Vec::new(),
        }
    }

    pub fn needs_privilege(&self) -> bool {
        self.faults.iter().any(|f| f.kind.is_link())
    }
}

pub use super::spans::PlanFileError;
use super::spans::{size_of, Lines};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlan {
    run: Option<Spanned<RawRun>>,
    #[serde(default)]
    fault: Vec<Spanned<RawFault>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRun {
    heartbeat: Option<Spanned<String>>,
    heartbeat_timeout: Option<Spanned<String>>,
    stall: Option<Spanned<String>>,
    abort_after: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawStart {
    After(String),
    At(RawPoint),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPoint {
    op: String,
    size: toml::Value,
    iteration: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFault {
    kind: Spanned<String>,
    target: Spanned<String>,
    start: Spanned<RawStart>,
    duration: Option<Spanned<String>>,
    delay: Option<Spanned<String>>,
    loss: Option<Spanned<String>>,
    rate: Option<Spanned<String>>,
    period: Option<Spanned<String>>,
    seed: Option<Spanned<u64>>,
}

/// A plan writes loss with its % sign ("10%"), so a bare number is not taken for a fraction.
fn plan_percent(text: &str) -> Result<f64, String> {
    if !text.trim().ends_with('%') {
        return Err(format!("'{text}' has no % sign"));
    }
    Percent::parse(text)
        .map(|p| f64::from(p.hundredths()) / 100.0)
        .map_err(|e| e.to_string())
}

/// Reads and validates a plan file; every problem is reported with file and line.
pub fn load(path: &Path) -> Result<FaultPlan, Vec<PlanFileError>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![PlanFileError {
            file: path.to_path_buf(),
            line: 0,
            problem: format!("cannot read: {e}"),
            fix: "pass the path of a readable TOML fault plan".into(),
        }]
    })?;
    parse(path, &text)
}

pub fn parse(path: &Path, text: &str) -> Result<FaultPlan, Vec<PlanFileError>> {
    let lines = Lines { file: path, text };
    let raw: RawPlan = toml::from_str(text).map_err(|e| {
        let msg = e.message().trim().replace('\n', " ");
        vec![lines.err(
            e.span().unwrap_or(0..0),
            msg,
            "see the plan format in README.md (keys: kind, target, start, duration, delay, loss, rate, period, seed)",
        )]
    })?;
    let mut errors = Vec::new();
    let mut plan = FaultPlan {
        file: path.to_path_buf(),
        heartbeat: Duration::from_secs(1),
        heartbeat_timeout: Duration::from_millis(2500),
        stall: Duration::from_secs(3),
        abort_after: Duration::from_secs(5),
        faults: Vec::new(),
    };
    if let Some(run) = &raw.run {
        let r = run.get_ref();
        for (v, key, slot) in [
            (&r.heartbeat, "heartbeat", &mut plan.heartbeat),
            (
                &r.heartbeat_timeout,
                "heartbeat_timeout",
                &mut plan.heartbeat_timeout,
            ),
            (&r.stall, "stall", &mut plan.stall),
            (&r.abort_after, "abort_after", &mut plan.abort_after),
        ] {
            if let Some(v) = v {
                match lines.duration(v, key) {
                    Ok(d) if d >= Duration::from_millis(50) => *slot = d,
                    Ok(_) => errors.push(lines.err(
                        v.span(),
                        format!("{key} below 50ms"),
                        "use 50ms or more",
                    )),
                    Err(e) => errors.push(e),
                }
            }
        }
        if plan.heartbeat_timeout <= plan.heartbeat {
            errors.push(lines.err(
                run.span(),
                format!(
                    "heartbeat_timeout ({}) must be longer than heartbeat ({})",
                    humantime::format_duration(plan.heartbeat_timeout),
                    humantime::format_duration(plan.heartbeat)
                ),
                "set heartbeat_timeout to 2-3 heartbeats",
            ));
        }
    }
    for (id, f) in raw.fault.iter().enumerate() {
        match resolve_fault(&lines, id, f) {
            Ok(x) => plan.faults.push(x),
            Err(mut e) => errors.append(&mut e),
        }
    }
    if errors.is_empty() {
        Ok(plan)
    } else {
        Err(errors)
    }
}

fn resolve_fault(
    lines: &Lines,
    id: usize,
    f: &Spanned<RawFault>,
) -> Result<Fault, Vec<PlanFileError>> {
    let mut errors = Vec::new();
    let r = f.get_ref();
    let kind_names: Vec<&str> = FaultKind::ALL.iter().map(|(n, _)| *n).collect();
    let kind = FaultKind::ALL
        .iter()
        .find(|(n, _)| *n == r.kind.get_ref().as_str())
        .map(|(_, k)| *k);
    let Some(kind) = kind else {
        return Err(vec![lines.err(
            r.kind.span(),
            format!("unknown fault kind '{}'", r.kind.get_ref()),
            &format!("use one of {}", kind_names.join(", ")),
        )]);
    };
    let target = match Target::parse(r.target.get_ref()) {
        Ok(t) => Some(t),
        Err(e) => {
            errors.push(lines.err(
                r.target.span(),
                format!("target: {e}"),
                "write rank:N, node:NAME, link:NODE/IFACE or pair:NODE_A,NODE_B",
            ));
            None
        }
    };
    if let Some(t) = &target {
        let ok = match kind {
            FaultKind::Kill | FaultKind::Hang | FaultKind::Slow => {
                matches!(t, Target::Rank(_) | Target::Node(_))
            }
            FaultKind::Exit | FaultKind::Corrupt => matches!(t, Target::Rank(_)),
            FaultKind::Partition => matches!(t, Target::Pair(..)),
            _ => matches!(t, Target::Link { .. }),
        };
        if !ok {
            let want = match kind {
                FaultKind::Kill | FaultKind::Hang | FaultKind::Slow => "rank:N or node:NAME",
                FaultKind::Exit | FaultKind::Corrupt => "rank:N",
                FaultKind::Partition => "pair:NODE_A,NODE_B",
                _ => "link:NODE/IFACE",
            };
            errors.push(lines.err(
                r.target.span(),
                format!("a {} fault cannot target {t}", kind.name()),
                &format!("target {want}"),
            ));
        }
    }
    let start = match r.start.get_ref() {
        RawStart::After(s) => lines
            .duration(&Spanned::new(r.start.span(), s.clone()), "start")
            .map(Start::After)
            .map_err(|e| errors.push(e))
            .ok(),
        RawStart::At(p) => {
            let op = Collective::parse(&p.op);
            let size = size_of(&p.size);
            match (op, size) {
                (Some(op), Some(size)) => Some(Start::At {
                    op,
                    size,
                    iteration: p.iteration,
                }),
                (None, _) => {
                    errors.push(lines.err(
                        r.start.span(),
                        format!("start.op: unknown collective '{}'", p.op),
                        "use all_reduce or all_to_all",
                    ));
                    None
                }
                (_, None) => {
                    errors.push(lines.err(
                        r.start.span(),
                        format!("start.size: '{}' is not a size", p.size),
                        "write a byte count like 1048576 or \"1M\"",
                    ));
                    None
                }
            }
        }
    };
    let opt_dur = |v: &Option<Spanned<String>>, key: &str, errors: &mut Vec<PlanFileError>| {
        v.as_ref()
            .and_then(|v| lines.duration(v, key).map_err(|e| errors.push(e)).ok())
    };
    let duration = opt_dur(&r.duration, "duration", &mut errors);
    let delay = opt_dur(&r.delay, "delay", &mut errors);
    let period = opt_dur(&r.period, "period", &mut errors);
    let loss_percent = r.loss.as_ref().and_then(|v| {
        plan_percent(v.get_ref())
            .map_err(|e| {
                errors.push(lines.err(v.span(), format!("loss: {e}"), "write it like \"10%\""))
            })
            .ok()
    });
    let rate_bps = r.rate.as_ref().and_then(|v| {
        BitRate::parse(v.get_ref())
            .map(BitRate::bits_per_sec)
            .map_err(|e| {
                errors.push(lines.err(
                    v.span(),
                    format!("rate: {e}"),
                    "write it like \"100mbit\", \"1gbit\" or \"500kbit\"",
                ))
            })
            .ok()
    });

    let here = f.span();
    let mut need = |present: bool, key: &str, example: &str| {
        if !present {
            errors.push(lines.err(
                here.clone(),
                format!("a {} fault needs {key}", kind.name()),
                &format!("add {key} = {example}"),
            ));
        }
    };
    if kind.needs_duration() {
        need(r.duration.is_some(), "duration", "\"3s\"");
    }
    match kind {
        FaultKind::Slow | FaultKind::Delay => need(r.delay.is_some(), "delay", "\"2ms\""),
        FaultKind::Loss => need(r.loss.is_some(), "loss", "\"10%\""),
        FaultKind::Rate => need(r.rate.is_some(), "rate", "\"100mbit\""),
        FaultKind::Flap => need(r.period.is_some(), "period", "\"1s\""),
        _ => {}
    }
    let mut refuse = |present: Option<Range<usize>>, key: &str| {
        if let Some(span) = present {
            errors.push(lines.err(
                span,
                format!("{key} has no meaning for a {} fault", kind.name()),
                &format!("remove {key}"),
            ));
        }
    };
    if !kind.needs_duration() {
        refuse(r.duration.as_ref().map(|v| v.span()), "duration");
    }
    if !matches!(kind, FaultKind::Slow | FaultKind::Delay) {
        refuse(r.delay.as_ref().map(|v| v.span()), "delay");
    }
    if kind != FaultKind::Loss {
        refuse(r.loss.as_ref().map(|v| v.span()), "loss");
    }
    if kind != FaultKind::Rate {
        refuse(r.rate.as_ref().map(|v| v.span()), "rate");
    }
    if kind != FaultKind::Flap {
        refuse(r.period.as_ref().map(|v| v.span()), "period");
    }
    if let Some(seed) = &r.seed {
        let why = if kind == FaultKind::Loss {
            "nftables' random drop (numgen random) cannot be seeded, so a seeded loss would not be reproducible"
                .to_string()
        } else {
            format!("nothing in a {} fault is random", kind.name())
        };
        errors.push(lines.err(seed.span(), format!("seed: {why}"), "remove seed"));
    }
    if let (Some(p), Some(d)) = (period, duration) {
        if p > d {
            errors.push(lines.err(
                r.period.as_ref().map_or(here.clone(), |v| v.span()),
                "period is longer than duration, so the link never comes back up within the fault",
                "make period at most duration",
            ));
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Fault {
        id,
        kind,
        target: target.expect("checked"),
        start: start.expect("checked"),
        duration,
        delay,
        loss_percent,
        rate_bps,
        period,
        seed: r.seed.as_ref().map(|s| *s.get_ref()),
        line: lines.line_of(here),
    })
}

mod duration_ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

mod opt_duration_ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&(d.as_millis() as u64)),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<u64>::deserialize(d).map(|o| o.map(Duration::from_millis))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<FaultPlan, Vec<PlanFileError>> {
        parse(Path::new("plan.toml"), text)
    }

    fn first_err(text: &str) -> String {
        p(text).unwrap_err()[0].to_string()
    }

    #[test]
    fn parses_every_kind_of_start_and_target() {
        let plan = p(r#"
[run]
heartbeat = "500ms"
heartbeat_timeout = "1500ms"

[[fault]]
kind = "kill"
target = "rank:2"
start = "2s"

[[fault]]
kind = "slow"
target = "node:cb-h2"
start = { op = "all_reduce", size = "1M", iteration = 50 }
duration = "3s"
delay = "2ms"

[[fault]]
kind = "loss"
target = "link:cb-h1/eth0"
start = "1s"
duration = "3s"
loss = "10%"
"#)
        .unwrap();
        assert_eq!(plan.heartbeat, Duration::from_millis(500));
        assert_eq!(plan.faults.len(), 3);
        assert_eq!(plan.faults[0].target, Target::Rank(2));
        assert_eq!(plan.faults[0].line, 6);
        assert_eq!(
            plan.faults[1].start,
            Start::At {
                op: Collective::AllReduce,
                size: 1 << 20,
                iteration: 50
            }
        );
        assert_eq!(plan.faults[2].loss_percent, Some(10.0));
        assert!(plan.needs_privilege());
    }

    #[test]
    fn a_seed_is_refused_where_nothing_can_honour_it() {
        let errs = p("[[fault]]\nkind = \"loss\"\ntarget = \"link:h/eth0\"\nstart = \"1s\"\nduration = \"1s\"\nloss = \"5%\"\nseed = 3\n")
            .unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].line, 7);
        assert!(errs[0].problem.contains("cannot be seeded"), "{}", errs[0]);
    }

    #[test]
    fn errors_name_the_line_and_a_fix() {
        let e = first_err("[[fault]]\nkind = \"explode\"\ntarget = \"rank:1\"\nstart = \"1s\"\n");
        assert!(
            e.starts_with("plan.toml:2: unknown fault kind 'explode'; use one of kill"),
            "{e}"
        );
        let e = first_err("[[fault]]\nkind = \"hang\"\ntarget = \"rank:1\"\nstart = \"1s\"\n");
        assert!(
            e.contains("plan.toml:1: a hang fault needs duration; add duration"),
            "{e}"
        );
        let e = first_err("[[fault]]\nkind = \"kill\"\ntarget = \"rank:x\"\nstart = \"1s\"\n");
        assert!(e.contains(":3: target: 'x' is not a rank number"), "{e}");
        let e = first_err(
            "[[fault]]\nkind = \"down\"\ntarget = \"rank:1\"\nstart = \"1s\"\nduration = \"1s\"\n",
        );
        assert!(
            e.contains(":3: a down fault cannot target rank:1; target link:NODE/IFACE"),
            "{e}"
        );
        let e = first_err("[[fault]]\nkind = \"kill\"\ntarget = \"rank:1\"\nstart = \"soon\"\n");
        assert!(e.contains(":4: start:"), "{e}");
        let e = first_err(
            "[[fault]]\nkind = \"kill\"\ntarget = \"rank:1\"\nstart = \"1s\"\ncolour = 3\n",
        );
        assert!(e.contains("plan.toml:5:") && e.contains("colour"), "{e}");
        let e = first_err("[[fault]]\nkind = \"loss\"\ntarget = \"link:h/eth0\"\nstart = \"1s\"\nduration = \"1s\"\nloss = \"200%\"\n");
        assert!(e.contains(":6: loss:"), "{e}");
        let e = first_err(
            "[[fault]]\nkind = \"kill\"\ntarget = \"link:h/eth0; rm -rf /\"\nstart = \"1s\"\n",
        );
        assert!(e.contains(":3: target:"), "{e}");
        let e = first_err(
            "[[fault]]\nkind = \"kill\"\ntarget = \"rank:1\"\nstart = \"1s\"\nduration = \"1s\"\n",
        );
        assert!(
            e.contains(":5: duration has no meaning for a kill fault; remove duration"),
            "{e}"
        );
        let e = first_err("not toml at all [");
        assert!(e.starts_with("plan.toml:1:"), "{e}");
    }

    #[test]
    fn every_error_is_reported_not_just_the_first() {
        let errs =
            p("[[fault]]\nkind = \"slow\"\ntarget = \"pair:a,b\"\nstart = \"x\"\n").unwrap_err();
        assert!(errs.len() >= 3, "{errs:?}");
    }

    #[test]
    fn rates_and_percents() {
        let rate = |t: &str| BitRate::parse(t).map(BitRate::bits_per_sec).ok();
        let pct = |t: &str| plan_percent(t).ok();
        assert_eq!(rate("100mbit"), Some(100_000_000));
        assert_eq!(rate("1gbit"), Some(1_000_000_000));
        assert!(rate("100").is_none());
        assert!(rate("1bit").is_none());
        assert_eq!(pct("10%"), Some(10.0));
        assert!(pct("0%").is_none());
        assert!(pct("10").is_none());
    }
}
