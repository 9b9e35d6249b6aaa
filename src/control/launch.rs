//! Hosts a controller in this process around a job it starts (mpirun, or any launcher command):
//! the secret file, the environment the ranks read, teardown by process group, signals, the timeline.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::controller::{self, Config, JobEnd, Listener, Timeline};
use super::proto::{self, Addr};
use crate::plan::faults::FaultPlan;
use crate::report::phase::{self, Phase, Window};

/// A per-run directory holding the secret (0700 directory, 0600 file); removed on drop.
pub struct RunSecret {
    pub secret: String,
    pub dir: PathBuf,
    pub file: PathBuf,
}

impl RunSecret {
    pub fn create() -> std::io::Result<RunSecret> {
        let secret = proto::new_secret()?;
        let dir =
            std::env::temp_dir().join(format!("collbench-{}-{}", std::process::id(), &secret[..8]));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .recursive(false)
            .create(&dir)?;
        use std::os::unix::fs::DirBuilderExt;
        let file = dir.join("secret");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&file)?;
        std::io::Write::write_all(&mut f, secret.as_bytes())?;
        Ok(RunSecret { secret, dir, file })
    }
}

impl Drop for RunSecret {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The secret a rank presents: COLLBENCH_SECRET, else the file COLLBENCH_SECRET_FILE names.
pub fn secret_from_env() -> Result<String, String> {
    if let Ok(s) = std::env::var(proto::ENV_SECRET) {
        return Ok(s.trim().to_string());
    }
    match std::env::var(proto::ENV_SECRET_FILE) {
        Ok(p) => std::fs::read_to_string(&p)
            .map(|s| s.trim().to_string())
            .map_err(|e| format!("{}={p}: {e}", proto::ENV_SECRET_FILE)),
        Err(_) => Err(format!(
            "{} is set but neither {} nor {} is; the controller prints them at start",
            proto::ENV_ADDR,
            proto::ENV_SECRET,
            proto::ENV_SECRET_FILE
        )),
    }
}

pub struct Job {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Start this many copies of `argv`, one per rank, each told its rank in the environment
    /// (ranks without mpirun); None starts `argv` once (mpirun, or any launcher).
    pub ranks: Option<u32>,
}

/// A rank started one by one waits this long after another rank failed before it is stopped
/// (mpirun's rule: one rank's failure ends the job).
const RANK_FAILED_GRACE: Duration = Duration::from_secs(2);

/// What a run under the controller ended with.
pub struct Ended {
    pub timeline: Timeline,
    /// The job's exit status (128+signal when a signal ended it), or None without a job.
    pub code: Option<i32>,
    pub signal: Option<&'static str>,
}

fn kill_group(pgid: i32, sig: libc::c_int) {
    if pgid > 0 {
        // SAFETY: signals the process group this launcher created for the job.
        unsafe {
            libc::kill(-pgid, sig);
        }
    }
}

/// Binds `listen`, starts `job` (in its own process group, with the controller's address and the
/// secret file in its environment) and runs the controller until the job ends or a signal comes.
pub fn run(
    plan: FaultPlan,
    allow_privileged: bool,
    listen: &Addr,
    secret: &RunSecret,
    job: Option<Job>,
) -> Result<Ended, String> {
    raise_fd_limit();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the controller runtime: {e}"))?;
    rt.block_on(async move {
        let listener = Listener::bind(listen)
            .await
            .map_err(|e| format!("--listen {listen}: cannot listen: {e}"))?;
        let addr = listener.addr();
        crate::say(&format!(
            "# collbench controller: listening on {addr} (agents must present the run's secret)"
        ));
        let mut children: Vec<tokio::process::Child> = match &job {
            None => {
                crate::say(&format!(
                    "# collbench controller: start the ranks with {}={addr} {}={} (or --controller {addr})",
                    proto::ENV_ADDR,
                    proto::ENV_SECRET_FILE,
                    secret.file.display()
                ));
                Vec::new()
            }
            Some(job) => start(job, &addr, secret)?,
        };
        let pgid = children.first().and_then(|c| c.id()).map_or(0, |p| p as i32);
        let teardown = move || {
            kill_group(pgid, libc::SIGTERM);
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_secs(2));
                kill_group(pgid, libc::SIGKILL);
            });
        };
        let config = Config {
            plan,
            secret: secret.secret.clone(),
            allow_privileged,
            end_when_all_gone: children.is_empty(),
        };
        let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
            .map_err(|e| e.to_string())?;
        let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| e.to_string())?;
        let job_end = async {
            let exited = async {
                match children.is_empty() {
                    false => wait_all(&mut children, pgid).await,
                    true => std::future::pending().await,
                }
            };
            tokio::select! {
                c = exited => JobEnd::Exited(c),
                _ = sigint.recv() => JobEnd::Signal("SIGINT"),
                _ = sigterm.recv() => JobEnd::Signal("SIGTERM"),
            }
        };
        let (timeline, end) = controller::run(config, listener, job_end, teardown).await;
        let (code, signal) = match end {
            JobEnd::Exited(c) => (Some(c), None),
            JobEnd::Signal(s) => {
                // The controller asked the group to end; wait for it (bounded), then make sure.
                let c = match children.is_empty() {
                    false => tokio::time::timeout(
                        Duration::from_secs(5),
                        wait_all(&mut children, pgid),
                    )
                    .await
                    .ok(),
                    true => None,
                };
                (c, Some(s))
            }
        };
        // Nothing of the job may outlive it.
        kill_group(pgid, libc::SIGKILL);
        reap(&timeline.local_pids).await;
        Ok(Ended {
            timeline,
            code,
            signal,
        })
    })
}

/// Starts the job's process (or one per rank) in a new process group, with the controller's
/// address and the secret file in the environment.
fn start(job: &Job, addr: &Addr, secret: &RunSecret) -> Result<Vec<tokio::process::Child>, String> {
    let copies = job.ranks.unwrap_or(1);
    let mut children = Vec::with_capacity(copies as usize);
    for rank in 0..copies {
        let mut cmd = tokio::process::Command::new(&job.argv[0]);
        cmd.args(&job.argv[1..])
            .stdin(std::process::Stdio::null())
            .env(proto::ENV_ADDR, addr.to_string())
            .env(proto::ENV_SECRET_FILE, &secret.file)
            .env_remove(proto::ENV_SECRET)
            .process_group(
                children
                    .first()
                    .and_then(tokio::process::Child::id)
                    .unwrap_or(0) as i32,
            )
            .kill_on_drop(true);
        for (k, v) in &job.env {
            cmd.env(k, v);
        }
        if let Some(n) = job.ranks {
            let n = n.to_string();
            let r = rank.to_string();
            for (k, v) in [
                (crate::bootstrap::ENV_RANK, &r),
                (crate::bootstrap::ENV_WORLD_SIZE, &n),
                (crate::bootstrap::ENV_LOCAL_RANK, &r),
                (crate::bootstrap::ENV_LOCAL_SIZE, &n),
            ] {
                cmd.env(k, v);
            }
        }
        match cmd.spawn() {
            Ok(c) => children.push(c),
            Err(e) => {
                let pgid = children
                    .first()
                    .and_then(tokio::process::Child::id)
                    .unwrap_or(0);
                kill_group(pgid as i32, libc::SIGKILL);
                return Err(format!("starting {}: {e}", job.argv[0]));
            }
        }
    }
    Ok(children)
}

/// Waits for every process of the job. The status is the first non-zero one (in the order they
/// ended), else 0; once one process failed, the rest get RANK_FAILED_GRACE before SIGTERM and as
/// long again before SIGKILL.
async fn wait_all(children: &mut [tokio::process::Child], pgid: i32) -> i32 {
    let mut codes: Vec<Option<i32>> = vec![None; children.len()];
    let mut first_failure: Option<(i32, std::time::Instant)> = None;
    let mut termed = false;
    loop {
        for (c, code) in children.iter_mut().zip(codes.iter_mut()) {
            if code.is_none() {
                if let Ok(Some(s)) = c.try_wait() {
                    let s = status_code(s);
                    *code = Some(s);
                    if s != 0 && first_failure.is_none() {
                        first_failure = Some((s, std::time::Instant::now()));
                    }
                }
            }
        }
        if codes.iter().all(Option::is_some) {
            return first_failure.map_or(0, |(c, _)| c);
        }
        if let Some((_, at)) = first_failure {
            if children.len() > 1 && at.elapsed() > 2 * RANK_FAILED_GRACE {
                kill_group(pgid, libc::SIGKILL);
            } else if children.len() > 1 && at.elapsed() > RANK_FAILED_GRACE && !termed {
                crate::say("collbench: a rank failed; stopping the other ranks");
                kill_group(pgid, libc::SIGTERM);
                termed = true;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One descriptor per rank connection: the soft open-files limit goes up to the hard one.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on this process with a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

fn alive(pid: u32) -> bool {
    // Zombies are gone for our purpose; /proc/PID/stat's third field says Z.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .is_some_and(|zombie| !zombie)
}

/// Waits (up to 5s) for the ranks this host can signal to leave on their own, then kills what is
/// left and those ranks' MPI daemons (orted/prted parents), and waits (up to 5s) until none is left.
async fn reap(pids: &[(u32, u32)]) {
    // The ranks and their MPI daemons (a daemon outlives a killed rank until mpirun's end reaches it).
    let mut watch: Vec<u32> = Vec::new();
    for &(pid, ppid) in pids {
        watch.push(pid);
        let comm = std::fs::read_to_string(format!("/proc/{ppid}/comm")).unwrap_or_default();
        if ppid > 1 && matches!(comm.trim(), "orted" | "prted") {
            watch.push(ppid);
        }
    }
    watch.sort_unstable();
    watch.dedup();
    let t0 = std::time::Instant::now();
    while watch.iter().any(|&p| alive(p)) && t0.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let targets: Vec<u32> = watch.into_iter().filter(|&p| alive(p)).collect();
    if targets.is_empty() {
        return;
    }
    crate::say(&format!(
        "collbench controller: killing what is left of the job: pids {targets:?}"
    ));
    for &p in &targets {
        // SAFETY: a pid a rank registered (or its MPI daemon), still alive a moment ago.
        unsafe {
            libc::kill(p as libc::pid_t, libc::SIGKILL);
        }
    }
    let t0 = std::time::Instant::now();
    while targets.iter().any(|&p| alive(p)) && t0.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left: Vec<u32> = targets.into_iter().filter(|&p| alive(p)).collect();
    if !left.is_empty() {
        crate::say(&format!(
            "collbench controller: processes {left:?} of the job survived SIGKILL"
        ));
    }
}

fn status_code(s: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0))
}

/// Prints the timeline for a person, seconds since the sweep started.
pub fn print_timeline(t: &Timeline) {
    if t.faults.is_empty() && t.detections.is_empty() {
        return;
    }
    println!("# fault timeline (seconds since the sweep started)");
    for f in &t.faults {
        let when = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.3}s"));
        let sent = match (f.sent_at_s, f.applied_at_s) {
            (Some(s), Some(a)) => format!(" ({:.3}s after it was sent)", (a - s).max(0.0)),
            _ => String::new(),
        };
        println!(
            "#   fault {} {} {}: applied {}{sent}, reverted {}, outcome {}{}",
            f.id,
            f.kind,
            f.target,
            when(f.applied_at_s),
            when(f.reverted_at_s),
            f.outcome,
            f.error
                .as_ref()
                .map_or(String::new(), |e| format!(" ({e})"))
        );
        match &f.detected {
            Some(d) => println!(
                "#     detected {:.3}s after it: {} by {}{}: {}",
                d.after_s,
                d.mechanism.name(),
                d.rank
                    .map_or("the controller".into(), |r| format!("rank {r}")),
                d.host.as_ref().map_or(String::new(), |h| format!(
                    " on {h}{}",
                    controller::gpu_suffix(&d.device)
                )),
                d.detail
            ),
            None if f.applied_at_s.is_some() => println!("#     not detected"),
            None => {}
        }
    }
    if let Some(why) = &t.torn_down {
        println!("#   job torn down: {why}");
    }
}

/// Adds the timeline to the run's run.json (marking a run rank 0 never finished as failed) and
/// computes each fault's before/during/after phases from the rows.
pub fn merge_into_run(dir: &Path, t: &Timeline, ended: &Ended) -> Result<(), String> {
    let path = dir.join("run.json");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut doc: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let obj = doc
        .as_object_mut()
        .ok_or_else(|| format!("{}: not a JSON object", path.display()))?;
    if obj.get("status").and_then(|s| s.as_str()) == Some("running") {
        obj.insert("status".into(), "failed".into());
        obj.insert("end_time".into(), crate::report::rfc3339_now().into());
        let why = t.torn_down.clone().unwrap_or_else(|| {
            format!(
                "the job ended (status {}) before rank 0 finished the sweep",
                ended.code.map_or("unknown".into(), |c| c.to_string())
            )
        });
        obj.insert(
            "error".into(),
            format!("{why}; the rows measured before that are kept").into(),
        );
    }
    let results = obj.get("results").cloned().unwrap_or_default();
    let start = t.sweep_start_unix_s;
    let end_s = results
        .as_array()
        .and_then(|r| r.last())
        .and_then(|r| r.get("start_unix_s"))
        .and_then(|v| v.as_f64());
    let mut faults = serde_json::to_value(&t.faults).map_err(|e| e.to_string())?;
    if let (Some(start), Some(arr)) = (start, faults.as_array_mut()) {
        for f in arr {
            let time = |k: &str| f.get(k).and_then(|v| v.as_f64());
            if let Some(a) = time("applied_at_s") {
                let r = time("reverted_at_s")
                    .or(end_s.map(|e| e - start + 1.0))
                    .unwrap_or(f64::MAX);
                let at = |k: &str| time(k).map(|v| start + v);
                let window = Window::of(
                    at("sent_at_s"),
                    start + a,
                    at("revert_began_at_s"),
                    Some(start + r),
                    f64::MAX,
                );
                let (p, row) = phases(&results, &window);
                f["phases"] = p;
                f["phase_row"] = row;
            }
        }
    }
    if t.faults.iter().any(|f| {
        matches!(
            f.kind.as_str(),
            "down" | "loss" | "rate" | "partition" | "flap" | "delay"
        )
    }) {
        if let Some(notes) = obj.get_mut("notes").and_then(|n| n.as_array_mut()) {
            notes.push(
                "link faults act on the hosts' kernel network interfaces (ip, tc, nftables): they impair TCP/IP \
                 traffic only; RDMA (InfiniBand, RoCE) bypasses them, so on such fabrics take the port down or \
                 remove NCCL transports instead"
                    .into(),
            );
        }
    }
    obj.insert("faults".into(), faults);
    obj.insert(
        "detections".into(),
        serde_json::to_value(&t.detections).map_err(|e| e.to_string())?,
    );
    obj.insert("sweep_start_unix_s".into(), start.into());
    obj.insert(
        "job".into(),
        serde_json::json!({
            "exit_code": ended.code,
            "signal": ended.signal,
            "torn_down": t.torn_down,
            "refused_connections": t.refused,
        }),
    );
    let bytes = serde_json::to_vec_pretty(&doc).map_err(|e| e.to_string())?;
    crate::report::outputs::write_atomic(&path, &bytes)
        .map_err(|e| format!("writing {}: {e}", path.display()))?;
    let loaded = crate::report::read::load(dir).map_err(|e| e.to_string())?;
    crate::report::outputs::write_all(&loaded, &Default::default())
        .map_err(|e| format!("writing reports into {}: {e}", dir.display()))?;
    Ok(())
}

/// p50, p99 (medians over rows) and busbw (median) of the rows measured before, during and after
/// the fault, for one (op, dtype, redop, size, placement), so phases compare like with like: the
/// one with the most rows in its thinnest phase (a fault a single slow row spans may hold no row
/// of the commonest key), then the most rows. A row is placed by its middle (from its start to
/// the next row's): a slow row that starts just as the fault is applied is during it, and a row
/// whose middle falls while the fault is being applied or reverted is in no phase.
fn phases(results: &serde_json::Value, w: &Window) -> (serde_json::Value, serde_json::Value) {
    let rows: Vec<&serde_json::Value> = results
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let placed: Vec<Phase> = phase::middles(
        &rows
            .iter()
            .map(|r| r["start_unix_s"].as_f64().unwrap_or(0.0))
            .collect::<Vec<_>>(),
    )
    .into_iter()
    .map(|t| w.place(t))
    .collect();
    let text = |r: &serde_json::Value, k: &str| r[k].as_str().unwrap_or("").to_string();
    let key = |r: &serde_json::Value| {
        (
            text(r, "op"),
            text(r, "dtype"),
            text(r, "redop"),
            r["size_bytes"].as_u64().unwrap_or(0),
            text(r, "placement"),
        )
    };
    const SHOWN: [Phase; 3] = [Phase::Before, Phase::During, Phase::After];
    let mut counts: BTreeMap<_, [usize; 4]> = BTreeMap::new();
    for (r, p) in rows.iter().zip(&placed) {
        let c = counts.entry(key(r)).or_default();
        c[3] += 1;
        if let Some(i) = SHOWN.iter().position(|s| s == p) {
            c[i] += 1;
        }
    }
    let Some(best) = counts
        .iter()
        .max_by_key(|(k, c)| (c[..3].iter().min().copied(), c[3], k.3))
        .map(|(k, _)| k.clone())
    else {
        return (serde_json::json!({}), serde_json::Value::Null);
    };
    let median = |mut v: Vec<f64>| -> Option<f64> {
        if v.is_empty() {
            return None;
        }
        v.sort_by(|a, b| a.total_cmp(b));
        Some(v[v.len() / 2])
    };
    let mut out = serde_json::Map::new();
    for want in SHOWN {
        let sel: Vec<&serde_json::Value> = rows
            .iter()
            .zip(&placed)
            .filter(|(r, &p)| key(r) == best && p == want)
            .map(|(r, _)| *r)
            .collect();
        if sel.is_empty() {
            continue;
        }
        let get = |f: &dyn Fn(&serde_json::Value) -> Option<f64>| {
            median(sel.iter().filter_map(|r| f(r)).collect())
        };
        out.insert(
            want.name().into(),
            serde_json::json!({
                "rows": sel.len(),
                "p50_us": get(&|r| r["latency"]["p50_us"].as_f64()),
                "p99_us": get(&|r| r["latency"]["p99_us"].as_f64()),
                "busbw_gbps": get(&|r| r["busbw_gbps"].as_f64()),
            }),
        );
    }
    (
        serde_json::Value::Object(out),
        serde_json::json!({
            "op": best.0, "dtype": best.1, "redop": best.2, "size_bytes": best.3, "placement": best.4,
        }),
    )
}

use std::collections::BTreeMap;

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows of one key: (start, p50).
    fn rows(r: &[(f64, f64)]) -> serde_json::Value {
        r.iter()
            .map(|&(t, p50)| {
                serde_json::json!({
                    "op": "all_reduce", "size_bytes": 8, "placement": "out_of_place",
                    "start_unix_s": t, "busbw_gbps": 1.0,
                    "latency": {"p50_us": p50, "p99_us": p50},
                })
            })
            .collect()
    }

    fn phase_rows(p: &serde_json::Value, name: &str) -> u64 {
        p[name]["rows"].as_u64().unwrap_or(0)
    }

    #[test]
    fn rows_go_by_their_middle_and_the_apply_and_revert_spans_count_nowhere() {
        // Sent at 10, in effect at 10.2, revert began at 20 and was done at 21.
        let w = Window {
            before_end: 10.0,
            from: 10.2,
            to: 20.0,
            after_start: 21.0,
        };
        let results = rows(&[
            (8.0, 1.0),
            (9.0, 1.0),
            // Starts before the fault is in effect, but runs slow through it: during.
            (10.1, 900.0),
            (16.0, 900.0),
            // Fast rows while the revert runs: in no phase.
            (20.1, 1.0),
            (20.5, 1.0),
            (21.5, 1.0),
            (22.0, 1.0),
        ]);
        let (p, row) = phases(&results, &w);
        assert_eq!(row["size_bytes"], 8);
        assert_eq!(phase_rows(&p, "before"), 2, "{p}");
        assert_eq!(phase_rows(&p, "during"), 2, "{p}");
        assert_eq!(p["during"]["p50_us"], 900.0, "{p}");
        // 20.5 ends at 21.5: its middle is 21.0, after the revert.
        assert_eq!(phase_rows(&p, "after"), 3, "{p}");
    }

    #[test]
    fn the_key_with_rows_in_every_phase_is_chosen_when_one_row_spans_the_fault() {
        // Out-of-place and in-place alternate; the in-place row at 10.1 runs until 20.5, so no
        // out-of-place row is during the fault, though that placement has one row more.
        let row = |t: f64, placement: &str, p50: f64| {
            serde_json::json!({
                "op": "all_reduce", "dtype": "float", "redop": "sum", "size_bytes": 65536,
                "placement": placement, "start_unix_s": t, "busbw_gbps": 1.0,
                "latency": {"p50_us": p50, "p99_us": p50},
            })
        };
        let results = serde_json::json!([
            row(9.0, "out_of_place", 1.0),
            row(9.5, "in_place", 1.0),
            row(10.0, "out_of_place", 1.0),
            row(10.1, "in_place", 3e6),
            row(20.5, "out_of_place", 1.0),
            row(21.0, "in_place", 1.0),
            row(21.5, "out_of_place", 1.0),
        ]);
        let w = Window::of(Some(10.05), 10.06, Some(19.0), Some(19.1), f64::MAX);
        let (p, row) = phases(&results, &w);
        assert_eq!(row["placement"], "in_place", "{row}");
        assert_eq!(row["dtype"], "float", "{row}");
        assert_eq!(phase_rows(&p, "during"), 1, "{p}");
        assert_eq!(p["during"]["p99_us"], 3e6, "{p}");
        assert_eq!(phase_rows(&p, "before"), 1, "{p}");
        assert_eq!(phase_rows(&p, "after"), 1, "{p}");
    }

    #[test]
    fn a_row_in_the_middle_of_applying_counts_in_no_phase() {
        let w = Window {
            before_end: 10.0,
            from: 12.0,
            to: 20.0,
            after_start: 20.0,
        };
        let (p, _) = phases(
            &rows(&[(9.0, 1.0), (10.5, 1.0), (11.5, 5.0), (13.0, 5.0)]),
            &w,
        );
        // 9.0 ends at 10.5 (middle 9.75): before. 10.5 (middle 11.0): applying. 11.5 (12.25)
        // and the last row (13.0, no next row: its start) are during.
        assert_eq!(phase_rows(&p, "before"), 1, "{p}");
        assert_eq!(phase_rows(&p, "during"), 2, "{p}");
        assert!(p.get("after").is_none(), "{p}");
    }
}
