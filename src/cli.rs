//! Command-line definitions (clap derive): raw values only; `plan` resolves and validates them.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::plan::size::parse_size;

#[derive(Parser, Debug)]
#[command(
    name = "collbench",
    version,
    about = "Is this cluster ready? Collective sweeps (NCCL on GPUs, MPI on CPUs) with per-iteration latency histograms.",
    after_help = "Exit codes: 0 success, 1 test failed (wrong results, or a verdict of not ready), 2 bad input, 3 could not run."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the sweep as one rank of a job started by mpirun or srun (alone: a world of 1).
    Bench(BenchArgs),
    /// Run N ranks on this machine: starts mpirun itself with flags that suit this machine.
    Local(LocalArgs),
    /// Remove every link fault collbench left on this host: nftables tables collbench*, root qdiscs
    /// with handle cb00:-cbff:, interfaces with the alias collbench-down. Prints each command it runs.
    Heal(HealArgs),
    /// Validate a fault plan (TOML) without running it: every error with file:line and a fix.
    CheckPlan(CheckPlanArgs),
    /// Validate a topology file (TOML) and print its checks: every error with file:line and a fix.
    #[command(name = "check-topology")]
    CheckTopology(CheckPlanArgs),
    /// Regenerate results.csv, report.md, report.html and metrics.prom of a results folder.
    Report(ReportArgs),
    /// Compare a run against a baseline, flagging changes beyond the baseline's own noise
    /// (exit 0 none, 1 regression, 2 bad input).
    Compare(CompareArgs),
    /// The trend of one metric across the results folders in DIR (table + history.html).
    History(HistoryArgs),
    /// Convert nccl-tests' JSON output (-J, file version 3) into a collbench results folder.
    #[command(name = "import-nccl-tests")]
    ImportNcclTests(ImportArgs),
    /// Run a fault plan's controller: ranks connect with --controller ADDR (or COLLBENCH_CONTROLLER)
    /// and the run's secret; with a launch command after `--`, it starts and owns that job.
    Controller(ControllerArgs),
    /// Internal: send a signal to a pid after a delay (the agent's timer for a hang it put on itself).
    #[command(name = "lease-timer", hide = true)]
    LeaseTimer(LeaseTimerArgs),
    /// Internal: hold each packet of an NFQUEUE for a delay (a delay fault where netem is missing).
    #[command(hide = true)]
    Delayer(DelayerArgs),
}

#[derive(Args, Debug, Clone, PartialEq)]
pub struct DelayerArgs {
    #[arg(long)]
    pub queue: u16,
    #[arg(long = "delay-us")]
    pub delay_us: u64,
    #[arg(long = "jitter-us")]
    pub jitter_us: Option<u64>,
}

#[derive(Args, Debug, Clone, PartialEq)]
pub struct ControllerArgs {
    /// The fault plan (TOML; `collbench check-plan` validates it).
    #[arg(long, value_name = "FILE")]
    pub plan: PathBuf,
    /// Where to listen: HOST:PORT or unix:PATH (a unix socket reaches ranks in other network
    /// namespaces of this host).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7777")]
    pub listen: String,
    /// Allow the plan's link faults, which run ip/tc/nft as root on the ranks' hosts.
    #[arg(long)]
    pub allow_privileged: bool,
    /// The results folder: histograms the ranks upload are merged into DIR/controller_results.json
    /// (and the fault timeline into DIR/run.json when there is one) [default: rank 0's folder].
    #[arg(long, value_name = "DIR")]
    pub results: Option<PathBuf>,
    /// The job to start and own (e.g. mpirun ... collbench bench ...); without it the controller
    /// waits for ranks started elsewhere and ends when they have all left.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerSignal {
    Cont,
    Term,
    Kill,
}

#[derive(Args, Debug, Clone, PartialEq)]
pub struct LeaseTimerArgs {
    #[arg(long)]
    pub pid: i32,
    #[arg(long, value_enum)]
    pub signal: TimerSignal,
    #[arg(long = "after-ms")]
    pub after_ms: u64,
}

#[derive(Args, Debug, Clone, PartialEq)]
pub struct ReportArgs {
    /// A results folder (or its run.json).
    #[arg(value_name = "RUN_DIR")]
    pub run_dir: PathBuf,
    /// Only write the Prometheus text format, to PATH (default: stdout), atomically, e.g. into
    /// node_exporter's textfile directory.
    #[arg(long, value_name = "PATH", num_args = 0..=1, default_missing_value = "-")]
    pub prometheus: Option<PathBuf>,
    /// Sizes to draw latency CDFs for (comma-separated, K/M/G) [default: smallest, middle, largest].
    #[arg(long = "cdf-size", value_name = "SIZES", value_delimiter = ',', value_parser = parse_size)]
    pub cdf_sizes: Vec<u64>,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareFormat {
    Md,
    Json,
}

#[derive(Args, Debug, Clone, PartialEq)]
pub struct CompareArgs {
    /// The baseline results folder (or run.json).
    #[arg(value_name = "BASELINE")]
    pub baseline: PathBuf,
    /// The results folder (or run.json) to judge.
    #[arg(value_name = "RUN")]
    pub run: PathBuf,
    #[arg(long, value_enum, default_value_t = CompareFormat::Md)]
    pub format: CompareFormat,
    /// Write the comparison here instead of stdout (a summary line still goes to stdout).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Flag a change beyond K times the baseline's relative spread.
    #[arg(long = "noise-k", value_name = "K", default_value_t = 2.0)]
    pub noise_k: f64,
    /// ... and never below this change, in percent.
    #[arg(long = "floor-pct", value_name = "PCT", default_value_t = 5.0)]
    pub floor_pct: f64,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryMetric {
    Busbw,
    P50,
    P99,
}

#[derive(Args, Debug, Clone, PartialEq)]
pub struct HistoryArgs {
    /// A folder holding results folders (each with run.json).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    #[arg(long, value_enum, default_value_t = HistoryMetric::Busbw)]
    pub metric: HistoryMetric,
    /// Collectives to show (comma-separated) [default: all].
    #[arg(long = "op", value_name = "OPS")]
    pub ops: Option<String>,
    /// Sizes to show (comma-separated, K/M/G, or all) [default: the largest of each op].
    #[arg(long = "size", value_name = "SIZES")]
    pub sizes: Option<String>,
    #[arg(long, value_enum, default_value_t = PlacementArg::Out)]
    pub placement: PlacementArg,
    /// Where to write the HTML page [default: DIR/history.html].
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

#[derive(Args, Debug, Clone, PartialEq)]
pub struct ImportArgs {
    /// The JSON file nccl-tests wrote with -J.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// The results folder to create.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

#[derive(Args, Debug, Clone, PartialEq)]
pub struct CheckPlanArgs {
    /// The fault plan to check.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

#[derive(Args, Debug, Clone, PartialEq)]
pub struct HealArgs {
    /// Heal this network namespace instead of this process's own.
    #[arg(long, value_name = "NS", conflicts_with = "all")]
    pub netns: Option<String>,
    /// Heal this process's namespace and every one that `ip netns list` shows.
    #[arg(long)]
    pub all: bool,
    /// Print what would run and change nothing; exit 1 if anything is left.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Args, Debug, Clone, PartialEq)]
pub struct BenchArgs {
    /// The controller to register with [default: $COLLBENCH_CONTROLLER]; the secret comes from
    /// $COLLBENCH_SECRET or the file $COLLBENCH_SECRET_FILE names.
    #[arg(long, value_name = "ADDR")]
    pub controller: Option<String>,
    #[command(flatten)]
    pub sweep: SweepArgs,
}

#[derive(Args, Debug, Clone, PartialEq)]
pub struct LocalArgs {
    /// Number of ranks to start on this machine.
    #[arg(long = "np", value_name = "N", default_value_t = 4)]
    pub np: u32,
    /// The mpirun to start the ranks with.
    #[arg(long, value_name = "PATH", default_value = "mpirun")]
    pub mpirun: PathBuf,
    /// Extra argument for mpirun, placed before the program (repeat for several).
    #[arg(long = "mpirun-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub mpirun_args: Vec<String>,
    /// A fault plan to run with the sweep; this process hosts its controller.
    #[arg(long, value_name = "FILE")]
    pub plan: Option<PathBuf>,
    /// Allow the plan's link faults, which run ip/tc/nft as root on this host.
    #[arg(long, requires = "plan")]
    pub allow_privileged: bool,
    /// Where the embedded controller listens: HOST:PORT (port 0 picks one) or unix:PATH.
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "127.0.0.1:0",
        requires = "plan"
    )]
    pub listen: String,
    #[command(flatten)]
    pub sweep: SweepArgs,
}

/// The sweep, with nccl-tests' short flags.
#[derive(Args, Debug, Clone, PartialEq)]
pub struct SweepArgs {
    /// Smallest message size in bytes (K/M/G suffixes, binary).
    #[arg(short = 'b', long = "minbytes", value_name = "SIZE", default_value = "8", value_parser = parse_size)]
    pub min_bytes: u64,
    /// Largest message size in bytes (K/M/G suffixes, binary).
    #[arg(short = 'e', long = "maxbytes", value_name = "SIZE", default_value = "64M", value_parser = parse_size)]
    pub max_bytes: u64,
    /// Multiply the size by this factor between steps [default: 2 unless -i is given].
    #[arg(
        short = 'f',
        long = "stepfactor",
        value_name = "N",
        conflicts_with = "step_bytes"
    )]
    pub step_factor: Option<u64>,
    /// Add this many bytes between steps instead of multiplying.
    #[arg(short = 'i', long = "stepbytes", value_name = "SIZE", value_parser = parse_size)]
    pub step_bytes: Option<u64>,
    /// Timed iterations per size and placement.
    #[arg(short = 'n', long = "iters", value_name = "N", default_value_t = 20)]
    pub iters: u32,
    /// Untimed warmup iterations before each timed loop.
    #[arg(
        short = 'w',
        long = "warmup_iters",
        value_name = "N",
        default_value_t = 1
    )]
    pub warmup: u32,
    /// Correctness-check iterations per size and placement (0: no check).
    #[arg(short = 'c', long = "check", value_name = "N", default_value_t = 1)]
    pub check: u32,
    /// Reduction op(s): sum, prod, min, max, avg, comma-separated, or all.
    #[arg(short = 'o', long = "redop", value_name = "OPS", default_value = "sum")]
    pub redop: String,
    /// Data type(s): float, double, int32, int64, uint8, ..., comma-separated, or all.
    #[arg(
        short = 'd',
        long = "datatype",
        value_name = "TYPES",
        default_value = "float"
    )]
    pub dtype: String,
    /// Collective(s) to run: all_reduce, all_to_all, comma-separated.
    #[arg(
        long = "op",
        value_name = "COLLECTIVES",
        default_value = "all_reduce,all_to_all"
    )]
    pub ops: String,
    /// Which buffer placements to time.
    #[arg(long, value_enum, default_value_t = PlacementArg::Both)]
    pub placement: PlacementArg,
    /// Collective library.
    #[arg(long, value_enum, default_value_t = BackendArg::Auto)]
    pub backend: BackendArg,
    /// GPU (CUDA ordinal) for every rank on a host [default: the rank's local rank, wrapping when
    /// ranks outnumber GPUs]; nccl backend only.
    #[arg(long, value_name = "N")]
    pub gpu: Option<u32>,
    /// How the nccl backend runs all-to-all: grouped ncclSend/ncclRecv to every peer, or one
    /// ncclAlltoAll call (NCCL 2.28 or newer; what nccl-tests 2.19 calls there).
    #[arg(long, value_enum, value_name = "CALL", default_value_t = A2aCallArg::Sendrecv)]
    pub a2a_call: A2aCallArg,
    /// Deadline for every blocking call, e.g. 30s or 5m (0 disables the watchdog).
    #[arg(long, value_name = "DURATION", default_value = "120s")]
    pub timeout: String,
    /// Results folder for this run [default: results/run-<UTC time>-<host>].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Run the whole sweep this many times (each pass adds its own rows, so a fault plan sees
    /// the same sizes before, during and after a fault).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub repeat: u32,
    /// Keep repeating whole passes of the sweep until this long has passed, e.g. 20s.
    #[arg(long = "run-for", value_name = "DURATION")]
    pub run_for: Option<String>,
    /// Test hook: flip one input byte of this rank in the first check iteration of every call,
    /// so the check must find it (the data-corruption fault without a controller).
    #[arg(long, value_name = "RANK", hide = true)]
    pub debug_corrupt_rank: Option<usize>,
    /// Judge the run against this topology file (topologies/*.toml): a verdict table, a
    /// "verdict" in run.json, and exit 1 when not ready.
    #[arg(long, value_name = "FILE")]
    pub topology: Option<PathBuf>,
    /// Test hook: this rank sleeps DELAY before each timed call (a planted straggler), e.g. 2:2ms.
    #[arg(long, value_name = "RANK:DELAY", hide = true)]
    pub debug_slow_rank: Option<String>,
    /// After the sweep, time node pairs (circle method, n-1 rounds), re-pair suspects with healthy
    /// nodes, and name the culprit node or link in the verdict (needs --topology; MPI on host memory).
    #[arg(long)]
    pub localize: bool,
    /// Under a controller: `node` makes each node's first local rank relay the others' control
    /// traffic (one connection per node); `auto` does so above 256 ranks [env: COLLBENCH_RELAY].
    #[arg(long, value_enum, default_value_t = RelayArg::Off)]
    pub relay: RelayArg,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayArg {
    /// Every rank connects to the controller itself.
    Off,
    /// The node's first local rank relays the node.
    Node,
    /// Node relays in worlds of more than 256 ranks.
    Auto,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlacementArg {
    Both,
    Out,
    In,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendArg {
    /// NCCL when this host has a GPU and libnccl.so.2 loads, else MPI (run.json says why).
    Auto,
    /// MPI collectives on host memory.
    Mpi,
    /// NCCL collectives on GPU memory (libnccl.so.2 and libcuda.so.1 loaded at run time).
    Nccl,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum A2aCallArg {
    /// ncclSend/ncclRecv to every peer inside ncclGroupStart/End.
    Sendrecv,
    /// ncclAlltoAll (NCCL 2.28 or newer).
    Alltoall,
}

impl SweepArgs {
    /// The argv that makes a child `collbench bench` parse back to exactly these values.
    pub fn to_argv(&self) -> Vec<String> {
        let mut v = vec![
            "-b".to_string(),
            self.min_bytes.to_string(),
            "-e".to_string(),
            self.max_bytes.to_string(),
        ];
        if let Some(f) = self.step_factor {
            v.extend(["-f".to_string(), f.to_string()]);
        }
        if let Some(i) = self.step_bytes {
            v.extend(["-i".to_string(), i.to_string()]);
        }
        v.extend([
            "-n".to_string(),
            self.iters.to_string(),
            "-w".to_string(),
            self.warmup.to_string(),
            "-c".to_string(),
            self.check.to_string(),
            "-o".to_string(),
            self.redop.clone(),
            "-d".to_string(),
            self.dtype.clone(),
            "--op".to_string(),
            self.ops.clone(),
            "--placement".to_string(),
            value_name(self.placement),
            "--backend".to_string(),
            value_name(self.backend),
            "--timeout".to_string(),
            self.timeout.clone(),
        ]);
        if let Some(g) = self.gpu {
            v.extend(["--gpu".to_string(), g.to_string()]);
        }
        if self.a2a_call != A2aCallArg::Sendrecv {
            v.extend(["--a2a-call".to_string(), value_name(self.a2a_call)]);
        }
        if let Some(out) = &self.out {
            v.extend(["--out".to_string(), out.display().to_string()]);
        }
        if self.repeat != 1 {
            v.extend(["--repeat".to_string(), self.repeat.to_string()]);
        }
        if let Some(d) = &self.run_for {
            v.extend(["--run-for".to_string(), d.clone()]);
        }
        if let Some(r) = self.debug_corrupt_rank {
            v.extend(["--debug-corrupt-rank".to_string(), r.to_string()]);
        }
        if let Some(t) = &self.topology {
            v.extend(["--topology".to_string(), t.display().to_string()]);
        }
        if let Some(s) = &self.debug_slow_rank {
            v.extend(["--debug-slow-rank".to_string(), s.clone()]);
        }
        if self.localize {
            v.push("--localize".to_string());
        }
        if self.relay != RelayArg::Off {
            v.extend(["--relay".to_string(), value_name(self.relay)]);
        }
        v
    }
}

fn value_name<T: ValueEnum>(v: T) -> String {
    v.to_possible_value()
        .map(|p| p.get_name().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_args_round_trip_through_argv() {
        let cli = Cli::try_parse_from([
            "collbench",
            "local",
            "--np",
            "3",
            "-b",
            "1K",
            "-e",
            "2M",
            "-i",
            "4K",
            "-n",
            "7",
            "-w",
            "0",
            "-c",
            "2",
            "-o",
            "min,max",
            "-d",
            "int32",
            "--op",
            "all_to_all",
            "--placement",
            "in",
            "--backend",
            "nccl",
            "--gpu",
            "1",
            "--a2a-call",
            "alltoall",
            "--timeout",
            "5s",
            "--out",
            "/tmp/x",
            "--debug-corrupt-rank",
            "1",
            "--topology",
            "topologies/local-cpu.toml",
            "--debug-slow-rank",
            "2:2ms",
            "--localize",
            "--repeat",
            "3",
            "--run-for",
            "2s",
            "--relay",
            "node",
        ])
        .unwrap();
        let Command::Local(local) = cli.command else {
            panic!("not local")
        };
        let mut argv = vec!["collbench".to_string(), "bench".to_string()];
        argv.extend(local.sweep.to_argv());
        let Command::Bench(bench) = Cli::try_parse_from(argv).unwrap().command else {
            panic!("not bench")
        };
        assert_eq!(bench.sweep, local.sweep);
    }

    #[test]
    fn factor_and_step_conflict() {
        assert!(Cli::try_parse_from(["collbench", "bench", "-f", "2", "-i", "1K"]).is_err());
    }
}
