//! The nccl backend through the real binary: without NCCL or a GPU it refuses in one line with
//! exit 3 (alone and under mpirun), `auto` falls back to MPI and says why; with a GPU (tests named
//! `gpu_*`, skipped with the reason printed unless COLLBENCH_REQUIRE_GPU=1) it sweeps correctly,
//! shares one GPU among ranks, catches corrupt data and reports a stopped rank instead of hanging.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A library path that cannot exist, so NCCL is absent whatever this machine has.
const NO_NCCL: &str = "/nonexistent/collbench-test/libnccl.so.2";

fn collbench_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.starts_with("collbench:"))
        .collect()
}

fn assert_missing_nccl_message(line: &str) {
    assert!(
        line.starts_with("collbench: could not run: --backend nccl on "),
        "{line}"
    );
    assert!(
        line.contains(NO_NCCL) && line.contains("could not be loaded"),
        "{line}"
    );
    assert!(
        line.contains("LD_LIBRARY_PATH=/path/to/site-packages/nvidia/nccl/lib"),
        "{line}"
    );
}

#[test]
fn missing_nccl_is_one_line_and_could_not_run() {
    let (_tmp, out) = fresh_out();
    let o = Command::new(exe())
        .args(["bench", "--backend", "nccl", "-b", "8", "-e", "1K", "--out"])
        .arg(&out)
        .env("COLLBENCH_NCCL_LIB", NO_NCCL)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let (stdout, stderr) = expect_code(&o, 3);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert_missing_nccl_message(stderr.trim_end());
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        !out.exists(),
        "nothing is written when the run cannot start"
    );
}

#[test]
fn missing_nccl_under_mpirun_ends_every_rank_with_could_not_run() {
    let (_tmp, out) = fresh_out();
    let o = mpirun(2)
        .env("COLLBENCH_NCCL_LIB", NO_NCCL)
        .args(["bench", "--backend", "nccl", "-b", "8", "-e", "1K", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let (_, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(3), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let lines = collbench_lines(&stderr);
    assert!(!lines.is_empty() && lines.len() <= 2, "{stderr}");
    for l in lines {
        assert_missing_nccl_message(l);
    }
}

#[test]
fn auto_without_nccl_runs_mpi_and_says_why() {
    let (_tmp, out) = fresh_out();
    let o = mpirun(2)
        .env("COLLBENCH_NCCL_LIB", NO_NCCL)
        .args([
            "bench",
            "--backend",
            "auto",
            "-b",
            "8",
            "-e",
            "64",
            "--op",
            "all_reduce",
            "--a2a-call",
            "alltoall",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    let (stdout, _) = expect_code(&o, 0);
    let doc = read_run(&out);
    assert_schema_valid(&doc);
    assert_eq!(doc["backend"]["name"], "mpi");
    assert!(
        stdout.contains("# note: --a2a-call applies to the nccl backend only and was not used"),
        "{stdout}"
    );
    let notes: Vec<&str> = doc["notes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n.as_str())
        .collect();
    let note = notes
        .iter()
        .find(|n| n.starts_with("--backend auto chose MPI: "))
        .unwrap_or_else(|| panic!("no auto note in {notes:?}"));
    assert!(note.contains(NO_NCCL), "{note}");
    assert!(
        stdout.contains("# note: --backend auto chose MPI"),
        "{stdout}"
    );
    assert!(doc["ranks"][0].get("gpu").is_none());
}

#[test]
fn auto_without_nccl_refuses_half_and_names_the_reason() {
    let o = Command::new(exe())
        .args(["bench", "-d", "half", "-b", "8", "-e", "1K"])
        .env("COLLBENCH_NCCL_LIB", NO_NCCL)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let (_, stderr) = expect_code(&o, 2);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("collbench: -d/--datatype: the MPI backend has no half type"));
    assert!(stderr.contains("--backend auto chose MPI"), "{stderr}");
}

#[test]
fn nccl_only_flags_with_mpi_are_bad_input() {
    for (flag, value) in [("--gpu", "0"), ("--a2a-call", "alltoall")] {
        let o = collbench(&["bench", "--backend", "mpi", flag, value]);
        let (_, stderr) = expect_code(&o, 2);
        assert!(
            stderr.starts_with(&format!("collbench: {flag}: ")),
            "{stderr}"
        );
        assert_eq!(stderr.lines().count(), 1);
    }
}

/// With a real libnccl.so.2 loadable (LD_LIBRARY_PATH or COLLBENCH_NCCL_LIB, e.g. from
/// `pip download nvidia-nccl-cu12`), NCCL's own calls work without a GPU, and the refusal
/// names only what is still missing.
#[test]
fn real_nccl_loads_and_reports_errors_by_name() {
    let nccl = match collbench::ffi::nccl::Nccl::load() {
        Ok(n) => n,
        Err(e) => {
            skip(&format!("no libnccl.so.2 to load ({e})"));
            return;
        }
    };
    let v = nccl.version().unwrap();
    assert!(v >= 21400, "{v}");
    assert_eq!(
        nccl.has_alltoall(),
        v >= 22800,
        "ncclAlltoAll came with 2.28 ({v})"
    );
    let id = nccl.unique_id().unwrap();
    assert!(id.iter().any(|&b| b != 0));
    if collbench::ffi::cuda::probe_driver().is_ok() {
        skip("the no-GPU half: this host has an NVIDIA driver");
        return;
    }
    let e =
        collbench::ffi::nccl::Comm::init(nccl, 1, 0, &id, Some(Duration::from_secs(10)), &|| {})
            .err()
            .expect("no GPU, so no communicator");
    assert!(e.starts_with("ncclCommInitRankConfig: nccl"), "{e}");
    let o = collbench(&["bench", "--backend", "nccl", "-b", "8", "-e", "1K"]);
    let (_, stderr) = expect_code(&o, 3);
    assert!(stderr.contains("libcuda.so.1"), "{stderr}");
    assert!(!stderr.contains("libnccl.so.2 not found"), "{stderr}");
}

/// Says why a test returns early, on the terminal even while cargo captures test output.
fn skip(why: &str) {
    let _ = writeln!(std::io::stderr(), "skipped: {why}");
}

/// Whether a GPU and NCCL are here; otherwise says why the test is skipped (or fails, when
/// COLLBENCH_REQUIRE_GPU=1 as scripts/gpu-check.sh sets it).
fn gpu_present() -> bool {
    match collbench::bootstrap::gpu::probe() {
        Ok(_) => true,
        Err(e) => {
            if std::env::var("COLLBENCH_REQUIRE_GPU").is_ok_and(|v| v == "1") {
                panic!("COLLBENCH_REQUIRE_GPU=1 but the nccl backend cannot run here: {e}");
            }
            skip(&format!("no GPU or NCCL ({e})"));
            false
        }
    }
}

fn records(doc: &serde_json::Value) -> &Vec<serde_json::Value> {
    doc["results"].as_array().unwrap()
}

#[test]
fn gpu_one_rank_sweep_is_correct_in_every_type_and_op() {
    if !gpu_present() {
        return;
    }
    let (_tmp, out) = fresh_out();
    let o = Command::new(exe())
        .args([
            "bench",
            "--backend",
            "nccl",
            "-b",
            "8",
            "-e",
            "1M",
            "-f",
            "8",
            "-d",
            "all",
            "-o",
            "all",
            "-n",
            "3",
            "-w",
            "1",
            "--out",
        ])
        .arg(&out)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let (stdout, _) = expect_code(&o, 0);
    let doc = read_run(&out);
    assert_schema_valid(&doc);
    assert_eq!(doc["backend"]["name"], "nccl");
    assert!(doc["backend"]["library_version"]
        .as_str()
        .unwrap()
        .starts_with("NCCL 2."));
    assert_eq!(doc["ranks"][0]["gpu"], 0);
    assert!(doc["ranks"][0]["pci_bus_id"].is_string());
    assert!(stdout.contains("Group  0 Pid"), "{stdout}");
    assert!(stdout.contains("device  0 ["), "{stdout}");
    // 10 types x 5 ops all-reduce + 10 types all-to-all, 6 sizes (8 B .. 256 KiB), 2 placements.
    assert_eq!(doc["config"]["sizes"].as_array().unwrap().len(), 6);
    assert_eq!(records(&doc).len(), (10 * 5 + 10) * 6 * 2);
    for r in records(&doc) {
        let a2a_in_place = r["op"] == "all_to_all" && r["placement"] == "in_place";
        if a2a_in_place {
            assert!(r["wrong"].is_null(), "{r}");
        } else {
            assert_eq!(r["wrong"], 0, "{r}");
        }
        assert!(r["time_us"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["latency"]["p50_us"].as_f64().is_some(), "{r}");
    }
}

/// `--a2a-call alltoall` (ncclAlltoAll, NCCL 2.28+): the same exact check as grouped send/recv,
/// on one rank and on two sharing the GPU.
#[test]
fn gpu_native_alltoall_is_correct() {
    if !gpu_present() {
        return;
    }
    match collbench::ffi::nccl::Nccl::load() {
        Ok(n) if n.has_alltoall() => {}
        Ok(n) => {
            skip(&format!("{} has no ncclAlltoAll (NCCL < 2.28)", n.path()));
            return;
        }
        Err(e) => panic!("{e}"),
    }
    let args = [
        "bench",
        "--backend",
        "nccl",
        "--gpu",
        "0",
        "--op",
        "all_to_all",
        "--a2a-call",
        "alltoall",
        "-b",
        "8",
        "-e",
        "4M",
        "-f",
        "8",
        "-d",
        "float,int64,bfloat16",
        "-n",
        "3",
        "--timeout",
        "60s",
        "--out",
    ];
    for np in [1, 2] {
        let (_tmp, out) = fresh_out();
        let mut c = if np == 1 {
            Command::new(exe())
        } else {
            mpirun(np)
        };
        let o = c
            .args(args)
            .arg(&out)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        expect_code(&o, 0);
        let doc = read_run(&out);
        assert_schema_valid(&doc);
        assert!(
            doc["notes"].to_string().contains("ncclAlltoAll"),
            "{}",
            doc["notes"]
        );
        let checked: Vec<&serde_json::Value> = records(&doc)
            .iter()
            .filter(|r| r["placement"] == "out_of_place")
            .collect();
        let sizes = doc["config"]["sizes"].as_array().unwrap().len();
        assert_eq!(checked.len(), 3 * sizes, "np {np}");
        for r in checked.iter().filter(|r| r["count"] != 0) {
            assert_eq!(r["wrong"], 0, "np {np}: {r}");
        }
    }
}

#[test]
fn gpu_four_ranks_share_one_gpu_with_their_own_hostids() {
    if !gpu_present() {
        return;
    }
    let (_tmp, out) = fresh_out();
    let o = mpirun(4)
        .args([
            "bench",
            "--backend",
            "nccl",
            "--gpu",
            "0",
            "-b",
            "8",
            "-e",
            "256K",
            "-f",
            "8",
            "-d",
            "float,bfloat16",
            "-o",
            "sum,avg",
            "-n",
            "3",
            "--timeout",
            "60s",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    let (stdout, _) = expect_code(&o, 0);
    let doc = read_run(&out);
    assert_schema_valid(&doc);
    assert_eq!(doc["world_size"], 4);
    assert_eq!(doc["summary"]["wrong_total"], 0);
    let notes = doc["notes"].to_string();
    assert!(notes.contains("functional, not performance"), "{notes}");
    assert!(
        stdout.contains("# note: functional, not performance"),
        "{stdout}"
    );
    let buses: Vec<&str> = (0..4)
        .map(|r| doc["ranks"][r]["pci_bus_id"].as_str().unwrap())
        .collect();
    assert!(buses.iter().all(|b| *b == buses[0]), "{buses:?}");
}

#[test]
fn gpu_corrupt_input_on_one_rank_is_caught() {
    if !gpu_present() {
        return;
    }
    let (_tmp, out) = fresh_out();
    let o = mpirun(2)
        .args([
            "bench",
            "--backend",
            "nccl",
            "--gpu",
            "0",
            "-b",
            "1K",
            "-e",
            "1K",
            "--op",
            "all_reduce",
            "--debug-corrupt-rank",
            "1",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    expect_code(&o, 1);
    let doc = read_run(&out);
    for r in records(&doc) {
        assert!(r["wrong"].as_u64().unwrap() > 0, "{r}");
    }
}

#[test]
fn gpu_stopped_rank_is_reported_by_the_deadline_not_hung() {
    if !gpu_present() {
        return;
    }
    let (tmp, out) = fresh_out();
    let err_path = tmp.path().join("stderr.txt");
    let stderr_now = || std::fs::read_to_string(&err_path).unwrap_or_default();
    let mut child = mpirun(2)
        .args([
            "bench",
            "--backend",
            "nccl",
            "--gpu",
            "0",
            "-b",
            "8",
            "-e",
            "1M",
            "-n",
            "50",
            "--op",
            "all_reduce",
            "--timeout",
            "3s",
            "--out",
        ])
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while std::fs::read_to_string(out.join("progress.jsonl")).map_or(0, |s| s.lines().count()) < 2 {
        assert!(t.elapsed() < Duration::from_secs(120), "no progress");
        std::thread::sleep(Duration::from_millis(50));
    }
    let doc = read_run(&out);
    let pid1 = doc["ranks"][1]["pid"].as_i64().unwrap() as i32;
    unsafe { libc::kill(pid1, libc::SIGSTOP) };
    let stopped_at = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if stopped_at.elapsed() > Duration::from_secs(60) {
            let ps = Command::new("ps")
                .args(["-eo", "pid,stat,wchan:24,etime,args"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            unsafe { libc::kill(pid1, libc::SIGKILL) };
            let _ = child.kill();
            let ps: Vec<&str> = ps
                .lines()
                .filter(|l| l.contains("collbench") || l.contains("mpirun") || l.contains("orted"))
                .collect();
            panic!(
                "the run hung with rank 1 stopped; processes:\n{}\nstderr:\n{}",
                ps.join("\n"),
                stderr_now()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    unsafe { libc::kill(pid1, libc::SIGKILL) };
    let stderr = stderr_now();
    assert!(
        stopped_at.elapsed() < Duration::from_secs(20),
        "the run took {:?} to end after rank 1 stopped (--timeout 3s): {stderr}",
        stopped_at.elapsed()
    );
    assert_eq!(status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("all_reduce"), "{stderr}");
    assert!(
        stderr.contains("no progress within 3s") || stderr.contains("did not complete within 3s"),
        "{stderr}"
    );
}
