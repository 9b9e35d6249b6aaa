//! The outputs a person and a dashboard read, from real runs under the real mpirun: results.csv,
//! report.md, report.html (rendered in headless Chromium), metrics.prom (parsed as Prometheus
//! text), `collbench report`, `history`, `import-nccl-tests`, and their bad-input exit codes.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn small_run(out: &Path, extra: &[&str]) {
    let mut args = vec![
        "-b",
        "8",
        "-e",
        "64K",
        "-f",
        "8",
        "-n",
        "20",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let o = bench_mpi(2, &args);
    expect_code(&o, 0);
}

const CHROMIUM: &str = "/usr/bin/chromium";

/// Renders `html` in headless Chromium: (the DOM after parsing, the screenshot's size in bytes).
fn render_in_chromium(html: &Path, tmp: &Path) -> (String, u64) {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: run scripts/setup.sh from scripts/test.sh (COLLBENCH_TEST_DEPS=1 installs chromium; CI does this)"
    );
    let url = format!("file://{}", html.canonicalize().unwrap().display());
    let base = |profile: &str| {
        let mut c = Command::new("timeout");
        c.arg("120").arg(CHROMIUM).args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1400,2000",
        ]);
        c.arg(format!("--user-data-dir={}", tmp.join(profile).display()));
        c
    };
    let dom = base("p1").arg("--dump-dom").arg(&url).output().unwrap();
    assert!(
        dom.status.success(),
        "chromium --dump-dom failed: {:?}",
        text(&dom)
    );
    let png = tmp.join("shot.png");
    let shot = base("p2")
        .arg(format!("--screenshot={}", png.display()))
        .arg(&url)
        .output()
        .unwrap();
    assert!(
        shot.status.success(),
        "chromium --screenshot failed: {:?}",
        text(&shot)
    );
    let bytes = std::fs::read(&png).expect("screenshot written");
    assert_eq!(&bytes[1..4], b"PNG", "not a PNG");
    let (w, h) = (
        u32::from_be_bytes(bytes[16..20].try_into().unwrap()),
        u32::from_be_bytes(bytes[20..24].try_into().unwrap()),
    );
    assert_eq!((w, h), (1400, 2000));
    (
        String::from_utf8_lossy(&dom.stdout).into_owned(),
        bytes.len() as u64,
    )
}

fn prom_samples(text: &str) -> prometheus_parse::Scrape {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text format")
}

#[test]
fn every_run_writes_csv_markdown_html_and_prometheus() {
    let (tmp, out) = fresh_out();
    small_run(&out, &[]);
    let doc = read_run(&out);
    let n = doc["results"].as_array().unwrap().len();
    // 8 B .. 64 KiB by 8 (8, 64, 512, 4K, 32K): 5 sizes x 2 ops x 2 placements.
    assert_eq!(n, 20);

    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows.len(), n + 1);
    assert!(rows[0].starts_with("op,dtype,redop,root,placement,size_bytes,"));
    let cols = rows[0].split(',').count();
    assert!(rows.iter().all(|r| r.split(',').count() == cols));
    let first = &doc["results"][0];
    let p50 = first["latency"]["p50_us"].as_f64().unwrap();
    let p50_col = rows[0].split(',').position(|c| c == "p50_us").unwrap();
    let csv_p50: f64 = rows[1].split(',').nth(p50_col).unwrap().parse().unwrap();
    assert_eq!(csv_p50, p50);

    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("no topology given"), "{md}");
    assert!(md.contains("### all_reduce float sum") && md.contains("### all_to_all float"));
    assert_eq!(md.matches("| out_of_place |").count(), 10);

    let prom = std::fs::read_to_string(out.join("metrics.prom")).unwrap();
    let scrape = prom_samples(&prom);
    let busbw: Vec<_> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "collbench_busbw_gbps")
        .collect();
    assert_eq!(busbw.len(), n);
    assert!(busbw
        .iter()
        .all(|s| s.labels.get("op").is_some() && s.labels.get("size_bytes").is_some()));
    let complete = scrape
        .samples
        .iter()
        .find(|s| s.metric == "collbench_run_complete")
        .unwrap();
    assert!(matches!(complete.value, prometheus_parse::Value::Gauge(v) if v == 1.0));
    for family in [
        "collbench_busbw_gbps",
        "collbench_latency_seconds",
        "collbench_wrong_total",
        "collbench_run_complete",
    ] {
        assert!(prom.contains(&format!("# HELP {family} ")), "{family}");
        assert!(prom.contains(&format!("# TYPE {family} ")), "{family}");
    }
    assert!(prom.contains("quantile=\"0.99\""));

    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(
        !html.contains("http://")
            || html.matches("http://").count()
                == html.matches("xmlns=\"http://www.w3.org/2000/svg\"").count(),
        "the page must fetch nothing"
    );
    assert!(!html.contains("<script") && !html.contains("<link"));
    let (dom, png) = render_in_chromium(&out.join("report.html"), tmp.path());
    // 2 busbw + 4 latency + 4 CDF + 4 heat maps.
    let svgs = dom.matches("<svg").count();
    assert_eq!(
        svgs,
        html.matches("<svg").count(),
        "every SVG survived parsing"
    );
    assert!(svgs >= 14, "{svgs} SVGs");
    assert!(dom.contains("class=\"series\"") && dom.contains("class=\"cell\""));
    assert!(
        dom.contains("Exact: from the merged histograms"),
        "CDFs come from the hlog"
    );
    assert!(png > 60_000, "screenshot of {png} bytes looks empty");
}

#[test]
fn report_regenerates_and_renders_faults_and_verdict() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run-with-faults");
    std::fs::create_dir(&dir).unwrap();
    for f in ["run.json", "histograms.hlog"] {
        std::fs::copy(fixture("run-with-faults").join(f), dir.join(f)).unwrap();
    }
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("run.json")).unwrap()).unwrap();
    assert_schema_valid(&doc);
    let o = collbench(&["report", dir.to_str().unwrap(), "--cdf-size", "8K,512K"]);
    let (stdout, _) = expect_code(&o, 0);
    for f in ["results.csv", "report.md", "report.html", "metrics.prom"] {
        assert!(stdout.contains(f), "{stdout}");
        assert!(dir.join(f).exists());
    }
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(md.contains("**Verdict: NOT READY**"), "{md}");
    assert!(
        md.contains("| all_reduce busbw at 512K | fail | 41.2 GB/s | 48 GB/s |"),
        "{md}"
    );
    assert!(
        md.contains(
            "| 1 | hang | rank:1 | 6.500 | - | 0.400 | missed_heartbeat (rank 1, GPU 0000:19:00.0) | aborted |"
        ),
        "{md}"
    );
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    let (dom, png) = render_in_chromium(&dir.join("report.html"), tmp.path());
    assert!(dom.contains("class=\"timeline\""));
    assert_eq!(dom.matches("class=\"fault\"").count(), 2);
    assert_eq!(dom.matches("class=\"detected\"").count(), 2);
    // Records start at 0.2 s + 1 s each and go by their middles (0.7, 1.7, ..., 6.7, and the last
    // its start, 7.2): 2 before the first fault, 2 during it, 1 while it was being reverted
    // (4.6..5.01), 1 after, 2 during the hang (applied at 6.5, never reverted).
    assert_eq!(html.matches("class=\"record before\"").count(), 2);
    assert_eq!(html.matches("class=\"record during\"").count(), 4);
    assert_eq!(html.matches("class=\"record reverting\"").count(), 1);
    assert_eq!(html.matches("class=\"record after\"").count(), 1);
    assert_eq!(html.matches("<tr class=\"phase-reverting\">").count(), 1);
    // The first fault's apply (1.95..2.003 s) and revert (4.6..5.01 s) spans are drawn.
    assert_eq!(dom.matches("class=\"fault-transition\"").count(), 2);
    assert!(
        dom.contains("<tr class=\"fail\">")
            && dom.contains("<tr class=\"warn\">")
            && dom.contains("<tr class=\"pass\">")
    );
    assert!(dom.contains("NOT READY"));
    assert!(
        dom.contains("expected: all_reduce busbw at 512K"),
        "expected line on the busbw plot"
    );
    assert!(
        html.contains("<path class=\"series\" d=\"M")
            && html.contains(">8K</text>")
            && html.contains(">512K</text>")
    );
    assert!(png > 60_000, "screenshot of {png} bytes looks empty");

    let o = collbench(&["report", dir.to_str().unwrap(), "--prometheus"]);
    let (stdout, _) = expect_code(&o, 0);
    let scrape = prom_samples(&stdout);
    let ready = scrape
        .samples
        .iter()
        .find(|s| s.metric == "collbench_ready")
        .unwrap();
    assert!(matches!(ready.value, prometheus_parse::Value::Gauge(v) if v == 0.0));
    let path = tmp.path().join("textfile/collbench.prom");
    std::fs::create_dir(path.parent().unwrap()).unwrap();
    expect_code(
        &collbench(&[
            "report",
            dir.to_str().unwrap(),
            "--prometheus",
            path.to_str().unwrap(),
        ]),
        0,
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), stdout);
    let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().collect();
    assert_eq!(
        leftovers.len(),
        1,
        "no temporary file left in the textfile directory"
    );
}

#[test]
fn report_bad_input_names_the_file_and_exits_2() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nope");
    let (_, e) = expect_code(&collbench(&["report", missing.to_str().unwrap()]), 2);
    assert!(e.contains("nope: not found"), "{e}");

    let dir = tmp.path().join("bad");
    std::fs::create_dir(&dir).unwrap();
    let good = std::fs::read_to_string(fixture("run-with-faults/run.json")).unwrap();
    std::fs::write(dir.join("run.json"), &good[..good.len() / 3]).unwrap();
    let (_, e) = expect_code(&collbench(&["report", dir.to_str().unwrap()]), 2);
    assert!(e.contains("run.json:") && e.contains("truncated"), "{e}");
    assert_eq!(e.lines().count(), 1, "{e}");

    std::fs::write(
        dir.join("run.json"),
        good.replacen("\"schema_version\": 1", "\"schema_version\": 9", 1),
    )
    .unwrap();
    let (_, e) = expect_code(&collbench(&["report", dir.to_str().unwrap()]), 2);
    assert!(
        e.contains("schema_version: 9") && e.contains("known: 1"),
        "{e}"
    );

    std::fs::write(
        dir.join("run.json"),
        good.replacen("\"world_size\": 2", "\"world_size\": \"2\"", 1),
    )
    .unwrap();
    let (_, e) = expect_code(&collbench(&["report", dir.to_str().unwrap()]), 2);
    assert!(e.contains("field world_size: invalid type"), "{e}");

    std::fs::write(dir.join("run.json"), "{\"schema_version\": 1,,}").unwrap();
    let (_, e) = expect_code(&collbench(&["report", dir.to_str().unwrap()]), 2);
    assert!(e.contains("run.json:1:22: not JSON"), "{e}");

    std::fs::write(
        dir.join("run.json"),
        good.replacen("\"status\": \"complete\"", "\"status\": \"running\"", 1),
    )
    .unwrap();
    let (_, e) = expect_code(&collbench(&["report", dir.to_str().unwrap()]), 0);
    assert!(e.contains("partial run"), "{e}");
}

#[test]
fn progress_shows_on_a_terminal_and_stays_quiet_otherwise() {
    let (_tmp, out) = fresh_out();
    // Alone (a world of 1) under a pseudo-terminal made by script(1).
    let cmd = format!(
        "{} bench -b 8 -e 64K -n 3 --op all_reduce --out {}",
        exe(),
        out.display()
    );
    let o = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .output()
        .expect("script(1) from util-linux");
    let (stdout, _) = expect_code(&o, 0);
    assert!(
        stdout.contains("collbench [") && stdout.contains("ETA"),
        "{stdout}"
    );
    assert!(stdout.contains("now all_reduce float sum 8"), "{stdout}");

    let (_tmp2, out2) = fresh_out();
    let o = collbench(&[
        "bench",
        "-b",
        "8",
        "-e",
        "64K",
        "-n",
        "3",
        "--out",
        out2.to_str().unwrap(),
    ]);
    let (stdout, stderr) = expect_code(&o, 0);
    assert!(
        !stderr.contains("collbench [") && !stdout.contains("ETA"),
        "{stderr}"
    );
}

fn retime(src: &Path, dst: &Path, start: &str, scale_busbw: f64) {
    std::fs::create_dir_all(dst).unwrap();
    let mut doc = read_run(src);
    doc["start_time"] = start.into();
    for r in doc["results"].as_array_mut().unwrap() {
        let b = r["busbw_gbps"].as_f64().unwrap();
        r["busbw_gbps"] = (b * scale_busbw).into();
    }
    std::fs::write(
        dst.join("run.json"),
        serde_json::to_vec_pretty(&doc).unwrap(),
    )
    .unwrap();
}

#[test]
fn history_orders_runs_by_start_time_and_draws_the_trend() {
    let (tmp, out) = fresh_out();
    small_run(&out, &["--op", "all_reduce"]);
    let nightly = tmp.path().join("nightly");
    // Folder names sort the other way round from start times.
    retime(&out, &nightly.join("a-newest"), "2026-12-03T02:00:00Z", 0.5);
    retime(&out, &nightly.join("b-oldest"), "2026-12-01T02:00:00Z", 1.0);
    retime(&out, &nightly.join("c-middle"), "2026-12-02T02:00:00Z", 0.8);
    std::fs::create_dir(nightly.join("d-broken")).unwrap();
    std::fs::write(nightly.join("d-broken/run.json"), "{").unwrap();

    let o = collbench(&["history", nightly.to_str().unwrap(), "--metric", "busbw"]);
    let (stdout, stderr) = expect_code(&o, 0);
    assert!(
        stderr.contains("d-broken/run.json") && stderr.contains("truncated"),
        "{stderr}"
    );
    let rows: Vec<&str> = stdout.lines().filter(|l| l.starts_with("2026-")).collect();
    assert_eq!(rows.len(), 3, "{stdout}");
    assert!(
        rows[0].contains("b-oldest")
            && rows[1].contains("c-middle")
            && rows[2].contains("a-newest")
    );
    assert!(
        stdout.contains("# [1] all_reduce float sum out_of_place 32K"),
        "{stdout}"
    );
    let base = read_run(&out)["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["size_bytes"] == 32768 && r["placement"] == "out_of_place")
        .unwrap()["busbw_gbps"]
        .as_f64()
        .unwrap();
    let last: f64 = rows[2].split_whitespace().last().unwrap().parse().unwrap();
    assert!(
        (last - base * 0.5).abs() < 1e-3 + base * 1e-3,
        "{last} vs {base}"
    );
    let html = std::fs::read_to_string(nightly.join("history.html")).unwrap();
    assert_eq!(html.matches("<path class=\"series\"").count(), 1);
    assert!(html.contains(">12-01 02:00<") && html.contains(">12-03 02:00<"));

    let page = tmp.path().join("h.html");
    let o = collbench(&[
        "history",
        nightly.to_str().unwrap(),
        "--metric",
        "p50",
        "--size",
        "8,512",
        "--placement",
        "both",
        "--out",
        page.to_str().unwrap(),
    ]);
    let (stdout, _) = expect_code(&o, 0);
    assert_eq!(stdout.matches("# [").count(), 4, "{stdout}");
    assert_eq!(
        std::fs::read_to_string(&page)
            .unwrap()
            .matches("<path class=\"series\"")
            .count(),
        4
    );

    let (_, e) = expect_code(
        &collbench(&["history", nightly.to_str().unwrap(), "--op", "broadcast"]),
        2,
    );
    assert!(
        e.contains("no run has records matching --op broadcast"),
        "{e}"
    );
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let (_, e) = expect_code(&collbench(&["history", empty.to_str().unwrap()]), 2);
    assert!(e.contains("no readable results folder"), "{e}");
}

#[test]
fn nccl_tests_json_imports_into_a_valid_results_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("imported");
    let src = fixture("nccl-tests-all_reduce_perf-I.json");
    let o = collbench(&[
        "import-nccl-tests",
        src.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let (stdout, _) = expect_code(&o, 0);
    assert!(stdout.contains("imported 8 records"), "{stdout}");
    let doc = read_run(&out);
    assert_schema_valid(&doc);
    assert_eq!(doc["world_size"], 2);
    assert_eq!(doc["launcher"], "open_mpi");
    assert_eq!(doc["backend"]["name"], "nccl");
    assert!(doc["backend"]["library_version"]
        .as_str()
        .unwrap()
        .starts_with("NCCL 2.27.3"));
    assert_eq!(doc["start_time"], "2025-11-20T14:03:07Z");
    assert_eq!(doc["source"]["tool"], "nccl-tests");
    assert_eq!(
        doc["source"]["details"]["average_bus_bandwidth"]["okay"],
        "unchecked"
    );
    let results = doc["results"].as_array().unwrap();
    let raw: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&src).unwrap()).unwrap();
    for (i, r) in results.iter().enumerate() {
        let nt = &raw["results"][i / 2];
        let place = if i % 2 == 0 {
            "out_of_place"
        } else {
            "in_place"
        };
        assert_eq!(r["placement"], place);
        assert_eq!(r["root"], -1, "root parsed from \"    -1\"");
        assert_eq!(r["size_bytes"], nt["size"]);
        assert_eq!(r["busbw_gbps"], nt[place]["bus_bw"]);
        assert_eq!(r["wrong"], 0);
        // 20 iterations x 2 process rows.
        assert_eq!(r["latency"]["samples"], 40);
        assert_eq!(r["per_rank"].as_array().unwrap().len(), 2);
        assert_eq!(r["skew"]["samples"], 20);
        let nt_max = nt[format!("{place}_per_iter")]["max_us"].as_f64().unwrap();
        let max = r["latency"]["max_us"].as_f64().unwrap();
        assert!((max - nt_max).abs() <= nt_max * 1e-3, "{max} vs {nt_max}");
    }
    for f in [
        "histograms.hlog",
        "progress.jsonl",
        "results.csv",
        "report.md",
        "report.html",
        "metrics.prom",
    ] {
        assert!(out.join(f).exists(), "{f}");
    }
    let hlog = std::fs::read_to_string(out.join("histograms.hlog")).unwrap();
    assert_eq!(hlog.lines().filter(|l| l.starts_with("Tag=")).count(), 8);

    // Compared with itself: nothing moves, nothing is flagged.
    let o = collbench(&[
        "compare",
        out.to_str().unwrap(),
        out.to_str().unwrap(),
        "--format",
        "json",
    ]);
    let (stdout, _) = expect_code(&o, 0);
    let c: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(c["regressions"], 0);
    assert_eq!(
        c["judged"].as_u64().unwrap(),
        16,
        "busbw and p50 of 8 rows; p99 needs 1000 samples"
    );

    // A 20% slower copy of it is flagged on every row whose threshold is under the change.
    let slow = tmp.path().join("slow");
    std::fs::create_dir(&slow).unwrap();
    let mut d = read_run(&out);
    for r in d["results"].as_array_mut().unwrap() {
        r["busbw_gbps"] = (r["busbw_gbps"].as_f64().unwrap() / 1.2).into();
        for (k, v) in r["latency"].as_object_mut().unwrap() {
            if k.ends_with("_us") {
                *v = (v.as_f64().unwrap() * 1.2).into();
            }
        }
    }
    std::fs::write(slow.join("run.json"), serde_json::to_vec(&d).unwrap()).unwrap();
    let o = collbench(&[
        "compare",
        out.to_str().unwrap(),
        slow.to_str().unwrap(),
        "--format",
        "json",
    ]);
    let (stdout, _) = expect_code(&o, 1);
    let c: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let p50: Vec<_> = c["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["metric"] == "p50")
        .collect();
    assert_eq!(p50.len(), 8);
    assert!(p50.iter().all(|r| r["status"] == "regression"), "{c:#}");

    // An existing results folder is never overwritten.
    let (_, e) = expect_code(
        &collbench(&[
            "import-nccl-tests",
            src.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]),
        2,
    );
    assert!(e.contains("already holds a run"), "{e}");
}

#[test]
fn nccl_tests_quirks_and_bad_files() {
    let tmp = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(fixture("nccl-tests-all_reduce_perf-I.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    // Without -I, with a NaN bandwidth and the check off (nwrong null).
    v["config"]["per_iter_timing"] = "false".into();
    for r in v["results"].as_array_mut().unwrap() {
        let o = r.as_object_mut().unwrap();
        o.remove("out_of_place_per_iter");
        o.remove("in_place_per_iter");
        o["out_of_place"]["nwrong"] = serde_json::Value::Null;
    }
    v["results"][0]["in_place"]["bus_bw"] = "nan".into();
    let file = tmp.path().join("noI.json");
    std::fs::write(&file, v.to_string()).unwrap();
    let out = tmp.path().join("noI");
    let (stdout, _) = expect_code(
        &collbench(&[
            "import-nccl-tests",
            file.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]),
        0,
    );
    assert!(
        stdout.contains("no per-iteration times") && stdout.contains("\"nan\""),
        "{stdout}"
    );
    let doc = read_run(&out);
    assert_schema_valid(&doc);
    assert_eq!(doc["results"][0]["wrong"], serde_json::Value::Null);
    assert_eq!(doc["results"][1]["busbw_gbps"], 0.0);
    assert_eq!(doc["results"][0]["latency"]["samples"], 0);
    assert_eq!(doc["results"][0]["per_rank"].as_array().unwrap().len(), 0);
    let o = collbench(&["compare", out.to_str().unwrap(), out.to_str().unwrap()]);
    let (stdout, _) = expect_code(&o, 0);
    assert!(
        stdout.contains("| busbw |") && !stdout.contains("| p50 |"),
        "{stdout}"
    );

    let bad = |name: &str, body: String, expect: &str| {
        let f = tmp.path().join(name);
        std::fs::write(&f, body).unwrap();
        let o = tmp.path().join(format!("{name}.out"));
        let (_, e) = expect_code(
            &collbench(&[
                "import-nccl-tests",
                f.to_str().unwrap(),
                "--out",
                o.to_str().unwrap(),
            ]),
            2,
        );
        assert!(e.contains(expect), "{name}: {e}");
        assert!(e.contains(name), "{name}: the message names the file: {e}");
        assert!(!o.join("run.json").exists());
    };
    bad("cut.json", text[..text.len() / 2].to_string(), "truncated");
    bad(
        "v4.json",
        text.replacen("\"version\":3", "\"version\":4", 1),
        "field version: nccl-tests JSON file version 4",
    );
    bad(
        "gather.json",
        text.replacen("all_reduce_perf", "all_gather_perf", 1),
        "field args[0]: './build/all_gather_perf' is not all_reduce_perf or alltoall_perf",
    );
    bad(
        "root.json",
        text.replacen("\"root\":\"    -1\"", "\"root\":\"left\"", 1),
        "field results[0].root: \"left\" is not a padded integer",
    );
    bad(
        "type.json",
        text.replacen("\"type\":\"float\"", "\"type\":\"f8e4m3\"", 1),
        "field results[0].type: 'f8e4m3'",
    );
}
