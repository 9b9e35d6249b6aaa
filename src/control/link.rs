//! Link faults on a host's interfaces as typed, validated values; the exact argv that applies and reverts
//! each (never a shell string), leases whose revert is known before the apply runs, and heal of what is left.
//!
//! Tags, so `heal` finds what collbench left: nftables tables named `collbench*` whose rules carry the
//! comment "collbench"; root qdiscs with a handle major in 0xcb00..=0xcbff (tbf rate `cb01:`, netem delay
//! `cb02:`); interfaces put down by collbench carry the alias `collbench-down` until they are brought up.

use std::fmt;
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::str::FromStr;
use std::sync::OnceLock;
use std::time::Duration;

/// Prefix of every nftables table collbench creates.
pub const TABLE_PREFIX: &str = "collbench";
/// The comment on every nftables rule collbench adds.
pub const RULE_COMMENT: &str = "collbench";
/// The alias an interface carries while collbench holds it down.
pub const DOWN_ALIAS: &str = "collbench-down";
/// Root qdisc handle of a rate limit (tbf).
pub const RATE_HANDLE: &str = "cb01:";
/// Root qdisc handle of a delay (netem).
pub const DELAY_HANDLE: &str = "cb02:";
/// qdisc handle majors that are collbench's.
pub const HANDLE_MAJORS: RangeInclusive<u32> = 0xcb00..=0xcbff;
/// tbf's latency bound: packets that would wait longer are dropped.
pub const TBF_LATENCY: &str = "50ms";
pub const NETEM_MISSING: &str =
    "delay needs the kernel's netem qdisc (sch_netem) or NFQUEUE (nfnetlink_queue), and this kernel \
has neither; use loss or rate, or run on a kernel with either";
/// NFQUEUE numbers of collbench's userspace delayer: this base plus a byte from the interface name.
pub const QUEUE_BASE: u16 = 0xcb00;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("{what} '{value}': {problem}")]
    Invalid {
        what: &'static str,
        value: String,
        problem: String,
    },
    #[error("interface '{iface}' does not exist in {at}; `{list}` lists them")]
    NoSuchInterface {
        iface: String,
        at: String,
        list: String,
    },
    #[error("{0}")]
    Unsupported(String),
    #[error("`{argv}` could not start: {error}")]
    Spawn { argv: String, error: String },
    #[error("`{argv}` exited with {status}: {stderr}")]
    Failed {
        argv: String,
        status: String,
        stderr: String,
    },
    #[error("`{argv}` printed what collbench cannot read: {problem}")]
    Unreadable { argv: String, problem: String },
}

fn invalid(what: &'static str, value: &str, problem: impl Into<String>) -> LinkError {
    LinkError::Invalid {
        what,
        value: value.to_string(),
        problem: problem.into(),
    }
}

/// One command: a program and its arguments, run without a shell.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Argv {
    pub program: String,
    pub args: Vec<String>,
}

impl Argv {
    pub fn new<S: Into<String>>(program: &str, args: impl IntoIterator<Item = S>) -> Self {
        Argv {
            program: program.to_string(),
            args: args.into_iter().map(Into::into).collect(),
        }
    }

    fn output(&self) -> Result<Output, LinkError> {
        Command::new(&self.program)
            .args(&self.args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| LinkError::Spawn {
                argv: self.to_string(),
                error: if e.kind() == std::io::ErrorKind::NotFound {
                    format!(
                        "{} is not installed or not on PATH{}",
                        self.program,
                        install_hint(&self.program)
                    )
                } else {
                    e.to_string()
                },
            })
    }

    /// Runs it; its stdout on success, else an error naming the command, its status and stderr's first line.
    pub fn run(&self) -> Result<String, LinkError> {
        let out = self.output()?;
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        Err(self.failed(&out))
    }

    fn failed(&self, out: &Output) -> LinkError {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let first = stderr
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("(no message)");
        use std::os::unix::process::ExitStatusExt;
        let status = match (out.status.code(), out.status.signal()) {
            (Some(c), _) => format!("status {c}"),
            (None, Some(s)) => format!("signal {s}"),
            _ => "an unknown status".to_string(),
        };
        LinkError::Failed {
            argv: self.to_string(),
            status,
            stderr: first.to_string(),
        }
    }
}

fn install_hint(program: &str) -> &'static str {
    match program {
        "nft" => " (apt-get install nftables)",
        "ip" | "tc" => " (apt-get install iproute2)",
        "unshare" => " (apt-get install util-linux)",
        "iptables" => " (apt-get install iptables)",
        _ => "",
    }
}

/// Shell-quoted, so what is shown can be pasted and runs exactly the same.
impl fmt::Display for Argv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&quote(&self.program))?;
        for a in &self.args {
            write!(f, " {}", quote(a))?;
        }
        Ok(())
    }
}

fn quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_./:=@%+,-".contains(&b));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

fn check_name(what: &'static str, s: &str, max: usize) -> Result<(), LinkError> {
    if s.is_empty() || s.len() > max {
        return Err(invalid(what, s, format!("must be 1 to {max} bytes long")));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(invalid(
            what,
            s,
            format!("'{c}' is not allowed; use letters, digits, '_', '.' and '-'"),
        ));
    }
    if s == "." || s == ".." {
        return Err(invalid(what, s, "'.' and '..' are not names"));
    }
    if s.starts_with('-') {
        return Err(invalid(
            what,
            s,
            "must not start with '-' (it would read as an option)",
        ));
    }
    Ok(())
}

/// A network interface name as the kernel accepts it (IFNAMSIZ - 1 = 15 bytes).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IfaceName(String);

impl IfaceName {
    pub fn parse(s: &str) -> Result<Self, LinkError> {
        check_name("interface", s, 15)?;
        Ok(IfaceName(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The interface exists in `at` (/sys/class/net here, `ip -n NS link show dev NAME` in a namespace).
    pub fn must_exist(&self, at: &Where) -> Result<(), LinkError> {
        let exists = match at {
            Where::Local => Path::new("/sys/class/net").join(&self.0).exists(),
            Where::Netns(_) => {
                let show = at.ip(["link", "show", "dev", &self.0]);
                let out = show.output()?;
                if !out.status.success() {
                    let err = show.failed(&out);
                    let LinkError::Failed { stderr, .. } = &err else {
                        return Err(err);
                    };
                    if !stderr.contains("does not exist") && !stderr.contains("Cannot find device")
                    {
                        return Err(err);
                    }
                }
                out.status.success()
            }
        };
        if exists {
            Ok(())
        } else {
            Err(LinkError::NoSuchInterface {
                iface: self.0.clone(),
                at: at.to_string(),
                list: at.ip(["-br", "link", "show"]).to_string(),
            })
        }
    }
}

impl FromStr for IfaceName {
    type Err = LinkError;
    fn from_str(s: &str) -> Result<Self, LinkError> {
        IfaceName::parse(s)
    }
}

impl fmt::Display for IfaceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A named network namespace (a file under /run/netns, as `ip netns` makes them).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NetnsName(String);

impl NetnsName {
    pub fn parse(s: &str) -> Result<Self, LinkError> {
        check_name("network namespace", s, 64)?;
        Ok(NetnsName(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn exists(&self) -> bool {
        Path::new("/run/netns").join(&self.0).exists()
    }
}

impl FromStr for NetnsName {
    type Err = LinkError;
    fn from_str(s: &str) -> Result<Self, LinkError> {
        NetnsName::parse(s)
    }
}

impl fmt::Display for NetnsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An IPv4 address or network: "10.77.0.2" (a /32) or "10.77.0.0/24" (no host bits set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Cidr {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Ipv4Cidr {
    pub fn parse(s: &str) -> Result<Self, LinkError> {
        let (a, p) = s.split_once('/').unwrap_or((s, "32"));
        let addr: Ipv4Addr = a.parse().map_err(|_| {
            invalid(
                "IPv4 address",
                s,
                "not an address; write it as 10.77.0.2 or 10.77.0.0/24",
            )
        })?;
        let prefix: u8 = p
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| invalid("IPv4 address", s, "the prefix length must be 0 to 32"))?;
        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        };
        let net = Ipv4Addr::from(u32::from(addr) & mask);
        if net != addr {
            return Err(invalid(
                "IPv4 address",
                s,
                format!("host bits are set; did you mean {net}/{prefix}?"),
            ));
        }
        Ok(Ipv4Cidr { addr, prefix })
    }
}

impl From<Ipv4Addr> for Ipv4Cidr {
    fn from(addr: Ipv4Addr) -> Self {
        Ipv4Cidr { addr, prefix: 32 }
    }
}

impl FromStr for Ipv4Cidr {
    type Err = LinkError;
    fn from_str(s: &str) -> Result<Self, LinkError> {
        Ipv4Cidr::parse(s)
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix == 32 {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.prefix)
        }
    }
}

/// A share of packets, 0.01% to 100%, held in hundredths of a percent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Percent(u32);

impl Percent {
    pub const SCALE: u32 = 10_000;

    pub fn parse(s: &str) -> Result<Self, LinkError> {
        const HINT: &str = "write a percentage above 0 and at most 100, e.g. 10% or 0.5%";
        let t = s.trim();
        let t = t.strip_suffix('%').unwrap_or(t).trim();
        let (whole, frac) = t.split_once('.').unwrap_or((t, ""));
        let digits = |d: &str| d.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || !digits(whole) || !digits(frac) || whole.len() > 3 {
            return Err(invalid("percentage", s, HINT));
        }
        if frac.len() > 2 {
            return Err(invalid(
                "percentage",
                s,
                "at most two decimals (0.01% steps)",
            ));
        }
        let hundredths = whole.parse::<u32>().unwrap_or(u32::MAX) * 100
            + format!("{frac:0<2}").parse::<u32>().unwrap_or(0);
        if hundredths == 0 || hundredths > Self::SCALE {
            return Err(invalid("percentage", s, HINT));
        }
        Ok(Percent(hundredths))
    }

    /// In hundredths of a percent (1..=10000).
    pub fn hundredths(self) -> u32 {
        self.0
    }
}

impl FromStr for Percent {
    type Err = LinkError;
    fn from_str(s: &str) -> Result<Self, LinkError> {
        Percent::parse(s)
    }
}

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (whole, frac) = (self.0 / 100, self.0 % 100);
        match frac {
            0 => write!(f, "{whole}%"),
            f10 if f10 % 10 == 0 => write!(f, "{whole}.{}%", f10 / 10),
            _ => write!(f, "{whole}.{frac:02}%"),
        }
    }
}

/// A bit rate in bits per second, written as tc writes it: 500kbit, 100mbit, 1gbit (SI: k = 1000).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BitRate(u64);

impl BitRate {
    const UNITS: [(&'static str, u64); 5] = [
        ("tbit", 1_000_000_000_000),
        ("gbit", 1_000_000_000),
        ("mbit", 1_000_000),
        ("kbit", 1_000),
        ("bit", 1),
    ];
    pub const MIN: u64 = 8_000;
    pub const MAX: u64 = 10_000_000_000_000;

    pub fn parse(s: &str) -> Result<Self, LinkError> {
        let t = s.trim().to_ascii_lowercase();
        if t.ends_with("bps") {
            return Err(invalid(
                "rate",
                s,
                "tc's bps means bytes per second; write the rate in bits: kbit, mbit or gbit (e.g. 100mbit)",
            ));
        }
        let Some((unit, scale)) = Self::UNITS
            .iter()
            .find(|(u, _)| t.ends_with(u) && t.len() > u.len())
        else {
            return Err(invalid(
                "rate",
                s,
                "give a number and a unit: bit, kbit, mbit, gbit or tbit (e.g. 100mbit)",
            ));
        };
        let num = t[..t.len() - unit.len()].trim();
        let (whole, frac) = num.split_once('.').unwrap_or((num, ""));
        let digits = |d: &str| d.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || !digits(whole) || !digits(frac) || frac.len() > 9 {
            return Err(invalid("rate", s, "not a number, e.g. 100mbit or 1.5gbit"));
        }
        let bits = (|| {
            let w = whole.parse::<u64>().ok()?.checked_mul(*scale)?;
            let f = if frac.is_empty() {
                0
            } else {
                let f: u64 = frac.parse().ok()?;
                let div = 10u64.pow(frac.len() as u32);
                (f as u128 * *scale as u128 / div as u128) as u64
            };
            w.checked_add(f)
        })()
        .ok_or_else(|| invalid("rate", s, "too large"))?;
        if !(Self::MIN..=Self::MAX).contains(&bits) {
            return Err(invalid("rate", s, "must be between 8kbit and 10tbit"));
        }
        Ok(BitRate(bits))
    }

    pub fn bits_per_sec(self) -> u64 {
        self.0
    }
}

impl FromStr for BitRate {
    type Err = LinkError;
    fn from_str(s: &str) -> Result<Self, LinkError> {
        BitRate::parse(s)
    }
}

impl fmt::Display for BitRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (unit, scale) = Self::UNITS
            .iter()
            .find(|(_, s)| self.0 % s == 0)
            .unwrap_or(&("bit", 1));
        write!(f, "{}{unit}", self.0 / scale)
    }
}

/// A duration as humantime reads it ("500us", "2s", "1m 30s").
pub fn parse_duration(what: &'static str, s: &str) -> Result<Duration, LinkError> {
    humantime::parse_duration(s.trim())
        .map_err(|e| invalid(what, s, format!("{e}; write e.g. 500us, 20ms or 2s")))
}

/// Which network namespace a command acts in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Where {
    /// This process's own namespace.
    Local,
    Netns(NetnsName),
}

impl Where {
    pub fn ip<S: Into<String>>(&self, args: impl IntoIterator<Item = S>) -> Argv {
        self.with_n("ip", args)
    }

    pub fn tc<S: Into<String>>(&self, args: impl IntoIterator<Item = S>) -> Argv {
        self.with_n("tc", args)
    }

    pub fn nft<S: Into<String>>(&self, args: impl IntoIterator<Item = S>) -> Argv {
        self.exec_in("nft", args)
    }

    pub fn iptables<S: Into<String>>(&self, args: impl IntoIterator<Item = S>) -> Argv {
        self.exec_in("iptables", args)
    }

    /// `program args` here, or through `ip netns exec` for a program without a namespace flag.
    fn exec_in<S: Into<String>>(&self, program: &str, args: impl IntoIterator<Item = S>) -> Argv {
        match self {
            Where::Local => Argv::new(program, args),
            Where::Netns(ns) => {
                let mut v = vec![
                    "netns".to_string(),
                    "exec".to_string(),
                    ns.0.clone(),
                    program.to_string(),
                ];
                v.extend(args.into_iter().map(Into::into));
                Argv::new("ip", v)
            }
        }
    }

    fn with_n<S: Into<String>>(&self, program: &str, args: impl IntoIterator<Item = S>) -> Argv {
        let mut v = Vec::new();
        if let Where::Netns(ns) = self {
            v.extend(["-n".to_string(), ns.0.clone()]);
        }
        v.extend(args.into_iter().map(Into::into));
        Argv::new(program, v)
    }
}

impl fmt::Display for Where {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Where::Local => f.write_str("this process's network namespace"),
            Where::Netns(ns) => write!(f, "network namespace {ns}"),
        }
    }
}

/// Link faults on one interface. Flap is a schedule of `Down` and its revert (see `flap_schedule`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Fault {
    /// The interface goes down (`ip link set dev X down`), tagged by its alias.
    Down { iface: IfaceName },
    /// Each packet in and out of the interface is dropped with this probability (nftables).
    Loss {
        iface: IfaceName,
        percent: Percent,
        /// nftables' random drop cannot be seeded: a seed is refused rather than ignored.
        seed: Option<u64>,
    },
    /// Egress of the interface is limited to this rate (tc tbf); burst in bytes.
    Rate {
        iface: IfaceName,
        rate: BitRate,
        burst: Option<u32>,
    },
    /// Traffic to and from these peers over the interface is dropped, both directions (nftables).
    Partition {
        iface: IfaceName,
        peers: Vec<Ipv4Cidr>,
    },
    /// Egress of the interface is delayed: by tc netem where the kernel has it (`queue` None),
    /// else by an iptables rule (mangle POSTROUTING, NFQUEUE target: the kernel's nftables
    /// `queue` expression is often not built) that queues the packets to NFQUEUE `queue`, where
    /// collbench's delayer process holds each for the delay (`--queue-bypass`: with no delayer,
    /// packets pass).
    Delay {
        iface: IfaceName,
        delay: Duration,
        jitter: Option<Duration>,
        queue: Option<u16>,
    },
}

impl Fault {
    pub fn iface(&self) -> &IfaceName {
        match self {
            Fault::Down { iface }
            | Fault::Loss { iface, .. }
            | Fault::Rate { iface, .. }
            | Fault::Partition { iface, .. }
            | Fault::Delay { iface, .. } => iface,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Down { .. } => "down",
            Fault::Loss { .. } => "loss",
            Fault::Rate { .. } => "rate",
            Fault::Partition { .. } => "partition",
            Fault::Delay { .. } => "delay",
        }
    }

    /// Checks that need no host: what `check-plan` can say about the values alone.
    pub fn check_values(&self) -> Result<(), LinkError> {
        match self {
            Fault::Loss { seed: Some(s), .. } => Err(invalid(
                "loss seed",
                &s.to_string(),
                "nftables' random drop (numgen random) cannot be seeded, so this loss would not be \
                 reproducible; remove the seed",
            )),
            Fault::Rate {
                burst: Some(b),
                rate,
                ..
            } if *b < 1600 => Err(invalid(
                "burst",
                &b.to_string(),
                format!(
                    "must hold a full frame: at least 1600 bytes (default for {rate}: {})",
                    default_burst(*rate)
                ),
            )),
            Fault::Partition { peers, .. } if peers.is_empty() => Err(invalid(
                "partition peers",
                "",
                "name at least one peer address",
            )),
            Fault::Delay { delay, jitter, .. } => {
                let show = |d: &Duration| humantime::format_duration(*d).to_string();
                if delay.is_zero() || *delay > Duration::from_secs(10) {
                    return Err(invalid(
                        "delay",
                        &show(delay),
                        "must be above 0 and at most 10s",
                    ));
                }
                match jitter {
                    Some(j) if j > delay => Err(invalid(
                        "jitter",
                        &show(j),
                        format!("must not exceed the delay ({})", show(delay)),
                    )),
                    _ => Ok(()),
                }
            }
            _ => Ok(()),
        }
    }

    /// The nftables table this fault lives in, for loss and partition.
    pub fn table(&self) -> Option<String> {
        match self {
            Fault::Loss { iface, .. } => Some(format!("{TABLE_PREFIX}_loss_{iface}")),
            Fault::Partition { iface, .. } => Some(format!("{TABLE_PREFIX}_part_{iface}")),
            _ => None,
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Down { iface } => write!(f, "down {iface}"),
            Fault::Loss { iface, percent, .. } => write!(f, "loss {percent} on {iface}"),
            Fault::Rate { iface, rate, .. } => write!(f, "rate {rate} on {iface}"),
            Fault::Partition { iface, peers } => {
                let p: Vec<String> = peers.iter().map(ToString::to_string).collect();
                write!(f, "partition {iface} from {}", p.join(", "))
            }
            Fault::Delay {
                iface,
                delay,
                jitter,
                queue,
            } => {
                write!(f, "delay {} on {iface}", humantime::format_duration(*delay))?;
                if let Some(j) = jitter {
                    write!(f, " ± {}", humantime::format_duration(*j))?;
                }
                if let Some(q) = queue {
                    write!(f, " (NFQUEUE {q})")?;
                }
                Ok(())
            }
        }
    }
}

/// 10 ms of traffic at the rate, and never under 4 KiB.
pub fn default_burst(rate: BitRate) -> u32 {
    (rate.bits_per_sec() / 8 / 100).clamp(4096, u32::MAX as u64) as u32
}

fn micros(d: Duration) -> String {
    format!("{}us", d.as_micros().max(1))
}

/// nft words for a table with an input and an output filter chain and one rule in each.
fn nft_table(table: &str, input_rule: Vec<String>, output_rule: Vec<String>) -> Vec<String> {
    let mut w: Vec<String> = Vec::new();
    let mut push = |s: &[&str]| w.extend(s.iter().map(|s| s.to_string()));
    push(&["create", "table", "inet", table, ";"]);
    for hook in ["input", "output"] {
        push(&[
            "add", "chain", "inet", table, hook, "{", "type", "filter", "hook", hook, "priority",
            "0", ";", "policy", "accept", ";", "}", ";",
        ]);
    }
    let comment = format!("\"{RULE_COMMENT}\"");
    for (hook, rule) in [("input", input_rule), ("output", output_rule)] {
        w.extend(["add", "rule", "inet", table, hook].map(String::from));
        w.extend(rule);
        w.extend(["comment".to_string(), comment.clone(), ";".to_string()]);
    }
    w.pop();
    w
}

fn words(s: &[&str]) -> Vec<String> {
    s.iter().map(|s| s.to_string()).collect()
}

/// The one command that applies the fault in `at` (pure: runs nothing).
pub fn apply_argv(fault: &Fault, at: &Where) -> Argv {
    let dev = fault.iface().as_str();
    let quoted = format!("\"{dev}\"");
    match fault {
        Fault::Down { .. } => at.ip(["link", "set", "dev", dev, "down", "alias", DOWN_ALIAS]),
        Fault::Loss { percent, .. } => {
            let p = percent.hundredths().to_string();
            let scale = Percent::SCALE.to_string();
            // nft bounds the comparison by the modulus, so 100% is a plain drop.
            let drop = |dir: &str| match percent.hundredths() {
                Percent::SCALE => words(&[dir, &quoted, "drop"]),
                _ => words(&[
                    dir, &quoted, "numgen", "random", "mod", &scale, "<", &p, "drop",
                ]),
            };
            at.nft(nft_table(
                &fault.table().unwrap_or_default(),
                drop("iifname"),
                drop("oifname"),
            ))
        }
        Fault::Partition { peers, .. } => {
            let mut set = vec!["{".to_string()];
            for (i, p) in peers.iter().enumerate() {
                if i > 0 {
                    set.push(",".to_string());
                }
                set.push(p.to_string());
            }
            set.push("}".to_string());
            let drop = |dir: &str, field: &str| {
                let mut r = words(&[dir, &quoted, "ip", field]);
                r.extend(set.iter().cloned());
                r.push("drop".to_string());
                r
            };
            at.nft(nft_table(
                &fault.table().unwrap_or_default(),
                drop("iifname", "saddr"),
                drop("oifname", "daddr"),
            ))
        }
        Fault::Rate { rate, burst, .. } => at.tc([
            "qdisc",
            "add",
            "dev",
            dev,
            "root",
            "handle",
            RATE_HANDLE,
            "tbf",
            "rate",
            &format!("{}bit", rate.bits_per_sec()),
            "burst",
            &burst.unwrap_or_else(|| default_burst(*rate)).to_string(),
            "latency",
            TBF_LATENCY,
        ]),
        Fault::Delay { queue: Some(q), .. } => at.iptables(queue_rule("-A", dev, *q)),
        Fault::Delay { delay, jitter, .. } => {
            let mut a = words(&[
                "qdisc",
                "add",
                "dev",
                dev,
                "root",
                "handle",
                DELAY_HANDLE,
                "netem",
                "delay",
                &micros(*delay),
            ]);
            a.extend(jitter.map(micros));
            at.tc(a)
        }
    }
}

/// The interface and queue of a line of `iptables -S` that is exactly a rule `queue_rule` added.
fn our_queue_rule(line: &str) -> Option<(IfaceName, u16)> {
    let w: Vec<&str> = line.split_whitespace().collect();
    let ["-A", "POSTROUTING", "-o", dev, "-m", "comment", "--comment", c, "-j", "NFQUEUE", "--queue-num", q, "--queue-bypass"] =
        w.as_slice()
    else {
        return None;
    };
    if *c != RULE_COMMENT {
        return None;
    }
    let q: u16 = q.parse().ok()?;
    (q & 0xff00 == QUEUE_BASE).then_some(())?;
    Some((IfaceName::parse(dev).ok()?, q))
}

/// iptables words that add (`-A`) or delete (`-D`) the rule queueing `dev`'s egress to queue `q`.
fn queue_rule(op: &str, dev: &str, q: u16) -> Vec<String> {
    words(&[
        "-w",
        "-t",
        "mangle",
        op,
        "POSTROUTING",
        "-o",
        dev,
        "-m",
        "comment",
        "--comment",
        RULE_COMMENT,
        "-j",
        "NFQUEUE",
        "--queue-num",
        &q.to_string(),
        "--queue-bypass",
    ])
}

/// The one command that reverts the fault in `at` (pure: known before the apply runs).
pub fn revert_argv(fault: &Fault, at: &Where) -> Argv {
    let dev = fault.iface().as_str();
    match fault {
        Fault::Down { .. } => at.ip(["link", "set", "dev", dev, "up", "alias", ""]),
        Fault::Delay { queue: Some(q), .. } => at.iptables(queue_rule("-D", dev, *q)),
        Fault::Loss { .. } | Fault::Partition { .. } => at.nft([
            "delete".to_string(),
            "table".to_string(),
            "inet".to_string(),
            fault.table().unwrap_or_default(),
        ]),
        Fault::Rate { .. } => at.tc(["qdisc", "del", "dev", dev, "root", "handle", RATE_HANDLE]),
        Fault::Delay { .. } => at.tc(["qdisc", "del", "dev", dev, "root", "handle", DELAY_HANDLE]),
    }
}

/// stderr lines that mean the revert has nothing left to undo.
fn already_gone(fault: &Fault, stderr: &str) -> bool {
    let gone_everywhere = [
        "Cannot open network namespace",
        "Cannot find device",
        "does not exist",
    ];
    let gone_here: &[&str] = match fault {
        Fault::Down { .. } => &[],
        Fault::Loss { .. } | Fault::Partition { .. } => &["No such file or directory"],
        Fault::Delay { queue: Some(_), .. } => {
            &["does a matching rule exist", "No chain/target/match"]
        }
        Fault::Rate { .. } | Fault::Delay { .. } => {
            &["Invalid handle", "Cannot find specified qdisc"]
        }
    };
    gone_everywhere
        .iter()
        .chain(gone_here)
        .any(|p| stderr.contains(p))
}

/// Whether the kernel has netem: tries `tc qdisc add dev lo root netem delay 1ms` in a throwaway
/// namespace (`unshare --net`), which vanishes with the probe. Cached once it has an answer.
pub fn netem_available() -> Result<bool, LinkError> {
    static ANSWER: OnceLock<bool> = OnceLock::new();
    if let Some(a) = ANSWER.get() {
        return Ok(*a);
    }
    let probe = Argv::new(
        "unshare",
        [
            "--net", "--", "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms",
        ],
    );
    let out = probe.output()?;
    let answer = if out.status.success() {
        true
    } else {
        let err = probe.failed(&out);
        match &err {
            LinkError::Failed { stderr, .. } if stderr.contains("qdisc kind is unknown") => false,
            _ => return Err(err),
        }
    };
    Ok(*ANSWER.get_or_init(|| answer))
}

/// Everything that must hold before the fault is applied in `at`: values, the interface, netem.
pub fn check(fault: &Fault, at: &Where) -> Result<(), LinkError> {
    fault.check_values()?;
    if let Where::Netns(ns) = at {
        if !ns.exists() {
            return Err(invalid(
                "network namespace",
                ns.as_str(),
                "does not exist (`ip netns list` lists them)",
            ));
        }
    }
    fault.iface().must_exist(at)?;
    if matches!(fault, Fault::Delay { queue: None, .. }) && !netem_available()? {
        return Err(LinkError::Unsupported(NETEM_MISSING.to_string()));
    }
    if matches!(fault, Fault::Delay { queue: Some(_), .. }) && !nfqueue_available() {
        return Err(LinkError::Unsupported(NETEM_MISSING.to_string()));
    }
    Ok(())
}

/// Whether the kernel can queue packets to userspace (nfnetlink_queue loaded or built in).
pub fn nfqueue_available() -> bool {
    Path::new("/proc/net/netfilter/nfnetlink_queue").exists()
}

/// How a delay on `iface` is made here: netem where the kernel has it, else the NFQUEUE delayer
/// on a queue number derived from the interface name.
pub fn delay_queue_for(iface: &IfaceName) -> Result<Option<u16>, LinkError> {
    if netem_available()? {
        return Ok(None);
    }
    let byte = iface
        .as_str()
        .bytes()
        .fold(0u8, |h, b| h.rotate_left(3) ^ b);
    Ok(Some(QUEUE_BASE | u16::from(byte)))
}

/// The process a fault needs while it holds (the NFQUEUE delayer), run in the fault's place.
pub fn daemon_argv(fault: &Fault, at: &Where, program: &Path) -> Option<Argv> {
    let Fault::Delay {
        delay,
        jitter,
        queue: Some(q),
        ..
    } = fault
    else {
        return None;
    };
    let mut args = vec![
        "delayer".to_string(),
        "--queue".to_string(),
        q.to_string(),
        "--delay-us".to_string(),
        delay.as_micros().max(1).to_string(),
    ];
    if let Some(j) = jitter {
        args.extend(["--jitter-us".to_string(), j.as_micros().to_string()]);
    }
    let program = program.display().to_string();
    Some(match at {
        Where::Local => Argv::new(&program, args),
        Where::Netns(ns) => {
            let mut all = vec![
                "netns".to_string(),
                "exec".to_string(),
                ns.as_str().to_string(),
                program,
            ];
            all.extend(args);
            Argv::new("ip", all)
        }
    })
}

/// A fault in a place with the commands that apply and revert it; the revert is known before
/// the apply runs, so a caller records the lease first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub fault: Fault,
    pub at: Where,
    pub apply: Argv,
    pub revert: Argv,
    /// A process that must run while the fault holds (the delayer), started after `apply`.
    pub daemon: Option<Argv>,
}

impl Lease {
    /// The lease of `fault` in `at`; its daemon, if it needs one, is this executable.
    pub fn new(fault: Fault, at: Where) -> Lease {
        let program = std::env::current_exe().unwrap_or_else(|_| "collbench".into());
        Lease::with_program(fault, at, &program)
    }

    /// The lease, with `program` (a collbench binary) as its daemon.
    pub fn with_program(fault: Fault, at: Where, program: &Path) -> Lease {
        Lease {
            apply: apply_argv(&fault, &at),
            revert: revert_argv(&fault, &at),
            daemon: daemon_argv(&fault, &at, program),
            fault,
            at,
        }
    }
}

/// A fault's running process, stopped (SIGTERM, then SIGKILL after 2 s) when dropped.
#[derive(Debug)]
pub struct Daemon {
    child: std::process::Child,
    argv: String,
}

/// A started daemon prints this line once it holds what it needs (the queue is bound).
pub const DAEMON_READY: &str = "collbench-daemon-ready";

impl Daemon {
    /// Starts `argv` and waits (up to 3 s) for its ready line; its stderr comes back on failure.
    pub fn start(argv: &Argv) -> Result<Daemon, LinkError> {
        let mut child = Command::new(&argv.program)
            .args(&argv.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| LinkError::Spawn {
                argv: argv.to_string(),
                error: e.to_string(),
            })?;
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line);
            let _ = tx.send(line);
        });
        let mut daemon = Daemon {
            child,
            argv: argv.to_string(),
        };
        match rx.recv_timeout(Duration::from_secs(3)) {
            Ok(line) if line.trim() == DAEMON_READY => Ok(daemon),
            _ => {
                daemon.stop();
                let mut stderr = String::new();
                if let Some(mut e) = daemon.child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
                }
                Err(LinkError::Failed {
                    argv: daemon.argv.clone(),
                    status: "no ready line within 3s".into(),
                    stderr: stderr.trim().to_string(),
                })
            }
        }
    }

    pub fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        // SAFETY: signals our own child, not yet reaped.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let t0 = std::time::Instant::now();
        while t0.elapsed() < Duration::from_secs(2) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Checks the fault, then applies it; the lease returned holds the revert.
pub fn apply(fault: &Fault, at: &Where) -> Result<(Lease, Option<Daemon>), LinkError> {
    let lease = Lease::new(fault.clone(), at.clone());
    let daemon = apply_lease(&lease)?;
    Ok((lease, daemon))
}

/// Applies an already recorded lease (checks first) and starts its daemon; a daemon that does
/// not come up undoes the apply.
pub fn apply_lease(lease: &Lease) -> Result<Option<Daemon>, LinkError> {
    check(&lease.fault, &lease.at)?;
    lease.apply.run()?;
    match &lease.daemon {
        None => Ok(None),
        Some(argv) => match Daemon::start(argv) {
            Ok(d) => Ok(Some(d)),
            Err(e) => {
                let _ = revert(lease);
                Err(e)
            }
        },
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reverted {
    Done,
    /// Nothing was left to undo (reverted before, healed, or the interface or namespace is gone).
    AlreadyGone,
}

pub fn revert(lease: &Lease) -> Result<Reverted, LinkError> {
    match lease.revert.run() {
        Ok(_) => Ok(Reverted::Done),
        Err(LinkError::Failed { ref stderr, .. }) if already_gone(&lease.fault, stderr) => {
            Ok(Reverted::AlreadyGone)
        }
        Err(e) => Err(e),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    Down,
    Up,
}

/// A flap: down for half of each period, up for the other half, for `duration`; the last event
/// is always Up. Offsets from the start of the fault.
pub fn flap_schedule(
    period: Duration,
    duration: Duration,
) -> Result<Vec<(Duration, LinkState)>, LinkError> {
    let show = |d: Duration| humantime::format_duration(d).to_string();
    if period < Duration::from_millis(20) {
        return Err(invalid(
            "flap period",
            &show(period),
            "must be at least 20ms",
        ));
    }
    if duration / 10_000 > period {
        return Err(invalid(
            "flap period",
            &show(period),
            format!("too short for {}: over 20000 changes", show(duration)),
        ));
    }
    let half = period / 2;
    let mut events = Vec::new();
    let mut t = Duration::ZERO;
    let mut state = LinkState::Down;
    while t < duration {
        events.push((t, state));
        state = match state {
            LinkState::Down => LinkState::Up,
            LinkState::Up => LinkState::Down,
        };
        t += half;
    }
    if events.last().is_some_and(|(_, s)| *s == LinkState::Down) {
        events.push((duration, LinkState::Up));
    }
    Ok(events)
}

fn json(argv: &Argv, text: &str) -> Result<serde_json::Value, LinkError> {
    if text.trim().is_empty() {
        return Ok(serde_json::Value::Array(Vec::new()));
    }
    serde_json::from_str(text).map_err(|e| LinkError::Unreadable {
        argv: argv.to_string(),
        problem: e.to_string(),
    })
}

fn str_field<'a>(v: &'a serde_json::Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(serde_json::Value::as_str)
}

fn is_ours_handle(handle: &str) -> bool {
    handle
        .strip_suffix(':')
        .and_then(|h| u32::from_str_radix(h, 16).ok())
        .is_some_and(|m| HANDLE_MAJORS.contains(&m))
}

/// What heal would run in `at` to remove everything collbench left there (runs only queries).
pub fn heal_plan(at: &Where) -> Result<Vec<Argv>, LinkError> {
    let mut plan = Vec::new();

    let list = at.nft(["-j", "list", "tables"]);
    match list.run() {
        // No nft: nothing of ours can be in nftables, which only nft writes.
        Err(LinkError::Spawn { .. }) if matches!(at, Where::Local) => {}
        Err(LinkError::Failed { stderr, .. }) if stderr.contains("exec of \"nft\" failed") => {}
        Err(e) => return Err(e),
        Ok(text) => {
            let doc = json(&list, &text)?;
            let items = doc.get("nftables").and_then(|v| v.as_array());
            for t in items.into_iter().flatten().filter_map(|i| i.get("table")) {
                let (Some(family), Some(name)) = (str_field(t, "family"), str_field(t, "name"))
                else {
                    continue;
                };
                let family_ok =
                    matches!(family, "ip" | "ip6" | "inet" | "arp" | "bridge" | "netdev");
                if name.starts_with(TABLE_PREFIX)
                    && family_ok
                    && check_name("table", name, 64).is_ok()
                {
                    plan.push(at.nft(["delete", "table", family, name]));
                }
            }
        }
    }

    let rules = at.iptables(["-w", "-t", "mangle", "-S", "POSTROUTING"]);
    match rules.run() {
        // No iptables: no rule of ours (a delay's queue rule) can be there.
        Err(LinkError::Spawn { .. }) if matches!(at, Where::Local) => {}
        Err(LinkError::Failed { stderr, .. })
            if stderr.contains("exec of \"iptables\" failed")
                || stderr.contains("Table does not exist") => {}
        Err(e) => return Err(e),
        Ok(text) => {
            for (dev, q) in text.lines().filter_map(our_queue_rule) {
                plan.push(at.iptables(queue_rule("-D", dev.as_str(), q)));
            }
        }
    }

    let qdiscs = at.tc(["-j", "qdisc", "show"]);
    let doc = json(&qdiscs, &qdiscs.run()?)?;
    for q in doc.as_array().into_iter().flatten() {
        let root = q.get("root").and_then(|r| r.as_bool()).unwrap_or(false);
        let (Some(dev), Some(handle)) = (str_field(q, "dev"), str_field(q, "handle")) else {
            continue;
        };
        if root && is_ours_handle(handle) && IfaceName::parse(dev).is_ok() {
            plan.push(at.tc(["qdisc", "del", "dev", dev, "root", "handle", handle]));
        }
    }

    let links = at.ip(["-j", "link", "show"]);
    let doc = json(&links, &links.run()?)?;
    for l in doc.as_array().into_iter().flatten() {
        let Some(dev) = str_field(l, "ifname") else {
            continue;
        };
        if str_field(l, "ifalias") == Some(DOWN_ALIAS) && IfaceName::parse(dev).is_ok() {
            plan.push(at.ip(["link", "set", "dev", dev, "up", "alias", ""]));
        }
    }
    Ok(plan)
}

/// Removes everything collbench left in `at`; returns what it ran.
pub fn heal(at: &Where) -> Result<Vec<Argv>, LinkError> {
    let plan = heal_plan(at)?;
    for a in &plan {
        a.run()?;
    }
    Ok(plan)
}

/// Every named namespace (`ip netns list`).
pub fn netns_list() -> Result<Vec<NetnsName>, LinkError> {
    let list = Argv::new("ip", ["-j", "netns", "list"]);
    let doc = json(&list, &list.run()?)?;
    Ok(doc
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| str_field(n, "name"))
        .filter_map(|n| NetnsName::parse(n).ok())
        .collect())
}

/// What heal did in one place.
#[derive(Debug)]
pub struct Healed {
    pub at: Where,
    pub result: Result<Vec<Argv>, LinkError>,
}

/// This namespace and every named one; a namespace deleted while heal walks is skipped.
pub fn heal_all() -> Result<Vec<Healed>, LinkError> {
    let mut places = vec![Where::Local];
    places.extend(netns_list()?.into_iter().map(Where::Netns));
    Ok(places
        .into_iter()
        .map(|at| Healed {
            result: heal(&at),
            at,
        })
        .filter(|h| match (&h.at, &h.result) {
            (Where::Netns(ns), Err(_)) => ns.exists(),
            _ => true,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eth0() -> IfaceName {
        IfaceName::parse("eth0").unwrap()
    }

    fn ns(s: &str) -> Where {
        Where::Netns(NetnsName::parse(s).unwrap())
    }

    #[test]
    fn interface_names() {
        for ok in [
            "eth0",
            "enp1s0f0np0",
            "veth.1",
            "a",
            "br-1_x",
            "123456789012345",
        ] {
            IfaceName::parse(ok).unwrap();
        }
        for bad in [
            "",
            ".",
            "..",
            "1234567890123456",
            "eth 0",
            "eth0;rm",
            "a/b",
            "-x",
            "é",
            "eth0\n",
        ] {
            assert!(IfaceName::parse(bad).is_err(), "{bad:?} accepted");
        }
        let e = IfaceName::parse("eth$0").unwrap_err().to_string();
        assert_eq!(
            e,
            "interface 'eth$0': '$' is not allowed; use letters, digits, '_', '.' and '-'"
        );
    }

    #[test]
    fn netns_names() {
        NetnsName::parse("cb-h1").unwrap();
        assert!(NetnsName::parse("a/b").is_err());
        assert!(NetnsName::parse("..").is_err());
        assert!(NetnsName::parse(&"x".repeat(65)).is_err());
    }

    #[test]
    fn percentages() {
        assert_eq!(Percent::parse("10%").unwrap().hundredths(), 1000);
        assert_eq!(Percent::parse("10").unwrap().hundredths(), 1000);
        assert_eq!(Percent::parse(" 0.5 %").unwrap().hundredths(), 50);
        assert_eq!(Percent::parse("0.01%").unwrap().hundredths(), 1);
        assert_eq!(Percent::parse("100%").unwrap().hundredths(), 10000);
        for bad in [
            "0%", "0", "100.01%", "101%", "-5%", "%", "abc", "1.234%", "1e2%", ".5%",
        ] {
            assert!(Percent::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(Percent::parse("0.5%").unwrap().to_string(), "0.5%");
        assert_eq!(Percent::parse("12.25").unwrap().to_string(), "12.25%");
        assert_eq!(Percent::parse("7%").unwrap().to_string(), "7%");
    }

    #[test]
    fn bit_rates() {
        assert_eq!(
            BitRate::parse("100mbit").unwrap().bits_per_sec(),
            100_000_000
        );
        assert_eq!(
            BitRate::parse("1gbit").unwrap().bits_per_sec(),
            1_000_000_000
        );
        assert_eq!(BitRate::parse("500kbit").unwrap().bits_per_sec(), 500_000);
        assert_eq!(
            BitRate::parse("1.5Gbit").unwrap().bits_per_sec(),
            1_500_000_000
        );
        assert_eq!(BitRate::parse("64000bit").unwrap().bits_per_sec(), 64_000);
        assert_eq!(BitRate::parse("1500kbit").unwrap().to_string(), "1500kbit");
        assert_eq!(BitRate::parse("1000mbit").unwrap().to_string(), "1gbit");
        for bad in [
            "100", "mbit", "100mbps", "10kbps", "1bit", "x1mbit", "-1mbit", "99tbit",
        ] {
            assert!(BitRate::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(BitRate::parse("100mbps")
            .unwrap_err()
            .to_string()
            .contains("bytes per second"));
    }

    #[test]
    fn addresses() {
        assert_eq!(Ipv4Cidr::parse("10.77.0.2").unwrap().prefix, 32);
        assert_eq!(
            Ipv4Cidr::parse("10.77.0.0/24").unwrap().to_string(),
            "10.77.0.0/24"
        );
        assert!(Ipv4Cidr::parse("10.77.0.5/24")
            .unwrap_err()
            .to_string()
            .contains("did you mean 10.77.0.0/24"));
        for bad in [
            "10.77.0",
            "10.77.0.256",
            "10.77.0.0/33",
            "host",
            "10.0.0.1/x",
        ] {
            assert!(Ipv4Cidr::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn loss_builds_one_nft_transaction() {
        let f = Fault::Loss {
            iface: eth0(),
            percent: Percent::parse("10%").unwrap(),
            seed: None,
        };
        let a = apply_argv(&f, &Where::Local);
        assert_eq!(a.program, "nft");
        let t = "collbench_loss_eth0";
        let expected = format!(
            "create table inet {t} ; \
             add chain inet {t} input {{ type filter hook input priority 0 ; policy accept ; }} ; \
             add chain inet {t} output {{ type filter hook output priority 0 ; policy accept ; }} ; \
             add rule inet {t} input iifname \"eth0\" numgen random mod 10000 < 1000 drop comment \"collbench\" ; \
             add rule inet {t} output oifname \"eth0\" numgen random mod 10000 < 1000 drop comment \"collbench\""
        );
        assert_eq!(a.args.join(" "), expected);
        assert_eq!(
            revert_argv(&f, &ns("cb-h1")).to_string(),
            "ip netns exec cb-h1 nft delete table inet collbench_loss_eth0"
        );
        let inns = apply_argv(&f, &ns("cb-h2"));
        assert_eq!(inns.program, "ip");
        assert_eq!(inns.args[..4], ["netns", "exec", "cb-h2", "nft"]);
        assert_eq!(inns.args[4..], a.args[..]);
    }

    #[test]
    fn full_loss_is_a_plain_drop() {
        let f = Fault::Loss {
            iface: eth0(),
            percent: Percent::parse("100%").unwrap(),
            seed: None,
        };
        let s = apply_argv(&f, &Where::Local).args.join(" ");
        assert!(s.ends_with("add rule inet collbench_loss_eth0 output oifname \"eth0\" drop comment \"collbench\""), "{s}");
        assert!(!s.contains("numgen"), "{s}");
    }

    #[test]
    fn partition_drops_both_directions() {
        let f = Fault::Partition {
            iface: eth0(),
            peers: vec![
                "10.77.0.2".parse().unwrap(),
                Ipv4Cidr::parse("10.78.0.0/16").unwrap(),
            ],
        };
        let s = apply_argv(&f, &Where::Local).args.join(" ");
        assert!(s.contains(
            "add rule inet collbench_part_eth0 input iifname \"eth0\" ip saddr { 10.77.0.2 , 10.78.0.0/16 } drop comment \"collbench\""
        ), "{s}");
        assert!(s.contains(
            "add rule inet collbench_part_eth0 output oifname \"eth0\" ip daddr { 10.77.0.2 , 10.78.0.0/16 } drop comment \"collbench\""
        ), "{s}");
        assert!(Fault::Partition {
            iface: eth0(),
            peers: vec![]
        }
        .check_values()
        .is_err());
    }

    #[test]
    fn down_rate_delay_argv() {
        let at = ns("cb-h1");
        let down = Fault::Down { iface: eth0() };
        assert_eq!(
            apply_argv(&down, &at).to_string(),
            "ip -n cb-h1 link set dev eth0 down alias collbench-down"
        );
        assert_eq!(
            revert_argv(&down, &at).to_string(),
            "ip -n cb-h1 link set dev eth0 up alias ''"
        );
        assert_eq!(revert_argv(&down, &at).args.last().unwrap(), "");

        let rate = Fault::Rate {
            iface: eth0(),
            rate: BitRate::parse("1mbit").unwrap(),
            burst: None,
        };
        assert_eq!(
            apply_argv(&rate, &Where::Local).to_string(),
            "tc qdisc add dev eth0 root handle cb01: tbf rate 1000000bit burst 4096 latency 50ms"
        );
        assert_eq!(
            revert_argv(&rate, &at).to_string(),
            "tc -n cb-h1 qdisc del dev eth0 root handle cb01:"
        );
        let fast = Fault::Rate {
            iface: eth0(),
            rate: BitRate::parse("1gbit").unwrap(),
            burst: None,
        };
        assert!(apply_argv(&fast, &at)
            .to_string()
            .contains("burst 1250000 "));

        let delay = Fault::Delay {
            iface: eth0(),
            delay: Duration::from_micros(500),
            jitter: Some(Duration::from_micros(100)),
            queue: None,
        };
        assert_eq!(
            apply_argv(&delay, &at).to_string(),
            "tc -n cb-h1 qdisc add dev eth0 root handle cb02: netem delay 500us 100us"
        );
        assert_eq!(
            revert_argv(&delay, &at).to_string(),
            "tc -n cb-h1 qdisc del dev eth0 root handle cb02:"
        );
    }

    #[test]
    fn a_delay_without_netem_queues_to_the_delayer() {
        let at = Where::Netns(NetnsName::parse("cb-h1").unwrap());
        let delay = Fault::Delay {
            iface: eth0(),
            delay: Duration::from_millis(20),
            jitter: Some(Duration::from_millis(1)),
            queue: Some(QUEUE_BASE | 7),
        };
        let rule = "-m comment --comment collbench -j NFQUEUE --queue-num 51975 --queue-bypass";
        assert_eq!(
            apply_argv(&delay, &at).to_string(),
            format!("ip netns exec cb-h1 iptables -w -t mangle -A POSTROUTING -o eth0 {rule}")
        );
        assert_eq!(
            revert_argv(&delay, &at).to_string(),
            format!("ip netns exec cb-h1 iptables -w -t mangle -D POSTROUTING -o eth0 {rule}")
        );
        let daemon = daemon_argv(&delay, &at, Path::new("/bin/collbench")).unwrap();
        assert_eq!(
            daemon.to_string(),
            "ip netns exec cb-h1 /bin/collbench delayer --queue 51975 --delay-us 20000 --jitter-us 1000"
        );
        assert_eq!(
            daemon_argv(&Fault::Down { iface: eth0() }, &at, Path::new("c")),
            None
        );
        // heal deletes exactly the rules it can read as its own.
        let ours = format!("-A POSTROUTING -o eth0 {rule}");
        assert_eq!(our_queue_rule(&ours), Some((eth0(), QUEUE_BASE | 7)));
        assert_eq!(our_queue_rule(&ours.replace("collbench", "other")), None);
        assert_eq!(our_queue_rule(&ours.replace("51975", "7")), None);
        assert_eq!(our_queue_rule("-P POSTROUTING ACCEPT"), None);
    }

    #[test]
    fn value_checks() {
        let seeded = Fault::Loss {
            iface: eth0(),
            percent: Percent::parse("1%").unwrap(),
            seed: Some(7),
        };
        assert!(seeded
            .check_values()
            .unwrap_err()
            .to_string()
            .contains("cannot be seeded"));
        let tiny = Fault::Rate {
            iface: eth0(),
            rate: BitRate::parse("1mbit").unwrap(),
            burst: Some(100),
        };
        assert!(tiny.check_values().is_err());
        let jittery = Fault::Delay {
            iface: eth0(),
            delay: Duration::from_millis(1),
            jitter: Some(Duration::from_millis(2)),
            queue: None,
        };
        assert!(jittery.check_values().is_err());
        let zero = Fault::Delay {
            iface: eth0(),
            delay: Duration::ZERO,
            jitter: None,
            queue: None,
        };
        assert!(zero.check_values().is_err());
    }

    #[test]
    fn display_quotes_what_a_shell_would_split() {
        let a = Argv::new("nft", ["add", "{", "x;y", "it's", "\"eth0\"", ""]);
        assert_eq!(a.to_string(), r#"nft add '{' 'x;y' 'it'\''s' '"eth0"' ''"#);
    }

    #[test]
    fn errors_name_command_status_and_first_stderr_line() {
        let a = Argv::new("sh", ["-c", "echo first >&2; echo second >&2; exit 3"]);
        assert_eq!(
            a.run().unwrap_err().to_string(),
            "`sh -c 'echo first >&2; echo second >&2; exit 3'` exited with status 3: first"
        );
        let missing = Argv::new("collbench-no-such-program", ["x"]);
        assert!(matches!(missing.run(), Err(LinkError::Spawn { .. })));
    }

    #[test]
    fn flap_alternates_and_ends_up() {
        let s = flap_schedule(Duration::from_secs(2), Duration::from_secs(5)).unwrap();
        let secs: Vec<(f64, LinkState)> = s.iter().map(|(t, st)| (t.as_secs_f64(), *st)).collect();
        use LinkState::*;
        assert_eq!(
            secs,
            vec![
                (0.0, Down),
                (1.0, Up),
                (2.0, Down),
                (3.0, Up),
                (4.0, Down),
                (5.0, Up)
            ]
        );
        let even = flap_schedule(Duration::from_secs(2), Duration::from_secs(4)).unwrap();
        assert_eq!(even.last().unwrap(), &(Duration::from_secs(3), Up));
        assert!(flap_schedule(Duration::from_millis(1), Duration::from_secs(1)).is_err());
        assert!(flap_schedule(Duration::from_millis(20), Duration::from_secs(3600)).is_err());
    }

    #[test]
    fn handles_in_the_tag_range() {
        assert!(is_ours_handle(RATE_HANDLE));
        assert!(is_ours_handle(DELAY_HANDLE));
        assert!(is_ours_handle("cbff:"));
        assert!(!is_ours_handle("0:"));
        assert!(!is_ours_handle("8001:"));
        assert!(!is_ours_handle("cb01"));
    }

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("delay", "500us").unwrap(),
            Duration::from_micros(500)
        );
        assert!(parse_duration("delay", "5 parsecs")
            .unwrap_err()
            .to_string()
            .starts_with("delay '5 parsecs': "));
    }
}
