//! Node and data faults under the real controller and real mpirun on this host: each fault is
//! applied, detected and attributed to the right rank, recorded in run.json, and nothing is left running.

mod common;

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use common::*;

fn fault(doc: &serde_json::Value, id: usize) -> &serde_json::Value {
    &doc["faults"][id]
}

#[test]
fn timing_a_hung_rank_is_named_by_missed_heartbeats_and_the_run_completes() {
    let tmp = tempfile::tempdir().unwrap();
    let out = out_dir(&tmp, "hang");
    let p = plan(
        tmp.path(),
        "[[fault]]\nkind = \"hang\"\ntarget = \"rank:1\"\nstart = \"1s\"\nduration = \"2s\"\n",
    );
    let (code, log) = local_with_plan("4", &p, &out, &["--run-for", "5s"]);
    assert_eq!(code, 0, "{log}");
    let doc = read_run(&out);
    assert_schema_valid(&doc);
    assert_eq!(doc["status"], "complete");
    let f = fault(&doc, 0);
    assert_eq!(f["outcome"], "recovered", "{f}");
    assert!(
        f["recovered_at_s"].as_f64().unwrap() >= f["reverted_at_s"].as_f64().unwrap(),
        "{f}"
    );
    assert!(f["reverted_at_s"].as_f64().unwrap() > f["applied_at_s"].as_f64().unwrap());
    let d = &f["detected"];
    assert_eq!(d["mechanism"], "missed_heartbeat", "{f}");
    assert_eq!(d["rank"], 1, "{f}");
    assert!(d["after_s"].as_f64().unwrap() < 2.0, "{f}");
    assert!(f["phases"]["before"]["rows"].as_u64().unwrap() >= 1, "{f}");
    assert!(
        log.contains("fault 0 hang rank:1"),
        "terminal timeline: {log}"
    );
    no_process_left(&out);
}

#[test]
fn a_killed_rank_is_detected_at_once_and_the_job_torn_down() {
    let tmp = tempfile::tempdir().unwrap();
    let out = out_dir(&tmp, "kill");
    let p = plan(
        tmp.path(),
        "[[fault]]\nkind = \"kill\"\ntarget = \"rank:2\"\nstart = \"1500ms\"\n",
    );
    let (code, log) = local_with_plan("4", &p, &out, &["--run-for", "60s"]);
    assert_eq!(code, 3, "{log}");
    let doc = read_run(&out);
    assert_schema_valid(&doc);
    assert_eq!(doc["status"], "failed");
    assert!(
        !doc["results"].as_array().unwrap().is_empty(),
        "rows measured before the kill are kept"
    );
    let d = &fault(&doc, 0)["detected"];
    assert_eq!(d["mechanism"], "connection_lost", "{doc:#}");
    assert_eq!(d["rank"], 2);
    assert!(d["after_s"].as_f64().unwrap() < 5.0);
    assert_eq!(fault(&doc, 0)["outcome"], "job_failed");
    no_process_left(&out);
}

#[test]
fn timing_a_slow_rank_is_named_as_the_straggler() {
    let tmp = tempfile::tempdir().unwrap();
    let out = out_dir(&tmp, "slow");
    let p = plan(
        tmp.path(),
        "[[fault]]\nkind = \"slow\"\ntarget = \"rank:2\"\nstart = \"500ms\"\nduration = \"2s\"\ndelay = \"3ms\"\n",
    );
    let (code, log) = local_with_plan("4", &p, &out, &["--run-for", "4s", "--op", "all_reduce"]);
    assert_eq!(code, 0, "{log}");
    let doc = read_run(&out);
    assert_schema_valid(&doc);
    let d = &fault(&doc, 0)["detected"];
    assert_eq!(d["mechanism"], "straggler", "{doc:#}");
    assert_eq!(d["rank"], 2);
    let ph = &fault(&doc, 0)["phases"];
    let (before, during) = (
        ph["before"]["p50_us"].as_f64().unwrap(),
        ph["during"]["p50_us"].as_f64().unwrap(),
    );
    assert!(during > 5.0 * before, "the delay shows in the phases: {ph}");
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(
        html.contains("Fault timeline") && html.contains("Latency over time"),
        "report.html shows the fault over time"
    );
    no_process_left(&out);
}

#[test]
fn a_corrupted_send_buffer_is_caught_and_its_sender_named() {
    let tmp = tempfile::tempdir().unwrap();
    let out = out_dir(&tmp, "corrupt");
    let p = plan(
        tmp.path(),
        "[[fault]]\nkind = \"corrupt\"\ntarget = \"rank:1\"\nstart = { op = \"all_to_all\", size = \"1K\", iteration = 0 }\n",
    );
    let (code, log) = local_with_plan("4", &p, &out, &["--run-for", "1s", "--op", "all_to_all"]);
    assert_eq!(code, 1, "wrong values are a failed test: {log}");
    let doc = read_run(&out);
    assert_schema_valid(&doc);
    let d = &fault(&doc, 0)["detected"];
    assert_eq!(d["mechanism"], "wrong_data", "{doc:#}");
    assert_eq!(
        d["rank"], 1,
        "the sender, not the rank that received it: {d}"
    );
    assert!(doc["summary"]["wrong_total"].as_u64().unwrap_or(1) >= 1 || log.contains("wrong"));
    no_process_left(&out);
}

#[test]
fn a_rank_that_exits_mid_run_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let out = out_dir(&tmp, "exit");
    let p = plan(
        tmp.path(),
        "[[fault]]\nkind = \"exit\"\ntarget = \"rank:3\"\nstart = \"1s\"\n",
    );
    let (code, log) = local_with_plan("4", &p, &out, &["--run-for", "60s"]);
    assert_eq!(code, 3, "{log}");
    let doc = read_run(&out);
    assert_schema_valid(&doc);
    let d = &fault(&doc, 0)["detected"];
    assert_eq!(d["mechanism"], "early_exit", "{doc:#}");
    assert_eq!(d["rank"], 3);
    no_process_left(&out);
}

#[test]
fn link_faults_need_the_privilege_flag() {
    let tmp = tempfile::tempdir().unwrap();
    let out = out_dir(&tmp, "priv");
    let p = plan(
        tmp.path(),
        "[[fault]]\nkind = \"down\"\ntarget = \"link:somehost/eth0\"\nstart = \"1s\"\nduration = \"1s\"\n",
    );
    let (code, log) = local_with_plan("2", &p, &out, &["--run-for", "1s"]);
    assert_eq!(code, 2, "{log}");
    assert!(
        log.contains("plan.toml:7:") && log.contains("--allow-privileged"),
        "{log}"
    );
    assert!(!out.join("run.json").exists(), "nothing ran");
}

#[test]
fn a_rank_without_the_secret_is_refused_a_clear_message() {
    let o = std::process::Command::new(exe())
        .args(["bench", "-b", "8", "-e", "8"])
        .env("COLLBENCH_CONTROLLER", "127.0.0.1:9")
        .env_remove("COLLBENCH_SECRET")
        .env_remove("COLLBENCH_SECRET_FILE")
        .output()
        .unwrap();
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("COLLBENCH_SECRET"), "{err}");
}

/// Sends raw bytes to the controller's socket and returns whatever it answers before closing.
fn poke(sock: &Path, bytes: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut s = std::os::unix::net::UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
    let _ = s.write_all(bytes);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut back = Vec::new();
    let _ = s.read_to_end(&mut back);
    back
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut v = (body.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

#[test]
fn the_controller_refuses_wrong_secrets_and_survives_garbage() {
    let tmp = tempfile::tempdir().unwrap();
    let out = out_dir(&tmp, "standalone");
    let sock = tmp.path().join("ctl.sock");
    let p = plan(tmp.path(), "");
    let child = std::process::Command::new(exe())
        .args(["controller", "--plan", p.to_str().unwrap(), "--listen"])
        .arg(format!("unix:{}", sock.display()))
        .arg("--")
        .args(["mpirun", "-np", "2", "--oversubscribe", "--bind-to", "none"])
        .args(["--mca", "mpi_yield_when_idle", "1", &exe(), "bench"])
        .args([
            "-b",
            "8",
            "-e",
            "1K",
            "--run-for",
            "4s",
            "--out",
            out.to_str().unwrap(),
        ])
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the controller's socket", Duration::from_secs(20), || {
        sock.exists()
    });
    let hello = |secret: &str| {
        serde_json::json!({"type": "hello", "secret": secret, "rank": 0, "world_size": 2,
            "host": "intruder", "local_rank": 0, "pid": 1, "device": null, "boot_id": "",
            "pid_ns": "", "out_dir": "/tmp/elsewhere"})
        .to_string()
    };
    // A wrong secret gets no welcome: the connection is closed without a byte.
    assert!(poke(&sock, &frame(hello(&"0".repeat(64)).as_bytes())).is_empty());
    // Garbage, an oversized length, a truncated frame.
    assert!(poke(&sock, &frame(b"{not json")).is_empty());
    assert!(poke(&sock, &u32::MAX.to_be_bytes()).is_empty());
    assert!(poke(&sock, &[0, 0]).is_empty());
    let o = child.wait_with_output().unwrap();
    let (stdout, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("refused connection") && stderr.contains("wrong secret"),
        "{stderr}"
    );
    assert!(stderr.contains("over the 1048576-byte limit"), "{stderr}");
    let doc = read_run(&out);
    assert_schema_valid(&doc);
    assert_eq!(doc["status"], "complete");
    assert!(
        doc["job"]["refused_connections"].as_u64().unwrap() >= 4,
        "{}",
        doc["job"]
    );
    assert_eq!(doc["world_size"], 2, "the intruder did not join");
}

#[test]
fn a_start_point_the_sweep_never_reaches_is_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    let out = out_dir(&tmp, "point");
    let p = plan(
        tmp.path(),
        "[[fault]]\nkind = \"corrupt\"\ntarget = \"rank:1\"\nstart = { op = \"all_to_all\", size = \"1K\", iteration = 0 }\n",
    );
    let (code, log) = local_with_plan("2", &p, &out, &["--run-for", "1s", "--op", "all_reduce"]);
    assert_eq!(code, 2, "{log}");
    assert!(
        log.contains(
            "plan.toml:7: fault 0: it starts at all_to_all 1024 B, which this sweep never runs"
        ),
        "{log}"
    );
    let p = plan(
        tmp.path(),
        "[[fault]]\nkind = \"kill\"\ntarget = \"rank:5\"\nstart = \"1s\"\n",
    );
    let (code, log) = local_with_plan("2", &p, &out, &["--run-for", "1s"]);
    assert_eq!(code, 2, "{log}");
    assert!(log.contains("rank 5 is not in a run of 2 ranks"), "{log}");
}

#[test]
fn a_standalone_controller_serves_ranks_started_elsewhere() {
    use std::io::BufRead;
    let tmp = tempfile::tempdir().unwrap();
    let out = out_dir(&tmp, "standalone-ranks");
    let p = plan(
        tmp.path(),
        "[[fault]]\nkind = \"hang\"\ntarget = \"rank:1\"\nstart = \"1s\"\nduration = \"2s\"\n",
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut ctl = std::process::Command::new(exe())
        .args([
            "controller",
            "--plan",
            p.to_str().unwrap(),
            "--listen",
            &addr,
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The controller prints where the secret is; a rank without it would be refused.
    let mut lines = std::io::BufReader::new(ctl.stderr.take().unwrap()).lines();
    let secret_file = loop {
        let line = lines
            .next()
            .expect("controller printed its start line")
            .unwrap();
        if let Some(rest) = line.split("COLLBENCH_SECRET_FILE=").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    let drain =
        std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>().join("\n"));
    let ranks = mpirun(4)
        .args([
            "bench",
            "--controller",
            &addr,
            "-b",
            "1K",
            "-e",
            "1K",
            "-n",
            "20",
        ])
        .args(["--run-for", "4s", "--out", out.to_str().unwrap()])
        .env("COLLBENCH_SECRET_FILE", &secret_file)
        .output()
        .unwrap();
    assert_eq!(ranks.status.code(), Some(0), "{:?}", text(&ranks));
    let status = ctl.wait().unwrap();
    let log = drain.join().unwrap();
    assert_eq!(status.code(), Some(0), "{log}");
    let doc = read_run(&out);
    assert_schema_valid(&doc);
    let f = fault(&doc, 0);
    assert_eq!(f["detected"]["mechanism"], "missed_heartbeat", "{f}");
    assert_eq!(f["outcome"], "recovered", "{f}");
    assert!(
        !Path::new(&secret_file).exists(),
        "the secret is removed with the run"
    );
}
