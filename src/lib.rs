//! collbench: is this cluster ready? Collective sweeps across every rank with per-iteration
//! latency histograms, merged exactly on rank 0, written as results a person and a program read.
//!
//! Data flow: cli -> plan -> bootstrap -> backend -> runner -> metrics -> report.

pub mod backend;
pub mod bootstrap;
pub mod cli;
pub mod control;
pub mod ffi;
pub mod metrics;
pub mod plan;
pub mod report;
pub mod runner;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::UNIX_EPOCH;

use backend::mpi::MpiBackend;
use backend::nccl::NcclBackend;
use backend::Backend;
use bootstrap::{LauncherEnv, RankInfo, World};
use cli::{BackendArg, BenchArgs, Command, LocalArgs};
use plan::{BackendKind, LaunchFacts, Plan};
use report::{Exporter, RunDoc, RunStatus};

/// Writes one line to stderr in a single write, so lines from ranks sharing mpirun's stderr
/// never interleave mid-line (eprintln! writes its pieces separately).
pub fn say(line: &str) {
    use std::io::Write;
    let mut buf = String::with_capacity(line.len() + 1);
    buf.push_str(line);
    buf.push('\n');
    let _ = std::io::stderr().write_all(buf.as_bytes());
}

/// Exit codes, stable and documented in the README.
pub mod exit {
    pub const SUCCESS: u8 = 0;
    pub const TEST_FAILED: u8 = 1;
    pub const BAD_INPUT: u8 = 2;
    pub const COULD_NOT_RUN: u8 = 3;
}

/// A run that ran to its end.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// The run finished but found wrong results.
    TestFailed(String),
}

/// A run that could not do what it was asked.
#[derive(Debug, PartialEq, Eq)]
pub enum Failure {
    BadInput(String),
    CouldNotRun(String),
}

impl Failure {
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::BadInput(_) => exit::BAD_INPUT,
            Failure::CouldNotRun(_) => exit::COULD_NOT_RUN,
        }
    }
}

pub fn run(command: Command) -> Result<Outcome, Failure> {
    match command {
        Command::Bench(args) => bench(args),
        Command::Local(args) => local(args),
        Command::Heal(args) => control::heal::run(&args),
        Command::CheckPlan(args) => check_plan(&args),
        Command::CheckTopology(args) => check_topology(&args.file).map(|t| {
            println!("{t}");
            Outcome::Success
        }),
        Command::Report(args) => report::commands::report(args),
        Command::Compare(args) => report::commands::compare(args),
        Command::History(args) => report::commands::history(args),
        Command::ImportNcclTests(args) => report::commands::import_nccl_tests(args),
        Command::Controller(args) => control::commands::controller(args),
        Command::LeaseTimer(args) => control::commands::lease_timer(args),
        Command::Delayer(args) => control::delayer::run(&args),
    }
}

/// Prints the plan's faults, or every error in it; bad plans are bad input.
fn check_plan(args: &cli::CheckPlanArgs) -> Result<Outcome, Failure> {
    match plan::faults::load(&args.file) {
        Ok(p) => {
            println!(
                "{}: ok, {} fault(s); heartbeat {}, missing after {}, stall after {}",
                args.file.display(),
                p.faults.len(),
                humantime::format_duration(p.heartbeat),
                humantime::format_duration(p.heartbeat_timeout),
                humantime::format_duration(p.stall)
            );
            for f in &p.faults {
                let params: Vec<String> =
                    f.params().iter().map(|(k, v)| format!("{k}={v}")).collect();
                println!(
                    "  fault {} (line {}): {} {} at {} {}{}",
                    f.id,
                    f.line,
                    f.kind.name(),
                    f.target,
                    f.start,
                    params.join(" "),
                    if f.kind.is_link() {
                        " [privileged: needs root and --allow-privileged]"
                    } else {
                        ""
                    }
                );
            }
            Ok(Outcome::Success)
        }
        Err(errors) => {
            let (last, rest) = errors.split_last().expect("at least one error");
            for e in rest {
                eprintln!("collbench: {e}");
            }
            Err(Failure::BadInput(last.to_string()))
        }
    }
}

/// Loads a topology file; every error goes to stderr and the last one is the bad-input failure.
fn check_topology(file: &Path) -> Result<plan::topology::Topology, Failure> {
    plan::topology::load(file).map_err(|errors| {
        let (last, rest) = errors.split_last().expect("at least one error");
        for e in rest {
            say(&format!("collbench: {e}"));
        }
        Failure::BadInput(last.to_string())
    })
}

fn results_folder_taken(dir: &Path) -> Option<Failure> {
    dir.join("run.json").exists().then(|| {
        Failure::BadInput(format!(
            "--out: {} already holds a run (run.json); choose another folder or remove it",
            dir.display()
        ))
    })
}

/// `results/run-<UTC time>-<host>`, with a suffix if that exists already.
fn default_results_dir() -> PathBuf {
    let stamp: String = report::rfc3339_now()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    let base = format!("run-{}-{}", stamp, bootstrap::hostname());
    let mut dir = Path::new("results").join(&base);
    let mut n = 1;
    while dir.exists() {
        n += 1;
        dir = Path::new("results").join(format!("{base}-{n}"));
    }
    dir
}

/// What `--backend` found on this host before anything starts.
struct BackendChoice {
    arg: BackendArg,
    /// The GPU/NCCL probe, for `auto` and `nccl`.
    probe: Option<Result<(), String>>,
}

impl BackendChoice {
    fn probe(arg: BackendArg) -> BackendChoice {
        let probe = (arg != BackendArg::Mpi).then(|| bootstrap::gpu::probe().map(|_| ()));
        BackendChoice { arg, probe }
    }

    fn auto_kind(&self) -> BackendKind {
        match self.probe {
            Some(Ok(())) => BackendKind::Nccl,
            _ => BackendKind::Mpi,
        }
    }

    /// The run.json note saying what `auto` chose and why.
    fn note(&self) -> Option<String> {
        match (&self.arg, &self.probe) {
            (BackendArg::Auto, Some(Ok(()))) => {
                Some("--backend auto chose NCCL: a GPU and libnccl.so.2 were found".into())
            }
            (BackendArg::Auto, Some(Err(e))) => Some(format!("--backend auto chose MPI: {e}")),
            _ => None,
        }
    }

    fn facts(&self, ranks_on_host: u64) -> LaunchFacts {
        LaunchFacts {
            ranks_on_host,
            mem_available: bootstrap::mem_available(),
            auto_backend: self.auto_kind(),
        }
    }

    /// Resolves the plan; a refusal under `auto` says which backend auto picked and why.
    fn resolve(&self, args: &cli::SweepArgs, facts: LaunchFacts) -> Result<Plan, Failure> {
        let plan = Plan::resolve(args, facts).map_err(|e| match self.note() {
            Some(n) if self.auto_kind() == BackendKind::Mpi => {
                Failure::BadInput(format!("{e} ({n})"))
            }
            _ => Failure::BadInput(e.to_string()),
        })?;
        if let (BackendKind::Nccl, Some(Err(e))) = (plan.backend, &self.probe) {
            return Err(Failure::CouldNotRun(format!(
                "--backend nccl on {}: {e}",
                bootstrap::hostname()
            )));
        }
        Ok(plan)
    }
}

/// Where this rank's controller is and the secret to present, when there is one.
fn controller_of(args: &BenchArgs) -> Result<Option<(control::proto::Addr, String)>, Failure> {
    let (text, flag) = match &args.controller {
        Some(a) => (a.clone(), "--controller"),
        None => match std::env::var(control::proto::ENV_ADDR) {
            Ok(a) if !a.is_empty() => (a, control::proto::ENV_ADDR),
            _ => return Ok(None),
        },
    };
    let addr = control::proto::Addr::parse(&text)
        .map_err(|e| Failure::BadInput(format!("{flag}: {e}")))?;
    let secret = control::launch::secret_from_env().map_err(Failure::BadInput)?;
    Ok(Some((addr, secret)))
}

fn bench(args: BenchArgs) -> Result<Outcome, Failure> {
    let controller = controller_of(&args)?;
    control::relay::configure(args.sweep.relay);
    let env = LauncherEnv::from_env();
    // Ranks without an MPI world meet through their controller, so they must have one.
    let rendezvous = match (env.without_mpi(), &controller) {
        (false, _) => None,
        (true, Some(c)) => Some(c.clone()),
        (true, None) => return Err(Failure::BadInput(format!(
            "rank {} of {} was started without mpirun ({} set) and has no controller to meet the others through; \
             start the ranks with `collbench local --backend nccl` or mpirun, or pass --controller ADDR",
            env.rank.unwrap_or(0),
            env.world.unwrap_or(1),
            match env.launcher {
                bootstrap::Launcher::Collbench => "COLLBENCH_RANK",
                _ => "RANK and WORLD_SIZE",
            }
        ))),
    };
    let choice = BackendChoice::probe(args.sweep.backend);
    let facts = choice.facts(env.local_size.unwrap_or(1) as u64);
    let mut plan = choice.resolve(&args.sweep, facts)?;
    plan.topology = args
        .sweep
        .topology
        .as_deref()
        .map(check_topology)
        .transpose()?;
    if let Some(f) = plan.out_dir.as_deref().and_then(results_folder_taken) {
        return Err(f);
    }
    let out_dir = plan.out_dir.clone().unwrap_or_else(default_results_dir);
    if let Some(c) = rendezvous {
        return bench_without_mpi(&plan, env, &choice, c, out_dir);
    }
    let world = World::init(env).map_err(|e| Failure::CouldNotRun(format!("starting MPI: {e}")))?;
    let agent = match controller {
        Some((addr, secret)) => AgentStart::Connect(addr, secret),
        None => AgentStart::None,
    };
    let result = bench_in_world(&plan, &world, env, &choice, agent, &out_dir);
    if matches!(result, Err(Failure::CouldNotRun(_))) && world.size > 1 {
        world.leave_without_finalize();
    } else {
        drop(world);
    }
    result
}

/// Ranks started one by one (by `collbench local` for NCCL, or a torchrun-style launcher): the
/// agent registers first, and the controller's rendezvous stands in for MPI.
fn bench_without_mpi(
    plan: &Plan,
    env: LauncherEnv,
    choice: &BackendChoice,
    (addr, secret): (control::proto::Addr, String),
    out_dir: PathBuf,
) -> Result<Outcome, Failure> {
    let (rank, size) = (env.rank.unwrap_or(0), env.world.unwrap_or(1));
    refuse_without_mpi(plan)?;
    if rank >= size {
        return Err(Failure::BadInput(format!(
            "rank {rank} is not below the world size {size}; fix the launcher's rank variables"
        )));
    }
    let identity = control::agent::Identity {
        rank,
        world_size: size,
        host: bootstrap::hostname(),
        local_rank: env.local_rank.unwrap_or(0),
        device: None,
        out_dir: (rank == 0).then(|| out_dir.display().to_string()),
    };
    // The watchdog starts later, on the counters the agent's heartbeats already report.
    let progress = runner::watchdog::Progress::new();
    let agent = control::relay::start_agent(&addr, &secret, identity, progress.clone())
        .map_err(|e| Failure::CouldNotRun(format!("rank {rank}: {e}")))?;
    let world = World::without_mpi(env, control::rendezvous::Rendezvous::new(agent.shared()));
    bench_in_world(
        plan,
        &world,
        env,
        choice,
        AgentStart::Started(agent, progress),
        &out_dir,
    )
}

/// What ranks without an MPI world cannot do, refused before any of them starts.
fn refuse_without_mpi(plan: &Plan) -> Result<(), Failure> {
    if plan.backend != BackendKind::Nccl {
        return Err(Failure::BadInput(format!(
            "--backend {}: MPI collectives need ranks started by mpirun or srun; use --backend nccl, or start them with mpirun",
            plan.backend_name()
        )));
    }
    if plan.sweep.localize {
        return Err(Failure::BadInput(
            "--localize: the pairwise MPI timing needs ranks started by mpirun; drop --localize or use --backend mpi".into(),
        ));
    }
    Ok(())
}

/// The rank's agent: none, one to start once the world is up, or one already started.
enum AgentStart {
    None,
    Connect(control::proto::Addr, String),
    Started(control::agent::Agent, runner::watchdog::Progress),
}

fn could_not_run(e: impl std::fmt::Display) -> Failure {
    Failure::CouldNotRun(e.to_string())
}

/// Every rank must have resolved `auto` the same way, or the collectives would not match.
fn agree_on_backend(world: &World, plan: &Plan) -> Result<(), Failure> {
    let nccl = (plan.backend == BackendKind::Nccl) as u64;
    let total = world
        .group()
        .allreduce_sum_u64(nccl)
        .map_err(could_not_run)?;
    if total != 0 && total != world.size as u64 {
        return Err(Failure::CouldNotRun(format!(
            "--backend auto: {total} of {} ranks found a GPU and NCCL, the others did not (this rank: {}); \
             fix the hosts without them or pass --backend mpi",
            world.size,
            plan.backend_name()
        )));
    }
    Ok(())
}

/// GPU choice, NCCL unique id and communicator for this rank, agreed on by every rank.
fn start_nccl(
    plan: &Plan,
    world: &World,
    watchdog: &runner::watchdog::Watchdog,
    max_iters: u32,
    info: &mut RankInfo,
    notes: &mut Vec<String>,
) -> Result<NcclBackend, Failure> {
    let setup = bootstrap::gpu::setup(world, plan.gpu).map_err(could_not_run)?;
    info.gpu = Some(setup.seat.gpu);
    info.pci_bus_id = Some(setup.seat.pci_bus_id.clone());
    info.gpu_name = Some(setup.seat.name.clone());
    notes.extend(setup.sharing.note.clone());
    let spec = backend::nccl::CommSpec {
        rank: world.rank,
        nranks: world.size,
        unique_id: &setup.unique_id,
        group: world.group().clone(),
        native_alltoall: plan.nccl_alltoall,
    };
    if plan.nccl_alltoall {
        notes.push(
            "all_to_all calls ncclAlltoAll (--a2a-call alltoall), not grouped ncclSend/ncclRecv"
                .into(),
        );
    }
    let made = NcclBackend::new(
        setup.nccl,
        setup.ctx,
        spec,
        plan.sweep.max_bytes,
        max_iters,
        plan.sweep.timeout,
        Some(watchdog.progress()),
    );
    let mine = made.as_ref().map(|_| ()).map_err(Clone::clone);
    bootstrap::gpu::agree(world, mine).map_err(could_not_run)?;
    made.map_err(could_not_run)
}

fn bench_in_world(
    plan: &Plan,
    world: &World,
    env: LauncherEnv,
    choice: &BackendChoice,
    agent: AgentStart,
    out_dir: &Path,
) -> Result<Outcome, Failure> {
    let group = world.group();
    if choice.arg == BackendArg::Auto {
        agree_on_backend(world, plan)?;
    }
    // Rank 0 makes the results folder; everyone learns whether that worked.
    let mut mkdir_error = None;
    if world.is_root() {
        if let Err(e) = std::fs::create_dir_all(out_dir) {
            mkdir_error = Some(format!(
                "cannot create results folder {}: {e}; pass a writable --out DIR",
                out_dir.display()
            ));
        }
    }
    let failed = group
        .allreduce_sum_u64(mkdir_error.is_some() as u64)
        .map_err(could_not_run)?;
    if failed > 0 {
        return Err(Failure::CouldNotRun(mkdir_error.unwrap_or_else(|| {
            "rank 0 could not create the results folder".into()
        })));
    }

    let max_iters = plan
        .sweep
        .iterations
        .max(plan.sweep.warmup)
        .max(plan.sweep.check_iterations);
    // The watchdog aborts the NCCL communicator (once there is one) before ending the rank.
    let abort: Arc<Mutex<Option<ffi::nccl::AbortHandle>>> = Arc::default();
    let agent_link: Arc<Mutex<Option<Arc<control::agent::Shared>>>> = Arc::default();
    let (started, connect, progress) = match agent {
        AgentStart::Started(a, p) => {
            *agent_link.lock().unwrap_or_else(|e| e.into_inner()) = Some(a.shared());
            (Some(a), None, p)
        }
        AgentStart::Connect(addr, secret) => (
            None,
            Some((addr, secret)),
            runner::watchdog::Progress::new(),
        ),
        AgentStart::None => (None, None, runner::watchdog::Progress::new()),
    };
    let watchdog = runner::watchdog::Watchdog::start_on(
        progress,
        world.rank,
        plan.sweep.timeout,
        Box::new({
            let abort = abort.clone();
            let agent_link = agent_link.clone();
            move |msg| {
                say(&format!("collbench: {msg}; aborting this rank"));
                if let Some(a) = agent_link
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .as_ref()
                {
                    control::agent::notify(
                        a,
                        &control::proto::ToController::Detected {
                            mechanism: control::proto::Mechanism::WatchdogDeadline,
                            detail: msg.to_string(),
                            culprit: None,
                        },
                    );
                    control::agent::goodbye(a, "aborted by its watchdog");
                }
                if let Some(h) = abort.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
                    h.abort();
                }
                // SAFETY: ends the process at once; the launcher tears down the other ranks.
                unsafe { libc::_exit(exit::COULD_NOT_RUN as i32) }
            }
        }),
    );

    let mut notes: Vec<String> = choice.note().into_iter().collect();
    if !plan.unused_nccl_flags.is_empty() {
        let (verb, was) = match plan.unused_nccl_flags.len() {
            1 => ("applies", "was"),
            _ => ("apply", "were"),
        };
        notes.push(format!(
            "{} {verb} to the nccl backend only and {was} not used (this run is MPI)",
            plan.unused_nccl_flags.join(" and ")
        ));
    }
    let mut info = world.info();
    let mut backend: Box<dyn Backend> = match plan.backend {
        BackendKind::Mpi => {
            let comm = group.mpi().ok_or_else(|| {
                Failure::BadInput("--backend mpi needs ranks started by mpirun".into())
            })?;
            Box::new(MpiBackend::new(comm, plan.sweep.max_bytes, max_iters))
        }
        BackendKind::Nccl => {
            let b = start_nccl(plan, world, &watchdog, max_iters, &mut info, &mut notes)?;
            *abort.lock().unwrap_or_else(|e| e.into_inner()) = Some(b.abort_handle());
            Box::new(b)
        }
    };

    let agent = match (started, connect) {
        (Some(a), _) => Some(a),
        (None, None) => None,
        (None, Some((addr, secret))) => {
            let identity = control::agent::Identity {
                rank: world.rank,
                world_size: world.size,
                host: world.hostname.clone(),
                local_rank: world.local_rank,
                device: info.pci_bus_id.clone(),
                out_dir: world.is_root().then(|| out_dir.display().to_string()),
            };
            let started =
                control::relay::start_agent(&addr, &secret, identity, watchdog.progress());
            let failed = group
                .allreduce_sum_u64(started.is_err() as u64)
                .map_err(could_not_run)?;
            match started {
                Err(e) => return Err(Failure::CouldNotRun(format!("rank {}: {e}", world.rank))),
                Ok(_) if failed > 0 => {
                    return Err(Failure::CouldNotRun(format!(
                        "{failed} rank(s) could not register with the controller at {addr}"
                    )))
                }
                Ok(a) => {
                    *agent_link.lock().unwrap_or_else(|e| e.into_inner()) = Some(a.shared());
                    Some(a)
                }
            }
        }
    };
    if let Some(a) = &agent {
        backend = Box::new(control::hooks::FaultyBackend::new(
            backend,
            a.shared(),
            world.size,
        ));
    }
    let result = measure_and_report(
        plan,
        world,
        env,
        backend,
        info,
        notes,
        out_dir,
        &watchdog,
        agent.as_ref(),
    );
    drop(watchdog);
    if let Some(a) = agent {
        if let Err(Failure::CouldNotRun(e)) = &result {
            a.detected(control::proto::Mechanism::CollectiveError, e.clone(), None);
        }
        a.finish(match &result {
            Ok(Outcome::Success) => "complete",
            Ok(Outcome::TestFailed(_)) => "complete with a failed test",
            Err(_) => "failed",
        });
    }
    result
}

/// Runs the sweep; rank 0 also writes every result file as rows arrive.
#[allow(clippy::too_many_arguments)]
fn measure_and_report(
    plan: &Plan,
    world: &World,
    env: LauncherEnv,
    mut backend: Box<dyn Backend + '_>,
    info: RankInfo,
    notes: Vec<String>,
    out_dir: &Path,
    watchdog: &runner::watchdog::Watchdog,
    agent: Option<&control::agent::Agent>,
) -> Result<Outcome, Failure> {
    let info = serde_json::to_vec(&info).map_err(could_not_run)?;
    let infos = world
        .group()
        .gather_bytes(0, &info)
        .map_err(could_not_run)?;

    let Some(infos) = infos else {
        // Not rank 0: measure and hand results to rank 0.
        let outcome = runner::run_sweep(&plan.sweep, backend.as_mut(), world, watchdog, |_| Ok(()))
            .map_err(|e| Failure::CouldNotRun(format!("rank {}: {e}", world.rank)))?;
        localize(plan, world, watchdog)
            .map_err(|e| Failure::CouldNotRun(format!("rank {}: localization: {e}", world.rank)))?;
        return Ok(verdict(outcome.wrong_total, None));
    };

    let ranks: Vec<RankInfo> = infos
        .iter()
        .map(|b| serde_json::from_slice(b))
        .collect::<Result<_, _>>()
        .map_err(could_not_run)?;
    let mut doc = new_run_doc(plan, world, env, backend.as_ref(), ranks, notes);
    let start_unix_s = std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let mut exporters: Vec<Box<dyn Exporter>> = vec![
        Box::new(report::table::TableExporter::new(
            report::progress::ClearProgress(std::io::stdout()),
            plan.sweep.placements.clone(),
            plan.sweep.check_iterations > 0,
        )),
        Box::new(report::json::JsonExporter::new(out_dir)),
        Box::new(report::hlog::HlogExporter::new(
            out_dir,
            &doc.files.histograms,
            start_unix_s,
        )),
        Box::new(report::outputs::ReportExporter::new(out_dir)),
    ];
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        exporters.push(Box::new(report::progress::ProgressExporter::new(
            std::io::stderr(),
            &plan.sweep,
        )));
    }
    for e in &mut exporters {
        e.start(&doc)
            .map_err(|e| could_not_run(format!("writing results to {}: {e}", out_dir.display())))?;
    }

    let mut stragglers_named = Stragglers::default();
    if let Some(a) = agent {
        a.send(&control::proto::ToController::SweepStarted {
            unix_s: report::unix_now(),
        });
    }
    let result = runner::run_sweep(&plan.sweep, backend.as_mut(), world, watchdog, |records| {
        if let Some(a) = agent {
            report_wrong_data(a, records);
            report_stragglers(a, records, &mut stragglers_named);
        }
        doc.results.extend(records.iter().cloned());
        doc.refresh_summary();
        for e in &mut exporters {
            e.step(&doc, records)
                .map_err(|e| runner::RunError::Export(e.to_string()))?;
        }
        Ok(())
    });
    let mut located = None;
    let result = result.and_then(|o| {
        located = localize(plan, world, watchdog)?;
        Ok(o)
    });

    doc.end_time = Some(report::rfc3339_now());
    doc.refresh_summary();
    if result.is_ok() {
        doc.verdict = plan
            .topology
            .as_ref()
            .map(|t| report::verdict::evaluate(t, &doc));
    }
    if let (Some(v), Some(l)) = (doc.verdict.as_mut(), located) {
        v.add_localization(l);
    }
    let outcome = match &result {
        Ok(_) => {
            doc.status = RunStatus::Complete;
            None
        }
        Err(e) => {
            doc.status = RunStatus::Failed;
            doc.error = Some(e.to_string());
            Some(e.to_string())
        }
    };
    for e in &mut exporters {
        if let Err(err) = e.finish(&doc) {
            say(&format!(
                "collbench: writing results to {}: {err}",
                out_dir.display()
            ));
        }
    }
    if let Some(v) = &doc.verdict {
        print!("{}", v.table());
    }
    println!("# results: {}", out_dir.join("run.json").display());
    if let Some(msg) = outcome {
        return Err(Failure::CouldNotRun(format!("rank 0: {msg}")));
    }
    let wrong = result.map(|o| o.wrong_total).unwrap_or(0);
    match (verdict(wrong, Some(out_dir)), &doc.verdict) {
        (Outcome::Success, Some(v)) if !v.is_ready() => Ok(Outcome::TestFailed(v.summary())),
        (o, _) => Ok(o),
    }
}

/// `--localize` after the sweep, on every rank: node pairs on sub-communicators.
fn localize(
    plan: &Plan,
    world: &World,
    watchdog: &runner::watchdog::Watchdog,
) -> Result<Option<runner::localize::Localization>, runner::RunError> {
    if !plan.sweep.localize {
        return Ok(None);
    }
    let factor = plan
        .topology
        .as_ref()
        .map_or(2.0, |t| t.straggler.fail_factor);
    let slow = plan
        .sweep
        .debug_slow_rank
        .filter(|s| s.rank == world.rank)
        .map(|s| s.delay);
    let bytes = plan.sweep.max_bytes.min(1 << 20);
    runner::localize::run(world, watchdog, bytes, plan.sweep.iterations, factor, slow).map(Some)
}

/// Tells the controller about rows with wrong values, naming the sending rank where the check can.
fn report_wrong_data(agent: &control::agent::Agent, records: &[metrics::Record]) {
    for r in records.iter().filter(|r| r.wrong.unwrap_or(0) > 0) {
        let victims: Vec<usize> = r
            .per_rank
            .iter()
            .filter(|p| p.wrong > 0)
            .map(|p| p.rank)
            .collect();
        let source = r.per_rank.iter().find_map(|p| p.wrong_source);
        let detail = format!(
            "{} wrong values in {} {} B {}: received wrong on rank(s) {victims:?}{}",
            r.wrong.unwrap_or(0),
            r.op.name(),
            r.size_bytes,
            r.placement.label(),
            match source {
                Some(s) => format!("; the bad block came from rank {s}"),
                None if r.op.reduces() =>
                    "; a reduction spreads one bad input to every rank".into(),
                None => String::new(),
            }
        );
        let culprit = source.or((victims.len() == 1).then(|| victims[0]));
        agent.detected(control::proto::Mechanism::WrongData, detail, culprit);
    }
}

#[derive(Default)]
struct Stragglers {
    /// The rank late in the last row, and in how many rows in a row.
    last: Option<(usize, u32)>,
    named: std::collections::BTreeSet<usize>,
}

/// A rank that arrives late at every call waits the least inside it: its per-iteration median is
/// far below the other ranks' (which include waiting for it). Named once per rank, after three
/// late rows in a row.
fn report_stragglers(
    agent: &control::agent::Agent,
    records: &[metrics::Record],
    seen: &mut Stragglers,
) {
    for r in records {
        let late = metrics::late_rank(&r.per_rank);
        // One noisy row is not a straggler: the same rank must be late in 3 rows in a row.
        let run = match (late, seen.last) {
            (Some((rank, ..)), Some((last, n))) if rank == last => n + 1,
            (Some(_), _) => 1,
            (None, _) => 0,
        };
        seen.last = late.map(|(rank, ..)| (rank, run));
        if let Some((rank, mine, others)) = late.filter(|_| run >= 3) {
            if seen.named.insert(rank) {
                agent.detected(
                    control::proto::Mechanism::Straggler,
                    format!(
                        "rank {rank} arrives late at {} {} B: its median time in the call is {mine:.1} us while the \
                         other ranks wait {others:.1} us for it",
                        r.op.name(),
                        r.size_bytes
                    ),
                    Some(rank),
                );
            }
        }
    }
}

fn verdict(wrong_total: u64, out: Option<&Path>) -> Outcome {
    if wrong_total == 0 {
        Outcome::Success
    } else {
        let where_ = out.map_or(String::new(), |d| {
            format!("; per-rank counts in {}", d.join("run.json").display())
        });
        Outcome::TestFailed(format!(
            "{wrong_total} wrong values in collective results{where_}"
        ))
    }
}

fn new_run_doc(
    plan: &Plan,
    world: &World,
    env: LauncherEnv,
    backend: &dyn Backend,
    ranks: Vec<RankInfo>,
    mut notes: Vec<String>,
) -> RunDoc {
    let mut hosts: Vec<report::HostEntry> = Vec::new();
    for r in &ranks {
        match hosts.iter_mut().find(|h| h.hostname == r.hostname) {
            Some(h) => h.ranks.push(r.rank),
            None => hosts.push(report::HostEntry {
                hostname: r.hostname.clone(),
                ranks: vec![r.rank],
            }),
        }
    }
    if env.launcher == bootstrap::Launcher::None && world.size == 1 {
        notes.push(
            "no launcher found, running as one process (a world of 1): bus bandwidth is 0 by definition; \
             start several ranks with `mpirun -np N collbench bench ...` or `collbench local --np N ...`"
                .to_string(),
        );
    }
    if hosts
        .iter()
        .any(|h| h.ranks.len() > std::thread::available_parallelism().map_or(1, |n| n.get()))
    {
        notes.push(
            "more ranks than cores on a host: ranks time-share cores, so times measure the scheduler as much as MPI"
                .to_string(),
        );
    }
    RunDoc {
        schema_version: report::SCHEMA_VERSION,
        collbench_version: env!("CARGO_PKG_VERSION").to_string(),
        status: RunStatus::Running,
        command_line: std::env::args().collect(),
        start_time: report::rfc3339_now(),
        end_time: None,
        launcher: world.launcher,
        world_size: world.size,
        hosts,
        ranks,
        backend: report::BackendInfo {
            name: backend.name().to_string(),
            library_version: backend.library_version(),
        },
        config: plan.sweep.clone(),
        notes,
        results: Vec::new(),
        summary: Default::default(),
        files: report::Files {
            histograms: "histograms.hlog".into(),
            progress: "progress.jsonl".into(),
        },
        error: None,
        verdict: None,
    }
}

fn local(args: LocalArgs) -> Result<Outcome, Failure> {
    if args.np == 0 {
        return Err(Failure::BadInput(
            "--np: 0 ranks run nothing; use --np 1 or more".into(),
        ));
    }
    let choice = BackendChoice::probe(args.sweep.backend);
    let resolved = choice.resolve(&args.sweep, choice.facts(args.np as u64))?;
    if let Some(t) = &args.sweep.topology {
        check_topology(t)?;
    }
    let out = args.sweep.out.clone().unwrap_or_else(default_results_dir);
    if let Some(f) = results_folder_taken(&out) {
        return Err(f);
    }
    let plan = match &args.plan {
        Some(p) => {
            let plan = control::commands::load_plan(p)?;
            control::commands::check_points(&plan, &resolved.sweep, args.np as u64)?;
            control::commands::check_privilege(&plan, args.allow_privileged, "--allow-privileged")?;
            Some(plan)
        }
        None => None,
    };
    if resolved.backend == BackendKind::Nccl {
        return local_without_mpi(&args, &resolved, plan, out);
    }
    let kind = bootstrap::local::probe_mpirun(&args.mpirun).ok_or_else(|| {
        Failure::CouldNotRun(format!(
            "--mpirun: cannot start '{}'; install OpenMPI (apt-get install openmpi-bin) or pass --mpirun PATH",
            args.mpirun.display()
        ))
    })?;
    let exe = bootstrap::local::self_exe().map_err(could_not_run)?;
    let mut sweep = args.sweep.clone();
    sweep.out = Some(out.clone());
    let mut child = vec!["bench".to_string()];
    child.extend(sweep.to_argv());
    let mut extra = args.mpirun_args.clone();
    if plan.is_some() && kind == bootstrap::local::MpirunKind::OpenMpi {
        // Ranks on other hosts get the controller's address and secret file too.
        for var in [control::proto::ENV_ADDR, control::proto::ENV_SECRET_FILE] {
            extra.extend(["-x".to_string(), var.to_string()]);
        }
    }
    let (argv, env) = bootstrap::local::mpirun_command(
        &args.mpirun,
        kind,
        args.np,
        bootstrap::local::HostFacts::probe(),
        &extra,
        &exe,
        &child,
    );
    eprintln!("# collbench local: {}", argv.join(" "));
    if let Some(plan) = plan {
        let job = control::launch::Job {
            argv,
            env,
            ranks: None,
        };
        return control::commands::run_job(
            plan,
            args.allow_privileged,
            &args.listen,
            Some(job),
            Some(out),
        );
    }
    let code = bootstrap::local::run(&argv, &env)
        .map_err(|e| could_not_run(format!("starting {}: {e}", args.mpirun.display())))?;
    job_exit(code)
}

/// `local` for NCCL: one process per rank, started by this process, which hosts the controller
/// the ranks meet through (NCCL's unique id, the results gather) and which watches them.
fn local_without_mpi(
    args: &LocalArgs,
    resolved: &Plan,
    plan: Option<plan::faults::FaultPlan>,
    out: PathBuf,
) -> Result<Outcome, Failure> {
    if !args.mpirun_args.is_empty() {
        return Err(Failure::BadInput(
            "--mpirun-arg: NCCL ranks start without mpirun here; drop --mpirun-arg, or use --backend mpi".into(),
        ));
    }
    refuse_without_mpi(resolved)?;
    let plan = match plan {
        Some(plan) => plan,
        // No faults: the controller watches the ranks and is their rendezvous; a stall counts
        // only after the ranks' own deadline.
        None => plan::faults::FaultPlan::watch_only(
            resolved
                .sweep
                .timeout
                .unwrap_or(std::time::Duration::from_secs(86_400)),
        ),
    };
    let exe = bootstrap::local::self_exe().map_err(could_not_run)?;
    let mut sweep = args.sweep.clone();
    sweep.out = Some(out.clone());
    sweep.backend = BackendArg::Nccl;
    let mut argv = vec![exe.display().to_string(), "bench".to_string()];
    argv.extend(sweep.to_argv());
    eprintln!(
        "# collbench local: {} ranks, one process each, meeting through this process: {}",
        args.np,
        argv.join(" ")
    );
    let job = control::launch::Job {
        argv,
        env: Vec::new(),
        ranks: Some(args.np),
    };
    control::commands::run_job(
        plan,
        args.allow_privileged,
        &args.listen,
        Some(job),
        Some(out),
    )
}

/// The outcome of a job of `collbench bench` ranks from its launcher's exit status.
pub fn job_exit(code: i32) -> Result<Outcome, Failure> {
    match code {
        0 => Ok(Outcome::Success),
        1 => Ok(Outcome::TestFailed(
            "a rank found wrong results, or the verdict was not ready (see above)".into(),
        )),
        2 => Err(Failure::BadInput(
            "a rank refused its arguments (see above)".into(),
        )),
        c => Err(Failure::CouldNotRun(format!(
            "the job's launcher exited with status {c} (see above)"
        ))),
    }
}
