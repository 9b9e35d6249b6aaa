//! The fault-plan entry points: `local --plan` and `controller` (a job run under a controller, with
//! the timeline merged into its results), and the hidden `lease-timer`.

use std::path::{Path, PathBuf};

use super::launch::{self, Ended, Job, RunSecret};
use super::link;
use super::proto::Addr;
use crate::cli::{ControllerArgs, LeaseTimerArgs, TimerSignal};
use crate::plan::faults::{self, FaultPlan, Target};
use crate::{Failure, Outcome};

/// Loads a plan; every error is printed, the last one becomes the failure.
pub fn load_plan(path: &Path) -> Result<FaultPlan, Failure> {
    faults::load(path).map_err(|errors| {
        let (last, rest) = errors.split_last().expect("at least one error");
        for e in rest {
            crate::say(&format!("collbench: {e}"));
        }
        Failure::BadInput(last.to_string())
    })
}

/// Refuses a fault whose start point (op, size, iteration) this sweep never reaches, and a rank
/// target beyond the world.
pub fn check_points(
    plan: &FaultPlan,
    sweep: &crate::plan::SweepPlan,
    nranks: u64,
) -> Result<(), Failure> {
    for f in &plan.faults {
        let at = |problem: String, fix: &str| {
            Failure::BadInput(format!(
                "{}:{}: fault {}: {problem}; {fix}",
                plan.file.display(),
                f.line,
                f.id
            ))
        };
        if let Target::Rank(r) = f.target {
            if r as u64 >= nranks {
                return Err(at(
                    format!("rank {r} is not in a run of {nranks} ranks"),
                    "target a rank below --np",
                ));
            }
        }
        if let faults::Start::At {
            op,
            size,
            iteration,
        } = &f.start
        {
            let sized = |bytes: u64| {
                sweep.dtypes.iter().any(|&d| {
                    crate::plan::Shape::of(*op, d, bytes, nranks).count
                        == crate::plan::Shape::of(*op, d, *size, nranks).count
                })
            };
            if !sweep.ops.contains(op) || !sweep.sizes.iter().any(|&b| sized(b)) {
                return Err(at(
                    format!(
                        "it starts at {} {} B, which this sweep never runs",
                        op.name(),
                        size
                    ),
                    "change its start, or the sweep's --op/-b/-e",
                ));
            }
            if *iteration >= sweep.iterations as u64 {
                return Err(at(
                    format!(
                        "it starts at timed iteration {iteration}, but the sweep times {} per size",
                        sweep.iterations
                    ),
                    "use an iteration below -n",
                ));
            }
        }
    }
    Ok(())
}

/// Refuses link faults without the opt-in; with it, says what will run.
pub fn check_privilege(plan: &FaultPlan, allowed: bool, flag: &str) -> Result<(), Failure> {
    let links: Vec<_> = plan.faults.iter().filter(|f| f.kind.is_link()).collect();
    if links.is_empty() {
        return Ok(());
    }
    if !allowed {
        let f = links[0];
        return Err(Failure::BadInput(format!(
            "{}:{}: fault {} ({} on {}) runs privileged commands (ip/tc/nft as root on the host); pass {flag} to allow it",
            plan.file.display(),
            f.line,
            f.id,
            f.kind.name(),
            f.target
        )));
    }
    for f in links {
        let preview = match &f.target {
            Target::Link { iface, .. } => link_preview(f, iface),
            _ => {
                "nft drop rules on the interface towards the peer host (chosen at run time)".into()
            }
        };
        crate::say(&format!(
            "# collbench: fault {} ({} on {}) will run as root on that host: {preview}",
            f.id,
            f.kind.name(),
            f.target
        ));
    }
    Ok(())
}

/// The commands a link fault on `iface` runs here, from the same conversion the agent uses.
fn link_preview(f: &faults::Fault, iface: &str) -> String {
    let spec = super::proto::LinkSpec::of(f, Some(iface.to_string()), Vec::new());
    match super::agent::link_fault(&spec) {
        Ok((fault, _)) => {
            let lease = link::Lease::new(fault, link::Where::Local);
            let daemon = lease.daemon.as_ref().map_or(String::new(), |d| {
                format!(" with `{d}` running while it holds")
            });
            format!("`{}`{daemon}, reverted by `{}`", lease.apply, lease.revert)
        }
        Err(e) => e,
    }
}

/// Runs `job` under a controller for `plan`, then writes the timeline into the results folder
/// and maps the outcome to an exit code.
pub fn run_job(
    plan: FaultPlan,
    allow_privileged: bool,
    listen: &str,
    job: Option<Job>,
    out_dir: Option<PathBuf>,
) -> Result<Outcome, Failure> {
    let addr = Addr::parse(listen).map_err(|e| Failure::BadInput(format!("--listen: {e}")))?;
    if let Addr::Tcp(a) = &addr {
        let host = a.rsplit_once(':').map_or("", |(h, _)| h);
        if host != "127.0.0.1" && host != "localhost" && host != "[::1]" {
            crate::say(&format!(
                "# collbench controller: listening beyond this host ({a}); only agents with the run's secret are admitted"
            ));
        }
    }
    let secret = RunSecret::create()
        .map_err(|e| Failure::CouldNotRun(format!("creating the run's secret: {e}")))?;
    let ended =
        launch::run(plan, allow_privileged, &addr, &secret, job).map_err(Failure::CouldNotRun)?;
    launch::print_timeline(&ended.timeline);
    let dir = out_dir.or_else(|| ended.timeline.out_dir.as_ref().map(PathBuf::from));
    let uploaded = !ended.timeline.results.is_empty();
    if uploaded {
        super::results::write(dir.as_deref(), &ended.timeline)?;
    }
    match &dir {
        Some(d) if d.join("run.json").exists() => {
            if let Err(e) = launch::merge_into_run(d, &ended.timeline, &ended) {
                crate::say(&format!("collbench: adding the fault timeline: {e}"));
            } else {
                println!(
                    "# fault timeline written to {}",
                    d.join("run.json").display()
                );
            }
        }
        Some(d) if !uploaded => crate::say(&format!(
            "collbench: no run.json in {} (rank 0 never wrote one); the timeline is only above",
            d.display()
        )),
        _ => {}
    }
    outcome(&ended)
}

fn outcome(ended: &Ended) -> Result<Outcome, Failure> {
    if let Some(s) = ended.signal {
        return Err(Failure::CouldNotRun(format!(
            "stopped by {s}; faults reverted, job torn down"
        )));
    }
    if let Some(why) = &ended.timeline.torn_down {
        return Err(Failure::CouldNotRun(format!(
            "the job was torn down: {why} (see the fault timeline)"
        )));
    }
    let first = ended
        .timeline
        .detections
        .first()
        .map_or(String::new(), |d| {
            format!(
                ": first {} at {:.3}s{}",
                d.mechanism.name(),
                d.at_s,
                d.rank.map_or(String::new(), |r| format!(" (rank {r})"))
            )
        });
    match ended.code {
        Some(c) if c != 0 && !ended.timeline.all_completed => Err(Failure::CouldNotRun(format!(
            "the job did not run to its end (status {c}){first}; see the fault timeline above"
        ))),
        Some(c) => crate::job_exit(c),
        None => Ok(Outcome::Success),
    }
}

pub fn controller(args: ControllerArgs) -> Result<Outcome, Failure> {
    let plan = load_plan(&args.plan)?;
    check_privilege(&plan, args.allow_privileged, "--allow-privileged")?;
    let job = (!args.command.is_empty()).then(|| Job {
        argv: args.command.clone(),
        env: Vec::new(),
        ranks: None,
    });
    run_job(plan, args.allow_privileged, &args.listen, job, args.results)
}

pub fn lease_timer(args: LeaseTimerArgs) -> Result<Outcome, Failure> {
    if args.pid <= 1 {
        return Err(Failure::BadInput(
            "--pid: must be a process id above 1".into(),
        ));
    }
    std::thread::sleep(std::time::Duration::from_millis(args.after_ms));
    let sig = match args.signal {
        TimerSignal::Cont => libc::SIGCONT,
        TimerSignal::Term => libc::SIGTERM,
        TimerSignal::Kill => libc::SIGKILL,
    };
    // SAFETY: kill with a validated pid and a fixed signal.
    unsafe {
        libc::kill(args.pid, sig);
    }
    Ok(Outcome::Success)
}
