//! Topology files and the readiness verdict, through the real binary under the real mpirun.
//! Tests named timing_* judge real timings and run alone (.config/nextest.toml).

#[macro_use]
mod common;

use std::path::{Path, PathBuf};

use common::*;

fn topologies() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("topologies/ exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    v.sort();
    v
}

fn local_cpu() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("topologies/local-cpu.toml")
        .display()
        .to_string()
}

fn verdict(doc: &serde_json::Value) -> &serde_json::Value {
    doc.get("verdict").expect("run.json has a verdict")
}

fn check<'a>(doc: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    verdict(doc)["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {}", verdict(doc)))
}

#[test]
fn every_shipped_topology_parses() {
    let files = topologies();
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    for want in ["h100-sxm-8x", "h200-sxm-8x", "aws-p5.48xlarge", "local-cpu"] {
        assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
    }
    for f in &files {
        let o = collbench(&["check-topology", f.to_str().unwrap()]);
        let (stdout, _) = expect_code(&o, 0);
        let stem = f.file_stem().unwrap().to_string_lossy();
        assert!(
            stdout.contains(&format!("ok, topology {stem}")),
            "{}: {stdout}",
            f.display()
        );
        assert!(stdout.contains("  check "), "{stdout}");
        assert!(stdout.contains("straggler:"), "{stdout}");
    }
}

#[test]
fn bad_topology_files_give_every_error_with_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[topology]\nname = \"x\"\ngpus_per_node = 8\nintra_node = \"NVLink\"\n\n\
         [[check]]\nop = \"broadcast\"\nscope = \"intra_node\"\nmetric = \"busbw_gbps\"\nsize = \"16G\"\npass = 480\nwarn = 460\n\n\
         [[check]]\nop = \"all_reduce\"\nscope = \"intra_node\"\nmetric = \"busbw_gbps\"\nsize = \"16G\"\npass = 460\nwarn = 480\n",
    )
    .unwrap();
    let o = collbench(&["check-topology", bad.to_str().unwrap()]);
    let (stdout, stderr) = expect_code(&o, 2);
    assert!(stdout.is_empty(), "{stdout}");
    let f = bad.display();
    assert!(
        stderr.contains(&format!(
            "{f}:7: unknown op 'broadcast'; use one of all_reduce, all_to_all"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{f}:20: warn = 480 is on the wrong side of pass = 460"
        )),
        "{stderr}"
    );

    // Syntax: an unknown key, with its line.
    std::fs::write(
        &bad,
        "[topology]\nname = \"x\"\ngpus_per_node = 8\nintra_node = \"NVLink\"\ncolour = \"red\"\n",
    )
    .unwrap();
    let o = collbench(&["check-topology", bad.to_str().unwrap()]);
    let (_, stderr) = expect_code(&o, 2);
    assert!(
        stderr.contains(&format!("{f}:5:")) && stderr.contains("colour"),
        "{stderr}"
    );

    // A run with a bad topology is bad input before anything starts.
    let (_t, out) = fresh_out();
    let o = collbench(&[
        "local",
        "--np",
        "2",
        "--topology",
        bad.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let (_, stderr) = expect_code(&o, 2);
    assert!(stderr.contains(&format!("{f}:5:")), "{stderr}");
    assert!(!out.exists());
    let o = collbench(&["check-topology", "/nonexistent/t.toml"]);
    let (_, stderr) = expect_code(&o, 2);
    assert!(
        stderr.contains("/nonexistent/t.toml: cannot read"),
        "{stderr}"
    );
    let o = collbench(&["bench", "--localize"]);
    let (_, stderr) = expect_code(&o, 2);
    assert!(stderr.contains("--localize: "), "{stderr}");
    let o = collbench(&["bench", "--debug-slow-rank", "two:2ms"]);
    let (_, stderr) = expect_code(&o, 2);
    assert!(stderr.contains("--debug-slow-rank: 'two:2ms'"), "{stderr}");
}

fn local_run(out: &Path, extra: &[&str]) -> std::process::Output {
    let topo = local_cpu();
    let mut args = vec![
        "local",
        "--np",
        "4",
        "-b",
        "8",
        "-e",
        "64K",
        "-n",
        "20",
        "--topology",
        &topo,
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    collbench(&args)
}

#[test]
fn timing_a_healthy_local_run_is_ready() {
    let (_tmp, out) = fresh_out();
    let o = local_run(&out, &["--localize"]);
    let (stdout, _) = expect_code(&o, 0);
    assert!(
        stdout.contains("# Verdict against topology local-cpu"),
        "{stdout}"
    );
    assert!(stdout.contains(": READY"), "{stdout}");
    let doc = read_run(&out);
    assert_schema_valid(&doc);
    let v = verdict(&doc);
    assert_eq!(v["overall"], "ready", "{v}");
    assert_eq!(v["stragglers"].as_array().unwrap().len(), 0, "{v}");
    assert_eq!(v["ranks"].as_array().unwrap().len(), 4);
    let bw = check(&doc, "all_reduce busbw 32K-64K");
    assert!(bw["status"] == "pass" || bw["status"] == "warn", "{bw}");
    assert!(bw["measured"].as_f64().unwrap() >= 0.002, "{bw}");
    assert_eq!(check(&doc, "straggler")["status"], "pass");
    // One host: nothing to pair, and the check says so.
    let loc = check(&doc, "localize");
    assert_eq!(loc["status"], "skipped");
    assert!(
        loc["detail"].as_str().unwrap().contains("1 node(s)"),
        "{loc}"
    );
    // The report renderers read the verdict back.
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("**Verdict: READY**"), "{md}");
}

#[test]
fn timing_a_planted_straggler_is_named_and_fails_the_run() {
    let (_tmp, out) = fresh_out();
    let o = local_run(&out, &["--debug-slow-rank", "2:2ms"]);
    let (stdout, stderr) = expect_code(&o, 1);
    let doc = read_run(&out);
    assert_schema_valid(&doc);
    let host = doc["ranks"][2]["hostname"].as_str().unwrap().to_string();
    assert!(stdout.contains(": NOT READY"), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "rank 2 on host {host}: the other ranks wait for it"
        )),
        "{stdout}"
    );
    assert!(stderr.contains("verdict was not ready"), "{stderr}");
    let v = verdict(&doc);
    assert_eq!(v["overall"], "not_ready");
    let s = v["stragglers"].as_array().unwrap();
    assert_eq!(s.len(), 1, "only rank 2 is flagged: {v}");
    assert_eq!(s[0]["rank"], 2);
    assert_eq!(s[0]["host"], host.as_str());
    assert!(s[0]["factor"].as_f64().unwrap() > 4.0, "{v}");
    assert!(s[0]["p50_ratio"].as_f64().unwrap() < 1.0, "{v}");
    let c = check(&doc, "straggler");
    assert_eq!(c["status"], "fail");
    assert!(c["measured"]
        .as_str()
        .unwrap()
        .starts_with("rank 2 on host"));
    assert_eq!(doc["config"]["debug_slow_rank"]["delay_us"], 2000);
}

#[test]
fn unmeasured_sizes_and_other_scopes_are_skipped_with_a_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let topo = tmp.path().join("t.toml");
    std::fs::write(
        &topo,
        "[topology]\nname = \"t\"\ngpus_per_node = 0\nintra_node = \"shm\"\n\n\
         [[check]]\nname = \"big\"\nop = \"all_reduce\"\nscope = \"any\"\nmetric = \"busbw_gbps\"\nsize = \"1G\"\npass = 1\nwarn = 0.5\n\n\
         [[check]]\nname = \"across\"\nop = \"all_reduce\"\nscope = \"inter_node\"\nmetric = \"busbw_gbps\"\nsize = \"1K\"\npass = 1\nwarn = 0.5\n\n\
         [[check]]\nname = \"a2a\"\nop = \"all_to_all\"\nscope = \"any\"\nmetric = \"latency_p99_us\"\nsize = \"1K\"\npass = 100000\nwarn = 200000\n\n\
         [straggler]\nwarn_factor = 3\nfail_factor = 10\n",
    )
    .unwrap();
    let (_t, out) = fresh_out();
    // A 1K-4K all-reduce sweep judged against `topo`, on `np` ranks.
    let sweep = |np: usize, out: &std::path::Path| {
        bench_mpi(
            np,
            &[
                "-b",
                "1K",
                "-e",
                "4K",
                "-n",
                "20",
                "--op",
                "all_reduce",
                "--topology",
                topo.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ],
        )
    };
    let o = sweep(3, &out);
    // Every threshold check is skipped, each with its reason; the straggler rule (3 ranks) is the
    // one check judged, so the run is ready on it alone.
    let doc = read_run(&out);
    assert_schema_valid(&doc);
    let big = check(&doc, "big");
    assert_eq!(big["status"], "skipped");
    assert!(
        big["detail"]
            .as_str()
            .unwrap()
            .starts_with("not measured: this run's all_reduce sizes were 1K-4K"),
        "{big}"
    );
    assert!(big["measured"].is_null());
    let across = check(&doc, "across");
    assert_eq!(across["status"], "skipped");
    assert!(across["detail"].as_str().unwrap().contains("one host"));
    let a2a = check(&doc, "a2a");
    assert_eq!(a2a["status"], "skipped");
    assert!(a2a["detail"].as_str().unwrap().contains("add it to --op"));
    assert_eq!(verdict(&doc)["overall"], "ready");
    expect_code(&o, 0);

    // With 2 ranks the straggler rule cannot judge either: nothing evaluated is not ready.
    let (_t2, out2) = fresh_out();
    let o = sweep(2, &out2);
    let (stdout, stderr) = expect_code(&o, 1);
    let doc = read_run(&out2);
    assert_eq!(verdict(&doc)["overall"], "not_ready");
    assert_eq!(check(&doc, "straggler")["status"], "skipped");
    assert!(stdout.contains("NOT READY"), "{stdout}");
    assert!(stderr.contains("no check could be evaluated"), "{stderr}");
}

#[test]
fn a_gpu_topology_fails_a_cpu_run_on_backend_and_skips_what_it_did_not_measure() {
    let (_t, out) = fresh_out();
    let topo = Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies/h100-sxm-8x.toml");
    let o = bench_mpi(
        3,
        &[
            "-b",
            "1M",
            "-e",
            "1M",
            "-n",
            "3",
            "--backend",
            "mpi",
            "--topology",
            topo.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
    );
    expect_code(&o, 1);
    let doc = read_run(&out);
    assert_schema_valid(&doc);
    assert_eq!(check(&doc, "backend")["status"], "fail");
    let rpn = check(&doc, "ranks per node");
    assert_eq!(rpn["status"], "fail");
    assert!(
        rpn["measured"].as_str().unwrap().ends_with("ran 3"),
        "{rpn}"
    );
    assert_eq!(
        check(&doc, "all_reduce busbw 8-16G, one node (NVLS)")["status"],
        "skipped"
    );
}

#[test]
fn timing_localize_names_the_host_of_a_planted_straggler_on_four_hosts() {
    need_root!();
    let c = Cluster::up(4);
    let topo = Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies/vcluster-cpu.toml");
    let run = |out: &Path, extra: &[&str]| {
        let mut args = vec![
            "-b",
            "1K",
            "-e",
            "64K",
            "-n",
            "20",
            "--op",
            "all_reduce",
            "--topology",
            topo.to_str().unwrap(),
            "--localize",
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        c.bench(4, &args)
    };
    let (_t, out) = fresh_out();
    // 5 ms: on 2 shared cores under load, time slices reach ms themselves.
    let o = run(&out, &["--debug-slow-rank", "2:5ms"]);
    let (stdout, _) = expect_code(&o, 1);
    let doc = read_run(&out);
    assert_schema_valid(&doc);
    let h3 = format!("{}-h3", c.prefix);
    assert_eq!(doc["ranks"][2]["hostname"], h3.as_str(), "--map-by node");
    let l = &verdict(&doc)["localization"];
    assert_eq!(l["rounds"].as_array().unwrap().len(), 3, "{l}");
    // Noise may make a pair of healthy nodes look slow once; a re-run must clear it.
    let confirmed = |key: &str| -> Vec<serde_json::Value> {
        l[key]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["confirmed"] == true)
            .cloned()
            .collect()
    };
    let culprits = confirmed("suspects");
    assert_eq!(culprits.len(), 1, "{l}");
    assert_eq!(culprits[0]["node"], h3.as_str());
    assert_eq!(culprits[0]["slow_pairs"], 3);
    assert!(confirmed("bad_links").is_empty(), "{l}");
    let loc = check(&doc, "localize");
    assert_eq!(loc["status"], "fail");
    assert!(
        loc["measured"]
            .as_str()
            .unwrap()
            .starts_with(&format!("node {h3}: slow with 3/3 partners")),
        "{loc}"
    );
    assert!(
        stdout.contains(&format!("node {h3}: slow with 3/3")),
        "{stdout}"
    );
    // The straggler rule names it too (warn or fail: under load its factor is 4-20x).
    assert_eq!(verdict(&doc)["stragglers"][0]["rank"], 2);
    assert_eq!(verdict(&doc)["stragglers"][0]["host"], h3.as_str());
    assert_ne!(check(&doc, "node skew")["status"], "pass");

    // The same cluster without the planted straggler: nothing is blamed.
    let (_t2, out2) = fresh_out();
    let o = run(&out2, &[]);
    expect_code(&o, 0);
    let doc = read_run(&out2);
    assert_schema_valid(&doc);
    let l = &verdict(&doc)["localization"];
    assert!(
        l["suspects"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["confirmed"] == false),
        "{l}"
    );
    assert_ne!(check(&doc, "localize")["status"], "fail");
    assert_eq!(check(&doc, "straggler")["status"], "pass");
}

#[test]
fn timing_localize_names_the_host_behind_a_rate_limited_link() {
    use collbench::control::link::{self, BitRate, Fault, IfaceName, NetnsName, Where};
    need_root!();
    let c = Cluster::up(4);
    let h2 = format!("{}-h2", c.prefix);
    let at = Where::Netns(NetnsName::parse(&h2).unwrap());
    let fault = Fault::Rate {
        iface: IfaceName::parse("eth0").unwrap(),
        rate: BitRate::parse("100mbit").unwrap(),
        burst: None,
    };
    let (lease, _delayer) = link::apply(&fault, &at).expect("rate-limit h2's eth0");
    let topo = Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies/vcluster-cpu.toml");
    let (_t, out) = fresh_out();
    let o = c.bench(
        4,
        &[
            "-b",
            "32K",
            "-e",
            "64K",
            "-n",
            "10",
            "--op",
            "all_reduce",
            "--topology",
            topo.to_str().unwrap(),
            "--localize",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let _ = link::revert(&lease);
    let (stdout, _) = expect_code(&o, 1);
    let doc = read_run(&out);
    assert_schema_valid(&doc);
    let l = &verdict(&doc)["localization"];
    let culprits: Vec<&serde_json::Value> = l["suspects"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["confirmed"] == true)
        .collect();
    assert_eq!(culprits.len(), 1, "{l}");
    assert_eq!(culprits[0]["node"], h2.as_str(), "{l}");
    assert!(
        stdout.contains(&format!("node {h2}: slow with 3/3")),
        "{stdout}"
    );
}
