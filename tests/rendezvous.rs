//! Ranks without MPI: the controller's rendezvous (a real controller, real agents over a unix
//! socket, one thread per rank) and the launcher that starts one process per rank.

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use collbench::bootstrap::group::{Extreme, Group};
use collbench::bootstrap::{Launcher, LauncherEnv, World};
use collbench::control::agent::{Agent, Identity};
use collbench::control::launch::{self, Ended, Job, RunSecret};
use collbench::control::proto::{Addr, ExchangeOp};
use collbench::control::rendezvous::Rendezvous;
use collbench::plan::faults::FaultPlan;
use collbench::runner::watchdog::Progress;

struct Controller {
    addr: Addr,
    secret: String,
    thread: JoinHandle<Ended>,
    _dir: tempfile::TempDir,
}

fn controller() -> Controller {
    let dir = tempfile::tempdir().unwrap();
    let addr = Addr::Unix(dir.path().join("c.sock"));
    let run_secret = RunSecret::create().unwrap();
    let secret = run_secret.secret.clone();
    let a = addr.clone();
    let thread = std::thread::spawn(move || {
        let plan = FaultPlan::watch_only(Duration::from_secs(60));
        launch::run(plan, false, &a, &run_secret, None).unwrap()
    });
    let Addr::Unix(p) = &addr else { unreachable!() };
    let t0 = Instant::now();
    while !p.exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "controller never listened"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    Controller {
        addr,
        secret,
        thread,
        _dir: dir,
    }
}

fn join(addr: &Addr, secret: &str, rank: usize, world: usize) -> (Agent, World) {
    let identity = Identity {
        rank,
        world_size: world,
        host: "rendezvous-test".into(),
        local_rank: rank,
        device: None,
        out_dir: None,
    };
    let agent = Agent::start(addr, secret, identity, Progress::new()).unwrap();
    let env = LauncherEnv {
        launcher: Launcher::Collbench,
        rank: Some(rank),
        world: Some(world),
        local_rank: Some(rank),
        local_size: Some(world),
    };
    let w = World::without_mpi(env, Rendezvous::new(agent.shared()));
    (agent, w)
}

/// Runs `body` as `world` ranks, each in its thread with its own agent; returns what each gave.
fn ranks<T: Send + 'static>(
    c: &Controller,
    world: usize,
    body: impl Fn(usize, &Group, Agent) -> T + Send + Sync + Clone + 'static,
) -> Vec<T> {
    let threads: Vec<_> = (0..world)
        .map(|rank| {
            let (addr, secret, body) = (c.addr.clone(), c.secret.clone(), body.clone());
            std::thread::spawn(move || {
                let (agent, w) = join(&addr, &secret, rank, world);
                assert_eq!((w.rank, w.size), (rank, world));
                body(rank, w.group(), agent)
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

#[test]
fn every_collective_gives_the_exact_answer_on_every_rank() {
    let c = controller();
    let n = 4;
    ranks(&c, n, move |rank, g, agent| {
        assert_eq!(g.allreduce_sum_u64(rank as u64 + 1).unwrap(), 10);

        let mine = vec![rank as u8; rank + 1];
        match g.gather_bytes(2, &mine).unwrap() {
            Some(all) => {
                assert_eq!(rank, 2);
                let want: Vec<Vec<u8>> = (0..n).map(|r| vec![r as u8; r + 1]).collect();
                assert_eq!(all, want);
            }
            None => assert_ne!(rank, 2),
        }

        let mut b = if rank == 1 {
            b"from one".to_vec()
        } else {
            b"junk".to_vec()
        };
        g.bcast_bytes(1, &mut b).unwrap();
        assert_eq!(b, b"from one");

        // Longer than one frame's chunk, so it travels in several exchanges.
        let len = 150_000;
        let values: Vec<u64> = (0..len)
            .map(|i| (i as u64) * (rank as u64 + 1) + (rank as u64 % 2))
            .collect();
        let max = g.reduce_u64(0, &values, Extreme::Max).unwrap();
        let min = g.reduce_u64(3, &values, Extreme::Min).unwrap();
        if rank == 0 {
            let max = max.unwrap();
            assert_eq!(max.len(), len);
            assert!((0..len).all(|i| max[i] == (i as u64) * n as u64 + 1));
        } else {
            assert!(max.is_none());
        }
        if rank == 3 {
            let min = min.unwrap();
            assert!((0..len).all(|i| min[i] == i as u64));
        }
        g.barrier().unwrap();
        agent.finish("complete");
    });
    let ended = c.thread.join().unwrap();
    assert_eq!(ended.timeline.registered, n);
    assert!(
        ended.timeline.detections.is_empty(),
        "{:?}",
        ended.timeline.detections
    );
}

#[test]
fn a_rank_that_leaves_fails_the_exchange_for_the_others_at_once() {
    let c = controller();
    let started = Instant::now();
    let errors = ranks(&c, 3, move |rank, g, agent| {
        if rank == 2 {
            agent.finish("leaving early");
            return None;
        }
        let got = g.allreduce_sum_u64(1);
        agent.finish("complete");
        Some(got.unwrap_err().to_string())
    });
    assert!(started.elapsed() < Duration::from_secs(10));
    for e in errors.into_iter().flatten() {
        assert!(e.contains("rank 2 left"), "{e}");
    }
    c.thread.join().unwrap();
}

#[test]
fn ranks_out_of_step_all_get_the_error() {
    let c = controller();
    let errors = ranks(&c, 2, move |rank, g, agent| {
        let r = match (rank, g) {
            (0, Group::Controller(r)) => r.exchange(ExchangeOp::Bcast { root: 0 }, b"x"),
            (_, Group::Controller(r)) => r.exchange(ExchangeOp::AllGather, b"y"),
            _ => unreachable!("a world without MPI meets through the controller"),
        };
        agent.finish("complete");
        r.unwrap_err()
    });
    for e in errors {
        assert!(e.contains("out of step"), "{e}");
    }
    c.thread.join().unwrap();
}

fn job(script: &str, ranks: u32) -> Job {
    Job {
        argv: vec!["sh".into(), "-c".into(), script.into()],
        env: Vec::new(),
        ranks: Some(ranks),
    }
}

fn run_job(job: Job) -> Ended {
    let dir = tempfile::tempdir().unwrap();
    let addr = Addr::Unix(dir.path().join("c.sock"));
    let secret = RunSecret::create().unwrap();
    let plan = FaultPlan::watch_only(Duration::from_secs(60));
    launch::run(plan, false, &addr, &secret, Some(job)).unwrap()
}

#[test]
fn the_launcher_starts_one_process_per_rank_with_its_rank() {
    let dir = tempfile::tempdir().unwrap();
    let script = format!(
        "echo \"$COLLBENCH_RANK $COLLBENCH_WORLD_SIZE $COLLBENCH_LOCAL_RANK $COLLBENCH_LOCAL_SIZE\" > {}/rank-$COLLBENCH_RANK; \
         test -n \"$COLLBENCH_CONTROLLER\" && test -r \"$COLLBENCH_SECRET_FILE\"",
        dir.path().display()
    );
    let ended = run_job(job(&script, 3));
    assert_eq!(ended.code, Some(0));
    for r in 0..3 {
        let text = std::fs::read_to_string(dir.path().join(format!("rank-{r}"))).unwrap();
        assert_eq!(text.trim(), format!("{r} 3 {r} 3"));
    }
}

#[test]
fn one_failed_rank_ends_the_others_and_gives_its_status() {
    // Rank 1 fails; the others would sleep for a minute (a duration no other test uses).
    let marker = format!("sleep 60.{}", std::process::id());
    let script = format!("if [ \"$COLLBENCH_RANK\" = 1 ]; then exit 3; fi; {marker}");
    let started = Instant::now();
    let ended = run_job(job(&script, 3));
    assert_eq!(ended.code, Some(3));
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    let left = std::process::Command::new("pgrep")
        .args(["-f", &marker])
        .output()
        .unwrap();
    assert!(
        left.stdout.is_empty(),
        "left running: {}",
        String::from_utf8_lossy(&left.stdout)
    );
}

fn bench_without_mpirun(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_collbench"))
        .arg("bench")
        .args(args)
        .env("COLLBENCH_RANK", "0")
        .env("COLLBENCH_WORLD_SIZE", "2")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_rank_started_without_mpirun_needs_a_controller_and_nccl() {
    let (code, err) = bench_without_mpirun(&["-b", "8", "-e", "8"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("no controller") && err.contains("--controller"),
        "{err}"
    );

    let (code, err) = bench_without_mpirun(
        &[
            "--backend",
            "mpi",
            "--controller",
            "127.0.0.1:9",
            "-b",
            "8",
            "-e",
            "8",
        ],
        &[("COLLBENCH_SECRET", "x")],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--backend mpi") && err.contains("mpirun"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}
