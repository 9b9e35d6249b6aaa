//! The resolved, validated run: which collectives, types, reductions, sizes and iterations, and
//! where results go. Bad input dies here with the flag named and a fix; nothing touches a device.

pub mod faults;
pub mod size;
pub mod spans;
pub mod topology;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::cli::{A2aCallArg, BackendArg, PlacementArg, SweepArgs};
use size::{format_size, sweep_sizes, Step};

/// A collective operation the sweep can time.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, serde::Deserialize, PartialOrd, Ord,
)]
#[serde(rename_all = "snake_case")]
pub enum Collective {
    AllReduce,
    AllToAll,
}

impl Collective {
    pub const ALL: [Collective; 2] = [Collective::AllReduce, Collective::AllToAll];

    pub fn name(self) -> &'static str {
        match self {
            Collective::AllReduce => "all_reduce",
            Collective::AllToAll => "all_to_all",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().replace('-', "_").as_str() {
            "all_reduce" | "allreduce" => Some(Collective::AllReduce),
            "all_to_all" | "alltoall" => Some(Collective::AllToAll),
            _ => None,
        }
    }

    /// Whether the collective takes a reduction op.
    pub fn reduces(self) -> bool {
        matches!(self, Collective::AllReduce)
    }

    /// nccl-tests' bus-bandwidth factor for `n` ranks.
    pub fn bus_factor(self, n: usize) -> f64 {
        let n = n as f64;
        match self {
            Collective::AllReduce => 2.0 * (n - 1.0) / n,
            Collective::AllToAll => (n - 1.0) / n,
        }
    }
}

/// Element types, named as nccl-tests names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum DType {
    Int8,
    Uint8,
    Int32,
    Uint32,
    Int64,
    Uint64,
    Half,
    Float,
    Double,
    Bfloat16,
}

impl DType {
    pub const ALL: [DType; 10] = [
        DType::Int8,
        DType::Uint8,
        DType::Int32,
        DType::Uint32,
        DType::Int64,
        DType::Uint64,
        DType::Half,
        DType::Float,
        DType::Double,
        DType::Bfloat16,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DType::Int8 => "int8",
            DType::Uint8 => "uint8",
            DType::Int32 => "int32",
            DType::Uint32 => "uint32",
            DType::Int64 => "int64",
            DType::Uint64 => "uint64",
            DType::Half => "half",
            DType::Float => "float",
            DType::Double => "double",
            DType::Bfloat16 => "bfloat16",
        }
    }

    pub fn size(self) -> u64 {
        match self {
            DType::Int8 | DType::Uint8 => 1,
            DType::Half | DType::Bfloat16 => 2,
            DType::Int32 | DType::Uint32 | DType::Float => 4,
            DType::Int64 | DType::Uint64 | DType::Double => 8,
        }
    }

    fn parse(s: &str) -> Option<Self> {
        let t = match s.to_ascii_lowercase().as_str() {
            "int8" | "i8" | "char" => DType::Int8,
            "uint8" | "u8" => DType::Uint8,
            "int32" | "i32" | "int" => DType::Int32,
            "uint32" | "u32" => DType::Uint32,
            "int64" | "i64" => DType::Int64,
            "uint64" | "u64" => DType::Uint64,
            "half" | "float16" | "f16" | "fp16" => DType::Half,
            "float" | "float32" | "f32" | "fp32" => DType::Float,
            "double" | "float64" | "f64" | "fp64" => DType::Double,
            "bfloat16" | "bf16" => DType::Bfloat16,
            _ => return None,
        };
        Some(t)
    }
}

/// Reduction operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum RedOp {
    Sum,
    Prod,
    Min,
    Max,
    Avg,
}

impl RedOp {
    pub const ALL: [RedOp; 5] = [RedOp::Sum, RedOp::Prod, RedOp::Min, RedOp::Max, RedOp::Avg];

    pub fn name(self) -> &'static str {
        match self {
            RedOp::Sum => "sum",
            RedOp::Prod => "prod",
            RedOp::Min => "min",
            RedOp::Max => "max",
            RedOp::Avg => "avg",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        RedOp::ALL
            .into_iter()
            .find(|r| r.name() == s.to_ascii_lowercase())
    }
}

/// Where the result lands: a separate buffer, or over the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    OutOfPlace,
    InPlace,
}

impl Placement {
    pub fn is_in_place(self) -> bool {
        self == Placement::InPlace
    }
    pub fn name(self) -> &'static str {
        match self {
            Placement::OutOfPlace => "out_of_place",
            Placement::InPlace => "in_place",
        }
    }

    /// As nccl-tests' table header prints it.
    pub fn label(self) -> &'static str {
        match self {
            Placement::OutOfPlace => "out-of-place",
            Placement::InPlace => "in-place",
        }
    }
}

/// The collective library that runs the calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    Mpi,
    Nccl,
}

impl BackendKind {
    /// Types this backend can reduce and move (MPI has no half/bfloat16 and no avg).
    pub fn supports_dtype(self, d: DType) -> bool {
        match self {
            BackendKind::Mpi => !matches!(d, DType::Half | DType::Bfloat16),
            BackendKind::Nccl => true,
        }
    }
    pub fn supports_redop(self, r: RedOp) -> bool {
        match self {
            BackendKind::Mpi => r != RedOp::Avg,
            BackendKind::Nccl => true,
        }
    }
}

/// A bad flag value: names the flag, says what is wrong and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanError {
    pub flag: &'static str,
    pub problem: String,
    pub fix: String,
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}; {}", self.flag, self.problem, self.fix)
    }
}

impl std::error::Error for PlanError {}

fn bad(flag: &'static str, problem: impl Into<String>, fix: impl Into<String>) -> PlanError {
    PlanError {
        flag,
        problem: problem.into(),
        fix: fix.into(),
    }
}

/// Facts about the launch that validation needs (no device is touched to learn them).
#[derive(Clone, Copy, Debug)]
pub struct LaunchFacts {
    /// Ranks that will share this host's memory.
    pub ranks_on_host: u64,
    /// Bytes the kernel says are available to new allocations, if known.
    pub mem_available: Option<u64>,
    /// What `--backend auto` stands for here (NCCL when a GPU and libnccl were found).
    pub auto_backend: BackendKind,
}

/// The validated sweep.
#[derive(Clone, Debug, Serialize)]
pub struct SweepPlan {
    pub ops: Vec<Collective>,
    pub dtypes: Vec<DType>,
    pub redops: Vec<RedOp>,
    pub min_bytes: u64,
    pub max_bytes: u64,
    pub step: Step,
    pub sizes: Vec<u64>,
    pub iterations: u32,
    pub warmup: u32,
    pub check_iterations: u32,
    pub placements: Vec<Placement>,
    #[serde(serialize_with = "ser_timeout")]
    pub timeout: Option<Duration>,
    /// Rank whose input is corrupted on purpose (test hook), if any.
    pub debug_corrupt_rank: Option<usize>,
    /// Passes over the whole sweep (at least; `run_for` may add more).
    pub repeat: u32,
    /// Repeat whole passes until this much time has passed since the first.
    #[serde(rename = "run_for_s", serialize_with = "ser_timeout")]
    pub run_for: Option<Duration>,
    /// Rank that sleeps before each timed call (test hook: a planted straggler), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub debug_slow_rank: Option<SlowRank>,
    /// `--localize`: time node pairs after the sweep.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub localize: bool,
}

/// `--debug-slow-rank RANK:DELAY`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct SlowRank {
    pub rank: usize,
    #[serde(rename = "delay_us", serialize_with = "ser_us")]
    pub delay: Duration,
}

fn ser_us<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_micros() as u64)
}

fn parse_slow_rank(text: &str) -> Result<SlowRank, PlanError> {
    let fail = || {
        bad(
            "--debug-slow-rank",
            format!("'{text}' is not RANK:DELAY"),
            "write it like 2:2ms (rank 2 sleeps 2 ms before each timed call)",
        )
    };
    let (r, d) = text.split_once(':').ok_or_else(fail)?;
    let rank = r.trim().parse().map_err(|_| fail())?;
    let delay = humantime::parse_duration(d.trim()).map_err(|_| fail())?;
    Ok(SlowRank { rank, delay })
}

fn ser_timeout<S: serde::Serializer>(t: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(d) => s.serialize_some(&d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

/// The whole resolved run.
#[derive(Clone, Debug)]
pub struct Plan {
    pub sweep: SweepPlan,
    pub backend: BackendKind,
    /// `--gpu`: the GPU every rank of a host uses (nccl backend).
    pub gpu: Option<u32>,
    /// `--a2a-call alltoall`: the nccl backend's all-to-all is one ncclAlltoAll call.
    pub nccl_alltoall: bool,
    /// Flags of the nccl backend given to a run that `auto` made an MPI one.
    pub unused_nccl_flags: Vec<&'static str>,
    /// Explicit results folder; None picks `results/run-<time>-<host>` at start.
    pub out_dir: Option<PathBuf>,
    /// `--topology`: loaded by the caller (its errors are file:line, not flag errors).
    pub topology: Option<topology::Topology>,
}

/// The most sizes one sweep may hold (a typo like `-i 1` over gigabytes is refused, not run).
pub const MAX_SIZES: usize = 4096;

impl SweepPlan {
    /// One (op, dtype, redop) group per table, in nccl-tests' loop order: type, then op.
    pub fn groups(&self) -> Vec<(Collective, DType, Option<RedOp>)> {
        let mut groups = Vec::new();
        for &op in &self.ops {
            for &dtype in &self.dtypes {
                if op.reduces() {
                    for &r in &self.redops {
                        groups.push((op, dtype, Some(r)));
                    }
                } else {
                    groups.push((op, dtype, None));
                }
            }
        }
        groups
    }
}

impl Plan {
    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            BackendKind::Mpi => "mpi",
            BackendKind::Nccl => "nccl",
        }
    }

    pub fn resolve(args: &SweepArgs, facts: LaunchFacts) -> Result<Plan, PlanError> {
        let backend = match args.backend {
            BackendArg::Auto => facts.auto_backend,
            BackendArg::Mpi => BackendKind::Mpi,
            BackendArg::Nccl => BackendKind::Nccl,
        };
        let nccl_alltoall = args.a2a_call == A2aCallArg::Alltoall;
        // Flags of the nccl backend only: refused with --backend mpi, noted when auto chose MPI.
        let nccl_only = [
            (
                args.gpu.is_some(),
                "--gpu",
                "the MPI backend runs on host memory and uses no GPU",
            ),
            (
                nccl_alltoall,
                "--a2a-call",
                "ncclAlltoAll is an NCCL call and the MPI backend runs MPI_Alltoall",
            ),
        ];
        let mut unused_nccl_flags = Vec::new();
        for (_, flag, why) in nccl_only.into_iter().filter(|f| f.0) {
            if args.backend == BackendArg::Mpi {
                return Err(bad(
                    flag,
                    why,
                    format!("drop {flag}, or use --backend nccl"),
                ));
            }
            if backend == BackendKind::Mpi {
                unused_nccl_flags.push(flag);
            }
        }
        let ops = parse_list(
            &args.ops,
            "--op",
            "all_reduce, all_to_all",
            Collective::parse,
            None,
        )?;
        let all_dtypes: Vec<DType> = DType::ALL
            .into_iter()
            .filter(|d| backend.supports_dtype(*d))
            .collect();
        let dtypes = parse_list(
            &args.dtype,
            "-d/--datatype",
            "int8, uint8, int32, uint32, int64, uint64, half, float, double, bfloat16, all",
            DType::parse,
            Some(&all_dtypes),
        )?;
        for d in &dtypes {
            if !backend.supports_dtype(*d) {
                return Err(bad(
                    "-d/--datatype",
                    format!("the MPI backend has no {} type", d.name()),
                    "use float, double, int8, uint8, int32, uint32, int64 or uint64 with MPI (or --backend nccl)",
                ));
            }
        }
        let all_redops: Vec<RedOp> = RedOp::ALL
            .into_iter()
            .filter(|r| backend.supports_redop(*r))
            .collect();
        let redops = parse_list(
            &args.redop,
            "-o/--redop",
            "sum, prod, min, max, avg, all",
            RedOp::parse,
            Some(&all_redops),
        )?;
        for r in &redops {
            if !backend.supports_redop(*r) {
                return Err(bad(
                    "-o/--redop",
                    format!("MPI has no built-in {} reduction", r.name()),
                    "use sum, prod, min or max with the MPI backend (or --backend nccl for avg)",
                ));
            }
        }

        if args.min_bytes > args.max_bytes {
            return Err(bad(
                "-b/--minbytes",
                format!(
                    "the smallest size {} is larger than the largest -e {}",
                    format_size(args.min_bytes),
                    format_size(args.max_bytes)
                ),
                "make -b no larger than -e",
            ));
        }
        let step = match (args.step_factor, args.step_bytes) {
            (Some(_), Some(_)) => {
                return Err(bad(
                    "-f/--stepfactor",
                    "given together with -i/--stepbytes",
                    "give one of -f or -i",
                ))
            }
            (None, Some(0)) => {
                return Err(bad(
                    "-i/--stepbytes",
                    "a step of 0 bytes never advances",
                    "use a positive step such as -i 1M",
                ))
            }
            (None, Some(b)) => Step::Bytes(b),
            (Some(f), None) if f < 2 => {
                return Err(bad(
                    "-f/--stepfactor",
                    format!("a factor of {f} never advances"),
                    "use a factor of 2 or more, or -i STEP",
                ))
            }
            (Some(f), None) => Step::Factor(f),
            (None, None) => Step::Factor(2),
        };
        if args.min_bytes == 0 && matches!(step, Step::Factor(_)) && args.max_bytes > 0 {
            return Err(bad(
                "-b/--minbytes",
                "a sweep from 0 bytes never grows by a factor",
                "start at -b 8 or more, or step with -i",
            ));
        }
        let sizes = sweep_sizes(args.min_bytes, args.max_bytes, step, MAX_SIZES + 1);
        if sizes.len() > MAX_SIZES {
            return Err(bad(
                "-i/--stepbytes",
                format!("the sweep would hold more than {MAX_SIZES} sizes"),
                format!("use a larger step so that there are at most {MAX_SIZES}"),
            ));
        }
        if args.iters == 0 {
            return Err(bad(
                "-n/--iters",
                "0 timed iterations measure nothing",
                "use -n 1 or more",
            ));
        }
        let timeout = parse_timeout(&args.timeout)?;
        if args.localize && args.topology.is_none() {
            return Err(bad(
                "--localize",
                "names its culprit in the verdict, and there is no verdict without a topology",
                "add --topology FILE (e.g. topologies/local-cpu.toml)",
            ));
        }
        if args.repeat == 0 {
            return Err(bad(
                "--repeat",
                "0 passes measure nothing",
                "use --repeat 1 or more",
            ));
        }
        let run_for = match args.run_for.as_deref() {
            None => None,
            Some(t) => Some(
                humantime::parse_duration(t.trim())
                    .ok()
                    .filter(|d| !d.is_zero())
                    .ok_or_else(|| {
                        bad(
                            "--run-for",
                            format!("'{t}' is not a positive duration"),
                            "write it like 20s or 5m",
                        )
                    })?,
            ),
        };
        let placements = match args.placement {
            PlacementArg::Both => vec![Placement::OutOfPlace, Placement::InPlace],
            PlacementArg::Out => vec![Placement::OutOfPlace],
            PlacementArg::In => vec![Placement::InPlace],
        };

        // Send and receive buffers of the largest size on every rank of this host.
        let per_rank = args.max_bytes.saturating_mul(2);
        let needed = per_rank.saturating_mul(facts.ranks_on_host.max(1));
        if let Some(avail) = facts.mem_available {
            if needed > avail {
                return Err(bad(
                    "-e/--maxbytes",
                    format!(
                        "-e {} needs {} per rank x {} ranks on this host = {:.1} GiB, but only {:.1} GiB is available",
                        format_size(args.max_bytes),
                        format_size(per_rank),
                        facts.ranks_on_host.max(1),
                        needed as f64 / (1u64 << 30) as f64,
                        avail as f64 / (1u64 << 30) as f64
                    ),
                    "lower -e or run fewer ranks per host",
                ));
            }
        }

        Ok(Plan {
            sweep: SweepPlan {
                ops,
                dtypes,
                redops,
                min_bytes: args.min_bytes,
                max_bytes: args.max_bytes,
                step,
                sizes,
                iterations: args.iters,
                warmup: args.warmup,
                check_iterations: args.check,
                placements,
                timeout,
                debug_corrupt_rank: args.debug_corrupt_rank,
                debug_slow_rank: args
                    .debug_slow_rank
                    .as_deref()
                    .map(parse_slow_rank)
                    .transpose()?,
                localize: args.localize,
                repeat: args.repeat,
                run_for,
            },
            backend,
            gpu: args.gpu,
            nccl_alltoall,
            unused_nccl_flags,
            out_dir: args.out.clone(),
            topology: None,
        })
    }
}

fn parse_timeout(text: &str) -> Result<Option<Duration>, PlanError> {
    let t = text.trim();
    if t == "0" {
        return Ok(None);
    }
    let d = if t.chars().all(|c| c.is_ascii_digit()) {
        t.parse::<u64>().ok().map(Duration::from_secs)
    } else {
        humantime::parse_duration(t).ok()
    };
    match d {
        Some(d) if !d.is_zero() => Ok(Some(d)),
        Some(_) => Ok(None),
        None => Err(bad(
            "--timeout",
            format!("'{t}' is not a duration"),
            "write it like 30s, 5m or 1h (0 disables the watchdog)",
        )),
    }
}

/// Parses a comma-separated list of names, refusing unknowns; `all` (where given) expands to
/// every value the backend has; duplicates are dropped.
fn parse_list<T: PartialEq + Copy>(
    text: &str,
    flag: &'static str,
    known: &str,
    one: impl Fn(&str) -> Option<T>,
    all: Option<&[T]>,
) -> Result<Vec<T>, PlanError> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim) {
        if part.is_empty() {
            return Err(bad(
                flag,
                format!("empty entry in '{text}'"),
                format!("use one or more of {known}, separated by commas"),
            ));
        }
        let items = match all {
            Some(all) if part.eq_ignore_ascii_case("all") => all.to_vec(),
            _ => vec![one(part).ok_or_else(|| {
                bad(
                    flag,
                    format!("unknown value '{part}'"),
                    format!("use one or more of {known}"),
                )
            })?],
        };
        for item in items {
            if !out.contains(&item) {
                out.push(item);
            }
        }
    }
    Ok(out)
}

/// nccl-tests' per-call shapes for one size: what is printed and what the bandwidth counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Shape {
    /// Elements per call parameter (per peer for all-to-all): nccl-tests' `count` column.
    pub count: u64,
    /// Bytes each rank sends: nccl-tests' `size` column.
    pub bytes: u64,
    /// Elements in each rank's send and receive buffer.
    pub buffer_elems: u64,
}

impl Shape {
    /// Rounds a requested byte size down the way nccl-tests' getCollByteCount does.
    pub fn of(op: Collective, dtype: DType, requested: u64, nranks: u64) -> Shape {
        let elems = requested / dtype.size();
        match op {
            Collective::AllReduce => Shape {
                count: elems,
                bytes: elems * dtype.size(),
                buffer_elems: elems,
            },
            Collective::AllToAll => {
                let per_peer = elems / nranks.max(1);
                Shape {
                    count: per_peer,
                    bytes: per_peer * nranks * dtype.size(),
                    buffer_elems: per_peer * nranks,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn sweep(args: &[&str]) -> SweepArgs {
        let mut v = vec!["collbench", "bench"];
        v.extend_from_slice(args);
        match crate::cli::Cli::try_parse_from(v).unwrap().command {
            crate::cli::Command::Bench(b) => b.sweep,
            _ => unreachable!(),
        }
    }

    fn facts() -> LaunchFacts {
        LaunchFacts {
            ranks_on_host: 4,
            mem_available: Some(8 << 30),
            auto_backend: BackendKind::Mpi,
        }
    }

    fn err(args: &[&str]) -> PlanError {
        Plan::resolve(&sweep(args), facts()).unwrap_err()
    }

    #[test]
    fn defaults_resolve() {
        let p = Plan::resolve(&sweep(&[]), facts()).unwrap();
        assert_eq!(
            p.sweep.ops,
            vec![Collective::AllReduce, Collective::AllToAll]
        );
        assert_eq!(p.sweep.dtypes, vec![DType::Float]);
        assert_eq!(p.sweep.sizes.first(), Some(&8));
        assert_eq!(p.sweep.sizes.last(), Some(&(64 << 20)));
        assert_eq!(p.sweep.timeout, Some(Duration::from_secs(120)));
    }

    #[test]
    fn bad_values_name_their_flag() {
        assert_eq!(err(&["-b", "1M", "-e", "1K"]).flag, "-b/--minbytes");
        assert_eq!(err(&["-f", "1"]).flag, "-f/--stepfactor");
        assert_eq!(err(&["-f", "0"]).flag, "-f/--stepfactor");
        assert_eq!(err(&["-i", "0"]).flag, "-i/--stepbytes");
        assert_eq!(err(&["-d", "flaot"]).flag, "-d/--datatype");
        assert_eq!(err(&["-d", "half"]).flag, "-d/--datatype");
        assert_eq!(err(&["-o", "avg"]).flag, "-o/--redop");
        assert_eq!(err(&["-o", "sum,,max"]).flag, "-o/--redop");
        assert_eq!(err(&["--op", "broadcast"]).flag, "--op");
        assert_eq!(err(&["-n", "0"]).flag, "-n/--iters");
        assert_eq!(err(&["--timeout", "soon"]).flag, "--timeout");
        assert_eq!(
            err(&["-b", "1", "-e", "1G", "-i", "1"]).flag,
            "-i/--stepbytes"
        );
        let mem = err(&["-e", "4G"]);
        assert_eq!(mem.flag, "-e/--maxbytes");
        assert!(mem.problem.contains("available"), "{mem}");
        assert!(!err(&["-e", "4G"]).to_string().contains('\n'));
    }

    #[test]
    fn all_expands_to_what_the_backend_has() {
        let p = Plan::resolve(&sweep(&["-d", "all", "-o", "all"]), facts()).unwrap();
        assert_eq!(p.sweep.dtypes.len(), 8);
        assert_eq!(
            p.sweep.redops,
            vec![RedOp::Sum, RedOp::Prod, RedOp::Min, RedOp::Max]
        );
        assert_eq!(p.sweep.groups().len(), 8 * 4 + 8);
    }

    #[test]
    fn nccl_has_every_type_and_avg_and_auto_follows_the_probe() {
        let p = Plan::resolve(
            &sweep(&["--backend", "nccl", "-d", "all", "-o", "all", "--gpu", "1"]),
            facts(),
        )
        .unwrap();
        assert_eq!(p.backend, BackendKind::Nccl);
        assert_eq!(p.sweep.dtypes.len(), 10);
        assert_eq!(p.sweep.redops.len(), 5);
        assert_eq!(p.gpu, Some(1));
        let gpu_host = LaunchFacts {
            auto_backend: BackendKind::Nccl,
            ..facts()
        };
        let auto = Plan::resolve(&sweep(&["-d", "bf16", "-o", "avg"]), gpu_host).unwrap();
        assert_eq!(auto.backend, BackendKind::Nccl);
        assert_eq!(err(&["--backend", "mpi", "--gpu", "0"]).flag, "--gpu");
        let e = err(&["--backend", "mpi", "--a2a-call", "alltoall"]);
        assert_eq!(
            (e.flag, e.fix.as_str()),
            ("--a2a-call", "drop --a2a-call, or use --backend nccl")
        );
        let mpi_by_auto = Plan::resolve(&sweep(&["--gpu", "0", "--a2a-call", "alltoall"]), facts());
        assert_eq!(
            mpi_by_auto.unwrap().unused_nccl_flags,
            vec!["--gpu", "--a2a-call"]
        );
        assert!(auto.unused_nccl_flags.is_empty());
        assert_eq!(err(&["-d", "bfloat16"]).flag, "-d/--datatype");
    }

    #[test]
    fn shapes_round_like_nccl_tests() {
        // all-reduce: 10 bytes of float is 2 elements, printed as 8 bytes.
        let s = Shape::of(Collective::AllReduce, DType::Float, 10, 4);
        assert_eq!((s.count, s.bytes), (2, 8));
        // all-to-all: count is per peer; 8 bytes of float over 4 ranks rounds to 0.
        let s = Shape::of(Collective::AllToAll, DType::Float, 8, 4);
        assert_eq!((s.count, s.bytes), (0, 0));
        let s = Shape::of(Collective::AllToAll, DType::Float, 1 << 20, 3);
        assert_eq!(s.count, 87381);
        assert_eq!(s.bytes, 87381 * 3 * 4);
        assert_eq!(s.buffer_elems, 87381 * 3);
    }
}
