//! What survives when a run goes wrong: a killed run keeps what it measured, a stopped rank is
//! caught by the watchdog deadline instead of hanging, and nothing is left running afterwards.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn spawn_local(args: &[&str]) -> Child {
    Command::new(exe())
        .arg("local")
        .args(args)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Starts a long 2-rank all-reduce sweep into `out` and returns once `lines` records exist.
fn start_long_sweep(out: &std::path::Path, extra: &[&str], lines: usize) -> Child {
    let mut args = vec![
        "--np",
        "2",
        "-b",
        "8",
        "-e",
        "64M",
        "-n",
        "200",
        "--op",
        "all_reduce",
        "--out",
    ];
    args.push(out.to_str().unwrap());
    args.extend_from_slice(extra);
    let child = spawn_local(&args);
    wait_for("the sweep to measure", Duration::from_secs(60), || {
        progress_lines(out) >= lines
    });
    child
}

#[test]
fn a_run_killed_half_way_keeps_what_it_measured() {
    let tmp = tempfile::tempdir().unwrap();
    let out = out_dir(&tmp, "killed");
    let out_s = out.to_str().unwrap();
    let mut child = start_long_sweep(&out, &[], 4);
    // SIGTERM to the launcher, as a user's Ctrl-C or a batch system would send.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(!status.success());
    let doc = read_run(&out);
    assert_schema_valid(&doc);
    assert_eq!(doc["status"], "running", "the run never finished");
    let kept = doc["results"].as_array().unwrap().len();
    assert!(kept >= 2, "kept {kept} records");
    assert!(progress_lines(&out) >= kept);
    wait_for("every rank gone", Duration::from_secs(20), || {
        processes_mentioning(out_s).is_empty()
    });
}

#[test]
fn a_stopped_rank_trips_the_watchdog_instead_of_hanging() {
    let tmp = tempfile::tempdir().unwrap();
    let out = out_dir(&tmp, "stopped");
    let out_s = out.to_str().unwrap();
    let mut child = start_long_sweep(&out, &["--timeout", "2s"], 2);
    let doc = read_run(&out);
    let victim = doc["ranks"][1]["pid"].as_u64().unwrap() as i32;
    let started = Instant::now();
    unsafe { libc::kill(victim, libc::SIGSTOP) };
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            unsafe { libc::kill(victim, libc::SIGKILL) };
            let _ = child.kill();
            panic!("the job hung although --timeout 2s was set");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let took = started.elapsed();
    // Free the stopped rank if mpirun left it (it should not have).
    unsafe {
        libc::kill(victim, libc::SIGCONT);
    }
    let mut stderr = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(
        status.code(),
        Some(3),
        "could-not-run exit code; stderr:\n{stderr}"
    );
    assert!(
        stderr.contains("did not complete within 2s (watchdog deadline, --timeout)"),
        "{stderr}"
    );
    assert!(stderr.contains("all_reduce"), "names the op: {stderr}");
    assert!(took < Duration::from_secs(30), "detected after {took:?}");
    assert!(
        !read_run(&out)["results"].as_array().unwrap().is_empty(),
        "earlier sizes kept"
    );
    wait_for("every rank gone", Duration::from_secs(20), || {
        processes_mentioning(out_s).is_empty()
    });
}
