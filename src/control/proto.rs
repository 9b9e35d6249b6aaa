//! The control protocol between ranks' agents and the controller: typed messages as JSON in
//! length-prefixed frames (u32 big-endian), bounded in size; no command string ever crosses it.

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

use crate::plan::faults::{Fault, Target};

/// The largest frame the controller accepts; anything larger closes the connection.
pub const MAX_FRAME: usize = 1 << 20;
/// The largest frame an agent accepts from its controller (a rendezvous answer carries every
/// rank's part).
pub const MAX_ANSWER_FRAME: usize = 256 << 20;

/// Environment variables a rank reads to find its controller.
pub const ENV_ADDR: &str = "COLLBENCH_CONTROLLER";
pub const ENV_SECRET: &str = "COLLBENCH_SECRET";
pub const ENV_SECRET_FILE: &str = "COLLBENCH_SECRET_FILE";

/// How a problem was first noticed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mechanism {
    /// The rank's control connection closed without a goodbye: the process died.
    ConnectionLost,
    /// No heartbeat within the heartbeat timeout: the process is stopped or its host is gone.
    MissedHeartbeat,
    /// Heartbeats go on but no rank advances: a collective is stuck (network, peer).
    ProgressStall,
    /// The rank's own deadline on a blocking call passed.
    WatchdogDeadline,
    /// The correctness check found wrong values.
    WrongData,
    /// The rank left mid-run on purpose.
    EarlyExit,
    /// A per-iteration straggler: the rank's skew share stands out.
    Straggler,
    /// The rank's own host saw an interface lose its link (operstate down).
    LinkDown,
    /// mpirun ended the job (a rank died or aborted).
    JobEnded,
    /// TCP retransmissions concentrate on one host's connections: its link loses packets.
    Retransmits,
    /// A collective call returned an error (an NCCL async error, an MPI error).
    CollectiveError,
}

impl Mechanism {
    pub const ALL: [Mechanism; 11] = [
        Mechanism::ConnectionLost,
        Mechanism::MissedHeartbeat,
        Mechanism::ProgressStall,
        Mechanism::WatchdogDeadline,
        Mechanism::WrongData,
        Mechanism::EarlyExit,
        Mechanism::Straggler,
        Mechanism::LinkDown,
        Mechanism::JobEnded,
        Mechanism::Retransmits,
        Mechanism::CollectiveError,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Mechanism::ConnectionLost => "connection_lost",
            Mechanism::MissedHeartbeat => "missed_heartbeat",
            Mechanism::ProgressStall => "progress_stall",
            Mechanism::WatchdogDeadline => "watchdog_deadline",
            Mechanism::WrongData => "wrong_data",
            Mechanism::EarlyExit => "early_exit",
            Mechanism::Straggler => "straggler",
            Mechanism::LinkDown => "link_down",
            Mechanism::JobEnded => "job_ended",
            Mechanism::Retransmits => "retransmits",
            Mechanism::CollectiveError => "collective_error",
        }
    }
}

/// Where a rank is in the sweep.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Calls finished so far; moves on every iteration.
    pub ticks: u64,
    pub activity: String,
    pub op: Option<String>,
    pub size: Option<u64>,
    pub iteration: u64,
}

/// Who a rank is, sent first on every connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub secret: String,
    pub rank: usize,
    pub world_size: usize,
    pub host: String,
    pub local_rank: usize,
    pub pid: u32,
    /// The rank's parent (mpirun's daemon on this host, or mpirun itself).
    #[serde(default)]
    pub ppid: u32,
    pub device: Option<String>,
    /// The kernel's boot id and the rank's pid namespace: equal to the controller's means the
    /// controller can signal the rank's pid itself.
    pub boot_id: String,
    pub pid_ns: String,
    /// The results folder rank 0 writes, so a standalone controller can add the fault timeline.
    pub out_dir: Option<String>,
    /// This host's IPv4 addresses: (interface, address/prefix), loopback left out.
    #[serde(default)]
    pub addrs: Vec<(String, String)>,
}

impl Hello {
    /// A registration with no real process behind it (load generators, tests): the controller
    /// never signals it, since its boot id and pid namespace match no host.
    pub fn simulated(
        secret: &str,
        rank: usize,
        world_size: usize,
        host: String,
        local_rank: usize,
    ) -> Hello {
        Hello {
            secret: secret.to_string(),
            rank,
            world_size,
            host,
            local_rank,
            pid: std::process::id(),
            ppid: 0,
            device: None,
            boot_id: "simulated".into(),
            pid_ns: "simulated".into(),
            out_dir: None,
            addrs: Vec::new(),
        }
    }
}

/// What one uploaded histogram measured: a row of the sweep, as results are merged by.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ResultKey {
    pub op: String,
    #[serde(default)]
    pub dtype: String,
    /// "none" for collectives without a reduction, as run.json has it.
    #[serde(default)]
    pub redop: String,
    pub size: u64,
    pub placement: String,
}

impl std::fmt::Display for ResultKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} {} {} B {}",
            self.op, self.dtype, self.redop, self.size, self.placement
        )
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToController {
    Hello(Hello),
    Heartbeat {
        progress: Progress,
        /// TCP retransmissions so far on this host, per peer address (from the host's first rank).
        #[serde(default)]
        retrans: Vec<(String, u64)>,
    },
    /// Rank 0: the sweep's first measurement begins now.
    SweepStarted {
        unix_s: f64,
    },
    /// The rank noticed something itself.
    Detected {
        mechanism: Mechanism,
        detail: String,
        /// The rank to blame, when the rank that noticed knows it (e.g. all-to-all source).
        culprit: Option<usize>,
    },
    /// A fault the agent applied or reverted (agent-side faults).
    FaultApplied {
        id: usize,
        unix_s: f64,
        revert: String,
    },
    /// `unix_s` when the revert was done; `began_unix_s` when it started (the fault may have
    /// ended anywhere between).
    FaultReverted {
        id: usize,
        unix_s: f64,
        #[serde(default)]
        began_unix_s: Option<f64>,
    },
    FaultFailed {
        id: usize,
        error: String,
    },
    /// An armed point was reached (the fault applies from now).
    PointReached {
        id: usize,
        unix_s: f64,
    },
    /// Packet loss, in percent, to each probed peer address.
    ProbeResult {
        loss: Vec<(String, f64)>,
    },
    /// One sweep row's latency histogram (`LatencyHistogram::to_bytes`, base64), for the
    /// controller to merge; `ranks` is how many ranks it already merges (a node's relay sends >1).
    Results {
        #[serde(flatten)]
        key: ResultKey,
        #[serde(default = "one")]
        ranks: u64,
        histogram: String,
    },
    /// A node relay (its first local rank) registers the node's other ranks on its own connection;
    /// each must present the run's secret. Heartbeats and results for them then come in one message.
    Members {
        hellos: Vec<Hello>,
    },
    /// Heartbeats of several ranks of the relay's node (the relay's own included), one message.
    NodeHeartbeat {
        ranks: Vec<(usize, Progress)>,
        /// The relay host's TCP retransmissions per peer address (as in `Heartbeat`).
        #[serde(default)]
        retrans: Vec<(String, u64)>,
    },
    /// A message from a rank the relay speaks for, passed on unchanged (any kind, new ones too).
    Relayed {
        rank: usize,
        msg: Box<ToController>,
    },
    /// A relayed rank's connection to its relay closed without a goodbye (the process died).
    MemberLost {
        rank: usize,
        detail: String,
    },
    /// This rank's part of the `seq`-th rendezvous collective (ranks started without mpirun);
    /// `data` is base64.
    Exchange {
        seq: u64,
        op: ExchangeOp,
        data: String,
    },
    /// The rank is done; nothing more follows.
    Goodbye {
        reason: String,
    },
}

/// A rendezvous collective the controller runs for ranks without MPI: it waits for every rank's
/// part of one `seq`, then answers the ranks that want the result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ExchangeOp {
    /// Every rank gets every part, in rank order.
    AllGather,
    /// `root` gets every part; the others get nothing.
    Gather { root: usize },
    /// Every rank gets `root`'s part.
    Bcast { root: usize },
    /// Parts are little-endian u64 arrays of one length, combined element-wise; `root` alone, or
    /// every rank when None, gets the result.
    Reduce { root: Option<usize>, reduce: Reduce },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reduce {
    Sum,
    Max,
    Min,
}

impl ExchangeOp {
    /// Whether `rank` gets an answer to this exchange.
    pub fn answers(&self, rank: usize) -> bool {
        match *self {
            ExchangeOp::AllGather | ExchangeOp::Bcast { .. } => true,
            ExchangeOp::Gather { root } => rank == root,
            ExchangeOp::Reduce { root, .. } => root.is_none_or(|r| r == rank),
        }
    }
}

fn one() -> u64 {
    1
}

/// What an agent is told to do: typed values only.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Sleep this long before each collective until reverted.
    Slow { delay_ns: u64 },
    /// Flip one element of the send buffer in the next checked iteration.
    Corrupt,
    /// Leave the run cleanly at the next call.
    Exit,
    /// SIGKILL itself (when the controller cannot signal the pid).
    Kill,
    /// SIGSTOP itself, with a detached timer process sending SIGCONT after the duration.
    Hang,
    /// A link fault on this host; the agent validates every value again before use.
    Link(LinkSpec),
}

/// A link fault as it crosses the wire: kind and typed parameters, never a command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkSpec {
    /// down | loss | rate | partition | flap | delay
    pub kind: String,
    /// The interface; for a partition without one, the agent picks the interface whose subnet
    /// holds the peers.
    pub iface: Option<String>,
    pub loss_hundredths: Option<u32>,
    pub rate_bps: Option<u64>,
    /// Peer addresses (IPv4, optional /prefix) for a partition.
    pub peers: Vec<String>,
    pub delay_us: Option<u64>,
    pub period_ms: Option<u64>,
}

impl LinkSpec {
    /// The wire form of a plan's link fault on `iface` (or towards `peers` for a partition).
    pub fn of(f: &Fault, iface: Option<String>, peers: Vec<String>) -> LinkSpec {
        LinkSpec {
            kind: f.kind.name().to_string(),
            iface,
            loss_hundredths: f.loss_percent.map(|p| (p * 100.0).round() as u32),
            rate_bps: f.rate_bps,
            peers,
            delay_us: f.delay.map(|d| d.as_micros() as u64),
            period_ms: f.period.map(|d| d.as_millis() as u64),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToRank {
    Welcome {
        heartbeat_ms: u64,
    },
    /// Apply now; the agent reverts by itself after `duration_ms` if no Revert came first.
    Apply {
        id: usize,
        action: Action,
        duration_ms: Option<u64>,
    },
    /// Apply when this rank reaches the point (op, size in bytes, timed iteration).
    ArmAt {
        id: usize,
        op: String,
        size: u64,
        iteration: u64,
        action: Action,
        duration_ms: Option<u64>,
    },
    Revert {
        id: usize,
    },
    /// Measure packet loss to these peer addresses (ICMP echo) and report it.
    Probe {
        peers: Vec<String>,
    },
    /// The answer to rendezvous `seq`: the parts (base64) this rank asked for, or why it failed.
    Exchanged {
        seq: u64,
        parts: Vec<String>,
        error: Option<String>,
    },
    /// A command for a rank the receiving node relay speaks for, passed down unchanged.
    Relayed {
        rank: usize,
        msg: Box<ToRank>,
    },
}

/// A fault as the timeline records it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FaultEvent {
    pub id: usize,
    pub kind: String,
    pub target: String,
    pub params: serde_json::Map<String, serde_json::Value>,
    pub start: serde_json::Value,
    /// Seconds since the sweep started: when the fault was in effect (every agent holding it
    /// said so, or the controller signalled the rank itself).
    pub applied_at_s: Option<f64>,
    /// When the controller sent it to the ranks' agents, where they apply it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at_s: Option<f64>,
    pub reverted_at_s: Option<f64>,
    /// When its agent began the revert; until then it held for certain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revert_began_at_s: Option<f64>,
    pub revert: Option<String>,
    pub ranks: Vec<usize>,
    pub detected: Option<Detection>,
    /// When the job moved again after the fault's detection (heartbeats back, progress resumed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovered_at_s: Option<f64>,
    pub outcome: String,
    pub error: Option<String>,
    pub phases: Option<serde_json::Value>,
}

impl FaultEvent {
    pub fn planned(f: &Fault) -> FaultEvent {
        FaultEvent {
            id: f.id,
            kind: f.kind.name().to_string(),
            target: f.target.to_string(),
            params: f.params(),
            start: match &f.start {
                crate::plan::faults::Start::After(d) => {
                    humantime::format_duration(*d).to_string().into()
                }
                crate::plan::faults::Start::At {
                    op,
                    size,
                    iteration,
                } => serde_json::json!({"op": op.name(), "size": size, "iteration": iteration}),
            },
            applied_at_s: None,
            sent_at_s: None,
            reverted_at_s: None,
            revert_began_at_s: None,
            revert: None,
            ranks: match f.target {
                Target::Rank(r) => vec![r],
                _ => Vec::new(),
            },
            detected: None,
            recovered_at_s: None,
            outcome: "not_applied".into(),
            error: None,
            phases: None,
        }
    }
}

/// The first detection that followed a fault.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    pub at_s: f64,
    pub after_s: f64,
    pub rank: Option<usize>,
    pub host: Option<String>,
    /// The rank's GPU (PCI bus id), when it registered with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    pub mechanism: Mechanism,
    pub detail: String,
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {0} bytes is over the {1}-byte limit")]
    TooLarge(usize, usize),
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("{0}")]
    Io(#[from] io::Error),
}

pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    let body = serde_json::to_vec(msg).expect("control messages serialize");
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

pub fn decode<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, FrameError> {
    serde_json::from_slice(body).map_err(|e| FrameError::Malformed(e.to_string()))
}

/// Blocking frame write (the agent side).
pub fn write_frame<T: Serialize>(w: &mut impl Write, msg: &T) -> Result<(), FrameError> {
    w.write_all(&encode(msg))?;
    w.flush()?;
    Ok(())
}

/// Blocking frame read of at most MAX_FRAME bytes.
pub fn read_frame<T: for<'de> Deserialize<'de>>(r: &mut impl Read) -> Result<T, FrameError> {
    read_frame_up_to(r, MAX_FRAME)
}

/// Blocking frame read of at most `limit` bytes (the agent side reads answers with a larger one).
pub fn read_frame_up_to<T: for<'de> Deserialize<'de>>(
    r: &mut impl Read,
    limit: usize,
) -> Result<T, FrameError> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > limit {
        return Err(FrameError::TooLarge(len, limit));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    decode(&body)
}

/// Constant-time comparison of the presented secret with the run's.
pub fn secret_matches(presented: &str, expected: &str) -> bool {
    use subtle::ConstantTimeEq;
    presented.as_bytes().ct_eq(expected.as_bytes()).into()
}

/// A fresh 256-bit secret, hex, from the kernel's random source.
pub fn new_secret() -> io::Result<String> {
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// Where a controller listens / an agent connects: `unix:PATH` or `HOST:PORT` (`tcp:` optional).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Addr {
    Tcp(String),
    Unix(std::path::PathBuf),
}

impl Addr {
    pub fn parse(text: &str) -> Result<Addr, String> {
        if let Some(p) = text.strip_prefix("unix:") {
            if p.is_empty() {
                return Err("unix: needs a socket path, e.g. unix:/tmp/collbench.sock".into());
            }
            return Ok(Addr::Unix(p.into()));
        }
        let t = text.strip_prefix("tcp:").unwrap_or(text);
        match t.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok() => Ok(Addr::Tcp(t.into())),
            _ => Err(format!(
                "'{text}' is not HOST:PORT or unix:PATH (e.g. 127.0.0.1:7777)"
            )),
        }
    }
}

impl std::fmt::Display for Addr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Addr::Tcp(a) => write!(f, "{a}"),
            Addr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// This kernel's boot id and this process's pid namespace, to tell whether pids are shared.
pub fn host_identity() -> (String, String) {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let ns = std::fs::read_link("/proc/self/ns/pid")
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    (boot, ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_refuse_oversize() {
        let msg = ToController::Heartbeat {
            retrans: vec![("10.77.0.2".into(), 4)],
            progress: Progress {
                ticks: 3,
                activity: "timed loop".into(),
                op: Some("all_reduce".into()),
                size: Some(8),
                iteration: 2,
            },
        };
        let bytes = encode(&msg);
        let back: ToController = read_frame(&mut &bytes[..]).unwrap();
        assert_eq!(back, msg);
        let mut big = ((MAX_FRAME + 1) as u32).to_be_bytes().to_vec();
        big.extend_from_slice(b"{}");
        assert!(matches!(
            read_frame::<ToController>(&mut &big[..]),
            Err(FrameError::TooLarge(..))
        ));
        let mut junk = 5u32.to_be_bytes().to_vec();
        junk.extend_from_slice(b"nope!");
        assert!(matches!(
            read_frame::<ToController>(&mut &junk[..]),
            Err(FrameError::Malformed(_))
        ));
    }

    #[test]
    fn scale_messages_round_trip() {
        for msg in [
            ToController::Results {
                key: ResultKey {
                    op: "all_reduce".into(),
                    dtype: "float".into(),
                    redop: "sum".into(),
                    size: 8,
                    placement: "out_of_place".into(),
                },
                ranks: 8,
                histogram: "AAAA".into(),
            },
            ToController::NodeHeartbeat {
                ranks: vec![(3, Progress::default()), (4, Progress::default())],
                retrans: vec![("10.77.0.3".into(), 2)],
            },
            ToController::Members { hellos: Vec::new() },
            ToController::Relayed {
                rank: 5,
                msg: Box::new(ToController::FaultApplied {
                    id: 1,
                    unix_s: 2.5,
                    revert: "none".into(),
                }),
            },
            ToController::MemberLost {
                rank: 6,
                detail: "gone".into(),
            },
        ] {
            let back: ToController = read_frame(&mut &encode(&msg)[..]).unwrap();
            assert_eq!(back, msg);
        }
        let down = ToRank::Relayed {
            rank: 7,
            msg: Box::new(ToRank::Apply {
                id: 0,
                action: Action::Slow {
                    delay_ns: 3_000_000,
                },
                duration_ms: Some(2000),
            }),
        };
        assert_eq!(read_frame::<ToRank>(&mut &encode(&down)[..]).unwrap(), down);
        // A node heartbeat from a relay that sends no retransmissions (the load generator).
        let nh: ToController =
            decode(br#"{"type":"node_heartbeat","ranks":[[1,{"ticks":0,"activity":"","op":null,"size":null,"iteration":0}]]}"#)
                .unwrap();
        assert!(matches!(nh, ToController::NodeHeartbeat { retrans, .. } if retrans.is_empty()));
        // An upload without `ranks` counts one rank.
        let one: ToController =
            decode(br#"{"type":"results","op":"x","size":1,"placement":"p","histogram":""}"#)
                .unwrap();
        assert!(matches!(one, ToController::Results { ranks: 1, .. }));
    }

    #[test]
    fn the_schema_knows_every_mechanism() {
        let schema: serde_json::Value =
            serde_json::from_str(include_str!("../../results/schema/run.v1.schema.json")).unwrap();
        let known = &schema["$defs"]["mechanism"]["enum"];
        for m in Mechanism::ALL {
            assert!(
                known.as_array().unwrap().iter().any(|k| k == m.name()),
                "{} missing from the schema",
                m.name()
            );
            assert_eq!(serde_json::to_value(m).unwrap(), m.name());
        }
    }

    #[test]
    fn secrets_and_addresses() {
        let s = new_secret().unwrap();
        assert_eq!(s.len(), 64);
        assert!(secret_matches(&s, &s.clone()));
        assert!(!secret_matches("short", &s));
        assert!(!secret_matches(&s[..63], &s));
        assert_eq!(
            Addr::parse("127.0.0.1:7777"),
            Ok(Addr::Tcp("127.0.0.1:7777".into()))
        );
        assert_eq!(Addr::parse("unix:/tmp/x"), Ok(Addr::Unix("/tmp/x".into())));
        assert!(Addr::parse("localhost").is_err());
        assert!(Addr::parse("unix:").is_err());
    }
}
