//! Runs the real collbench binary, alone or under the real mpirun, and reads what it wrote.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The binary under test: COLLBENCH_BIN when set (a prebuilt binary on another machine, as
/// scripts/gpu-check.sh runs these tests), else the one cargo built.
pub fn exe() -> String {
    std::env::var("COLLBENCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_collbench").to_string())
}

/// mpirun flags for N ranks on this (possibly 2-core, possibly root) machine.
pub fn mpirun(np: usize) -> Command {
    let mut c = Command::new("mpirun");
    c.args([
        "-np",
        &np.to_string(),
        "--oversubscribe",
        "--bind-to",
        "none",
    ])
    .args(["--mca", "mpi_yield_when_idle", "1"])
    .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
    .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    .stdin(Stdio::null());
    c.arg(exe());
    c
}

pub fn bench_mpi(np: usize, args: &[&str]) -> Output {
    mpirun(np)
        .arg("bench")
        .args(args)
        .output()
        .expect("start mpirun")
}

pub fn collbench(args: &[&str]) -> Output {
    Command::new(exe())
        .args(args)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .stdin(Stdio::null())
        .output()
        .expect("start collbench")
}

pub fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

pub fn out_dir(tmp: &tempfile::TempDir, name: &str) -> PathBuf {
    tmp.path().join(name)
}

/// A fresh temporary folder and a not-yet-existing results folder inside it.
pub fn fresh_out() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let out = tmp.path().join("run");
    (tmp, out)
}

/// Asserts the exit code (printing both streams when it differs) and returns the streams.
pub fn expect_code(o: &Output, code: i32) -> (String, String) {
    let (stdout, stderr) = text(o);
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    (stdout, stderr)
}

pub fn read_run(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("run.json")).expect("run.json exists");
    serde_json::from_str(&text).expect("run.json is JSON")
}

/// Validates a run document against the checked-in schema; panics with every violation.
pub fn assert_schema_valid(doc: &serde_json::Value) {
    let mut schema_path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("results/schema/run.v1.schema.json");
    if !schema_path.exists() {
        // A test binary copied to another checkout runs from that checkout's root.
        schema_path = PathBuf::from("results/schema/run.v1.schema.json");
    }
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(schema_path).expect("schema file"))
            .expect("schema JSON");
    let validator = jsonschema::validator_for(&schema).expect("schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(doc)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(
        errors.is_empty(),
        "run.json violates the schema:\n{}",
        errors.join("\n")
    );
}

/// Data rows of the table (lines that start with a number after spaces).
pub fn table_rows(stdout: &str) -> Vec<Vec<String>> {
    stdout
        .lines()
        .filter(|l| {
            l.trim_start()
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_digit())
        })
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

pub fn wait_for(what: &str, limit: std::time::Duration, mut ok: impl FnMut() -> bool) {
    let t = std::time::Instant::now();
    while !ok() {
        assert!(t.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

pub fn progress_lines(dir: &std::path::Path) -> usize {
    std::fs::read_to_string(dir.join("progress.jsonl")).map_or(0, |s| s.lines().count())
}

/// Processes whose command line mentions `needle` (our unique results folder).
pub fn processes_mentioning(needle: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        if let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) {
            if String::from_utf8_lossy(&cmd).contains(needle) {
                pids.push(pid);
            }
        }
    }
    pids
}

/// Heartbeats and deadlines short enough for tests.
pub const FAST_WATCH: &str = "[run]\nheartbeat = \"200ms\"\nheartbeat_timeout = \"1s\"\nstall = \"2s\"\nabort_after = \"3s\"\n";

/// A fault plan file in `dir`: FAST_WATCH, then `faults`.
pub fn plan(dir: &Path, faults: &str) -> PathBuf {
    let p = dir.join("plan.toml");
    std::fs::write(&p, format!("{FAST_WATCH}\n{faults}")).unwrap();
    p
}

/// `collbench local --np N` with the plan and a 1 KiB sweep, plus `extra` flags.
pub fn local_with_plan(np: &str, plan: &Path, out: &Path, extra: &[&str]) -> (i32, String) {
    let mut args = vec![
        "local",
        "--np",
        np,
        "-b",
        "1K",
        "-e",
        "1K",
        "-n",
        "30",
        "--plan",
        plan.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let o = collbench(&args);
    let (stdout, stderr) = text(&o);
    (o.status.code().unwrap_or(-1), format!("{stdout}\n{stderr}"))
}

/// Waits (up to 15 s) until no process mentions the results folder.
pub fn no_process_left(out: &Path) {
    let needle = out.to_str().unwrap().to_string();
    wait_for(
        "every rank gone",
        std::time::Duration::from_secs(15),
        || processes_mentioning(&needle).is_empty(),
    );
}

/// A standalone `collbench controller` for simulated agents: its stderr is collected, its
/// address and the run's secret are read from the line it prints.
pub struct Controller {
    pub child: std::process::Child,
    said: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    pub addr: String,
    pub secret: String,
}

impl Controller {
    /// Starts it on 127.0.0.1 with `plan` (TOML text) and `extra` arguments.
    pub fn start(dir: &Path, plan: &str, extra: &[&str]) -> Controller {
        use std::io::BufRead;
        let plan_path = dir.join("plan.toml");
        std::fs::write(&plan_path, plan).unwrap();
        let mut child = Command::new(exe())
            .args(["controller", "--plan"])
            .arg(&plan_path)
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let said = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let err = child.stderr.take().unwrap();
        let lines = said.clone();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
        let mut c = Controller {
            child,
            said,
            reader: Some(reader),
            addr: String::new(),
            secret: String::new(),
        };
        wait_for(
            "the controller to listen",
            std::time::Duration::from_secs(20),
            || c.find("COLLBENCH_SECRET_FILE=").is_some(),
        );
        let line = c.find("COLLBENCH_SECRET_FILE=").unwrap();
        let value = |key: &str| {
            line.split(key)
                .nth(1)
                .and_then(|x| x.split_whitespace().next())
                .unwrap()
                .to_string()
        };
        c.addr = value("COLLBENCH_CONTROLLER=");
        c.secret = std::fs::read_to_string(value("COLLBENCH_SECRET_FILE="))
            .unwrap()
            .trim()
            .to_string();
        c
    }

    /// The first line of its stderr so far that contains `pat`.
    pub fn find(&self, pat: &str) -> Option<String> {
        self.said
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.contains(pat))
            .cloned()
    }

    pub fn said(&self) -> String {
        self.said.lock().unwrap().join("\n")
    }

    /// Waits for it to end: (exit code, stdout, stderr).
    pub fn finish(mut self) -> (Option<i32>, String, String) {
        use std::io::Read;
        let mut stdout = String::new();
        if let Some(mut o) = self.child.stdout.take() {
            let _ = o.read_to_string(&mut stdout);
        }
        let code = self.child.wait().unwrap().code();
        if let Some(r) = self.reader.take() {
            r.join().unwrap();
        }
        (code, stdout, self.said())
    }
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Returns from the test, saying why, when it does not run as root (network namespaces).
#[allow(unused_macros)]
macro_rules! need_root {
    () => {
        if !common::is_root() {
            eprintln!("SKIP: this test needs root (network namespaces); CI runs it as root");
            return;
        }
    };
}

pub fn vcluster() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/vcluster")
}

/// A unique prefix per test process and cluster: t + pid + counter, at most 8 characters.
pub fn unique_prefix() -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut id = std::process::id() as u64 * 36 + n as u64 % 36;
    let mut s = String::new();
    while id > 0 {
        s.insert(0, char::from_digit((id % 36) as u32, 36).unwrap());
        id /= 36;
    }
    format!("t{}", &s[s.len().saturating_sub(7)..])
}

/// A virtual cluster (scripts/vcluster: network namespaces, veths, a bridge) that is torn down
/// when dropped, also when the test panics.
pub struct Cluster {
    pub prefix: String,
}

impl Cluster {
    pub fn up(hosts: usize) -> Cluster {
        let prefix = unique_prefix();
        // A cluster left by an earlier process with the same id would block this one.
        let _ = Command::new(vcluster())
            .args(["down", "--prefix", &prefix])
            .stdin(Stdio::null())
            .output();
        let c = Cluster { prefix };
        let o = c.vcluster(&["up", &hosts.to_string()]);
        assert!(o.status.success(), "vcluster up failed: {:?}", text(&o));
        c
    }

    pub fn host(&self, i: usize) -> String {
        format!("{}-h{i}", self.prefix)
    }

    /// `vcluster SUB --prefix P ARGS...`: the prefix goes before what the subcommand passes on.
    pub fn vcluster(&self, args: &[&str]) -> Output {
        Command::new(vcluster())
            .arg(args[0])
            .args(["--prefix", &self.prefix])
            .args(&args[1..])
            .stdin(Stdio::null())
            .output()
            .expect("start vcluster")
    }

    /// What follows `vcluster` to run `collbench bench ARGS` on `np` ranks, one host after the
    /// other (`--map-by node`), with the variables in `export` passed on to every rank.
    pub fn bench_argv(&self, np: usize, export: &[&str], args: &[&str]) -> Vec<String> {
        let mut argv: Vec<String> = ["mpirun", "--prefix", &self.prefix]
            .into_iter()
            .map(String::from)
            .collect();
        argv.extend([
            "-np".into(),
            np.to_string(),
            "--map-by".into(),
            "node".into(),
        ]);
        for var in export {
            argv.extend(["-x".into(), var.to_string()]);
        }
        argv.extend([exe(), "bench".into()]);
        argv.extend(args.iter().map(|a| a.to_string()));
        argv
    }

    /// `collbench bench ARGS` on `np` ranks, one host after the other.
    pub fn bench(&self, np: usize, args: &[&str]) -> Output {
        Command::new(vcluster())
            .args(self.bench_argv(np, &[], args))
            .stdin(Stdio::null())
            .output()
            .expect("start vcluster")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let o = self.vcluster(&["down"]);
        if !o.status.success() {
            eprintln!("vcluster down failed: {}", text(&o).1);
        }
    }
}
