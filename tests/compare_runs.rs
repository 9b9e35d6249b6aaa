//! `collbench compare` on real runs: two runs of the same build must not be flagged, a planted
//! 20% regression must be, and runs of different sweeps or broken files are bad input (exit 2).
//! The timing test runs alone (.config/nextest.toml) with one rank pinned per core.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

const SWEEP: &[&str] = &[
    "-b",
    "64K",
    "-e",
    "1M",
    "-f",
    "4",
    "--op",
    "all_reduce",
    "--placement",
    "out",
    "-n",
    "400",
];

/// Two ranks, each bound to its own core when there are two, busy-polling (no yield), so the
/// numbers measure MPI rather than the scheduler.
fn pinned_run(out: &Path) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut c = if cores >= 2 {
        let mut c = Command::new("mpirun");
        c.args(["-np", "2", "--bind-to", "core"])
            .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
            .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
            .arg(exe());
        c
    } else {
        mpirun(2)
    };
    let o = c
        .arg("bench")
        .args(SWEEP)
        .args(["--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    expect_code(&o, 0);
}

fn compare_json(base: &Path, run: &Path, code: i32) -> serde_json::Value {
    let o = collbench(&[
        "compare",
        base.to_str().unwrap(),
        run.to_str().unwrap(),
        "--format",
        "json",
    ]);
    let (stdout, _) = expect_code(&o, code);
    serde_json::from_str(&stdout).expect("compare --format json prints JSON")
}

/// A copy of a run with every busbw scaled down and every latency scaled up by `f`.
fn planted(src: &Path, dst: &Path, f: f64) {
    std::fs::create_dir_all(dst).unwrap();
    let mut doc = read_run(src);
    for r in doc["results"].as_array_mut().unwrap() {
        for k in ["busbw_gbps", "algbw_gbps"] {
            r[k] = (r[k].as_f64().unwrap() / f).into();
        }
        for k in ["time_us", "time_us_min_rank", "time_us_max_rank"] {
            r[k] = (r[k].as_f64().unwrap() * f).into();
        }
        for (k, v) in r["latency"].as_object_mut().unwrap() {
            if k.ends_with("_us") {
                *v = (v.as_f64().unwrap() * f).into();
            }
        }
    }
    std::fs::write(
        dst.join("run.json"),
        serde_json::to_vec_pretty(&doc).unwrap(),
    )
    .unwrap();
}

/// A copy of a real run with its spread narrowed to 1-2%, so a planted change is judged against a
/// known noise level whatever the load on this machine was when the run was measured.
fn quieted(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    let mut doc = read_run(src);
    for r in doc["results"].as_array_mut().unwrap() {
        let t = r["time_us"].as_f64().unwrap();
        r["time_us_min_rank"] = (t * 0.995).into();
        r["time_us_max_rank"] = (t * 1.005).into();
        for pr in r["per_rank"].as_array_mut().unwrap() {
            pr["time_us"] = t.into();
        }
        let l = r["latency"].as_object_mut().unwrap();
        let p50 = l["p50_us"].as_f64().unwrap();
        for (k, f) in [
            ("p90_us", 1.01),
            ("p99_us", 1.02),
            ("p999_us", 1.03),
            ("mean_us", 1.0),
        ] {
            if l.contains_key(k) {
                l[k] = (p50 * f).into();
            }
        }
        if l.contains_key("stdev_us") {
            l["stdev_us"] = (p50 * 0.01).into();
        }
    }
    std::fs::write(
        dst.join("run.json"),
        serde_json::to_vec_pretty(&doc).unwrap(),
    )
    .unwrap();
}

#[test]
fn timing_same_build_is_not_flagged_and_a_planted_regression_is() {
    let tmp = tempfile::tempdir().unwrap();
    // Within-run noise cannot see a machine that gets busier between two launches (other
    // processes on the cores slow a whole run 2-4x), and compare rightly flags that. So the
    // same-build check gets up to five pairs, a second apart (a busy spell, e.g. right after a
    // release build, can cover three back-to-back ones); it fails only if every pair is flagged.
    let mut flagged_pairs = Vec::new();
    let mut a = None;
    for attempt in 0..5 {
        if attempt > 0 {
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
        let (x, y) = (
            tmp.path().join(format!("a{attempt}")),
            tmp.path().join(format!("b{attempt}")),
        );
        pinned_run(&x);
        pinned_run(&y);
        let o = collbench(&[
            "compare",
            x.to_str().unwrap(),
            y.to_str().unwrap(),
            "--format",
            "json",
        ]);
        let c: serde_json::Value = serde_json::from_str(&text(&o).0).expect("JSON");
        assert!(c["judged"].as_u64().unwrap() >= 6, "{c:#}");
        assert!(c["rule"].as_str().unwrap().contains("max(5%, 2 x s)"));
        if c["regressions"] == 0 {
            assert_eq!(o.status.code(), Some(0));
            a = Some(x);
            break;
        }
        assert_eq!(o.status.code(), Some(1));
        let rows: Vec<String> = c["rows"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["status"] == "regression")
            .map(|r| {
                format!(
                    "{} {} {:+.0}% (threshold {:.0}%)",
                    r["size_bytes"],
                    r["metric"],
                    r["delta_pct"].as_f64().unwrap(),
                    r["threshold_pct"].as_f64().unwrap()
                )
            })
            .collect();
        flagged_pairs.push(rows.join(", "));
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let a = a.unwrap_or_else(|| {
        panic!("every same-build pair was flagged (load average {load}): {flagged_pairs:#?}")
    });

    let q = tmp.path().join("quiet");
    quieted(&a, &q);
    let a = q;
    let slow = tmp.path().join("slow");
    planted(&a, &slow, 1.2);
    let c = compare_json(&a, &slow, 1);
    let flagged: Vec<&serde_json::Value> = c["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] == "regression")
        .collect();
    assert!(!flagged.is_empty(), "{c:#}");
    for r in &flagged {
        let d = r["delta_pct"].as_f64().unwrap();
        let t = r["threshold_pct"].as_f64().unwrap();
        assert!(d.abs() > t && (d.abs() - 20.0).abs() < 4.0, "{r}");
    }
    // Every row whose threshold is below the 20% change is flagged, and no other.
    for r in c["rows"].as_array().unwrap() {
        if let Some(t) = r["threshold_pct"].as_f64() {
            let beyond = r["delta_pct"].as_f64().unwrap().abs() > t;
            assert_eq!(beyond, r["status"] == "regression", "{r}");
        }
    }
    // Markdown says the rule and marks the rows.
    let o = collbench(&["compare", a.to_str().unwrap(), slow.to_str().unwrap()]);
    let (stdout, stderr) = expect_code(&o, 1);
    assert!(
        stdout.contains("Rule: flag a change when") && stdout.contains("**REGRESSION**"),
        "{stdout}"
    );
    assert!(stderr.contains("regression(s)"), "{stderr}");
    // Faster is an improvement, not a failure.
    let fast = tmp.path().join("fast");
    planted(&a, &fast, 1.0 / 1.5);
    let c = compare_json(&a, &fast, 0);
    assert!(c["improvements"].as_u64().unwrap() > 0, "{c:#}");
    // --out writes the report and prints one summary line.
    let report = tmp.path().join("cmp.md");
    let o = collbench(&[
        "compare",
        a.to_str().unwrap(),
        slow.to_str().unwrap(),
        "--out",
        report.to_str().unwrap(),
    ]);
    let (stdout, _) = expect_code(&o, 1);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(std::fs::read_to_string(&report)
        .unwrap()
        .contains("## collbench compare"));
}

#[test]
fn different_sweeps_and_broken_files_are_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let small = |out: &Path, max: &str| {
        let o = bench_mpi(
            2,
            &[
                "-b",
                "1K",
                "-e",
                max,
                "-f",
                "4",
                "--op",
                "all_reduce",
                "-n",
                "5",
                "--out",
                out.to_str().unwrap(),
            ],
        );
        expect_code(&o, 0);
    };
    small(&a, "16K");
    small(&b, "64K");
    let o = collbench(&["compare", a.to_str().unwrap(), b.to_str().unwrap()]);
    let (_, e) = expect_code(&o, 2);
    assert!(e.contains("different op/size sets"), "{e}");
    assert!(e.contains("lacks 2 row(s) the run has: all_reduce float sum in_place 64K, all_reduce float sum out_of_place 64K"), "{e}");

    let broken = tmp.path().join("broken");
    std::fs::create_dir(&broken).unwrap();
    let text = std::fs::read_to_string(a.join("run.json")).unwrap();
    std::fs::write(broken.join("run.json"), &text[..text.len() - 40]).unwrap();
    let (_, e) = expect_code(
        &collbench(&["compare", a.to_str().unwrap(), broken.to_str().unwrap()]),
        2,
    );
    assert!(
        e.contains("broken/run.json:") && e.contains("truncated"),
        "{e}"
    );
    std::fs::write(
        broken.join("run.json"),
        text.replacen("\"schema_version\": 1", "\"schema_version\": 2", 1),
    )
    .unwrap();
    let (_, e) = expect_code(
        &collbench(&["compare", broken.to_str().unwrap(), a.to_str().unwrap()]),
        2,
    );
    assert!(
        e.contains("schema_version: 2 is not a version this collbench reads (known: 1)"),
        "{e}"
    );
    let (_, e) = expect_code(
        &collbench(&["compare", a.to_str().unwrap(), "/nonexistent/run"]),
        2,
    );
    assert!(e.contains("/nonexistent/run: not found"), "{e}");
}
