//! The sweep end to end: the real binary under the real mpirun (OpenMPI), the table it prints,
//! the results it writes (validated against the checked-in schema), and its exit codes.

mod common;

use common::*;

fn results(doc: &serde_json::Value) -> &Vec<serde_json::Value> {
    doc["results"].as_array().expect("results array")
}

#[test]
fn two_ranks_every_type_and_op_is_exact() {
    let (_tmp, out) = fresh_out();
    let o = bench_mpi(
        2,
        &[
            "-b",
            "8",
            "-e",
            "4K",
            "-n",
            "3",
            "-d",
            "all",
            "-o",
            "all",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let (stdout, _stderr) = expect_code(&o, 0);
    let doc = read_run(&out);
    assert_schema_valid(&doc);
    assert_eq!(doc["status"], "complete");
    assert_eq!(doc["world_size"], 2);
    // 8 types x (4 redops for all-reduce + 1 for all-to-all) x 10 sizes x 2 placements
    assert_eq!(results(&doc).len(), 8 * 5 * 10 * 2);
    for r in results(&doc) {
        assert_eq!(r["wrong"], 0, "{r}");
        assert_eq!(
            r["latency"]["samples"],
            3 * 2,
            "every iteration of both ranks: {r}"
        );
        assert_eq!(r["per_rank"].as_array().unwrap().len(), 2);
    }
    for dtype in [
        "int8", "uint8", "int32", "uint32", "int64", "uint64", "float", "double",
    ] {
        assert!(
            table_rows(&stdout).iter().any(|row| row[2] == dtype),
            "no row for {dtype}"
        );
    }
    let hlog = std::fs::read_to_string(out.join("histograms.hlog")).unwrap();
    assert_eq!(hlog.lines().filter(|l| l.starts_with("Tag=")).count(), 800);
}

#[test]
fn four_ranks_table_matches_nccl_tests_layout_and_formulas() {
    let (_tmp, out) = fresh_out();
    let o = bench_mpi(
        4,
        &[
            "-b",
            "8",
            "-e",
            "256K",
            "-f",
            "4",
            "-n",
            "5",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let (stdout, _stderr) = expect_code(&o, 0);
    assert!(stdout.contains(
        "#       size         count      type   redop    root     time   algbw   busbw  #wrong"
    ));
    assert_eq!(stdout.matches("# Avg bus bandwidth    :").count(), 2);
    assert_eq!(stdout.matches("# Out of bounds values : 0 OK").count(), 2);
    let rows = table_rows(&stdout);
    // 8 B .. 256 KiB by 4: 8 sizes per collective.
    assert_eq!(rows.len(), 16, "{stdout}");
    for row in &rows {
        // 5 leading columns, 4 per placement, 5 percentile columns per placement.
        assert_eq!(row.len(), 5 + 2 * 4 + 2 * 5, "{row:?}");
        assert_eq!(row[4], "-1");
    }
    let a2a_small = rows.iter().find(|r| r[3] == "none").unwrap();
    assert_eq!(
        a2a_small[0], "0",
        "8 B of float over 4 ranks rounds to 0, as nccl-tests does"
    );

    let doc = read_run(&out);
    assert_schema_valid(&doc);
    assert_eq!(doc["ranks"].as_array().unwrap().len(), 4);
    assert!(doc["backend"]["library_version"]
        .as_str()
        .unwrap()
        .contains("Open MPI"));
    for r in results(&doc) {
        let (alg, bus) = (
            r["algbw_gbps"].as_f64().unwrap(),
            r["busbw_gbps"].as_f64().unwrap(),
        );
        let factor = if r["op"] == "all_reduce" { 1.5 } else { 0.75 };
        assert!((bus - alg * factor).abs() <= 1e-9 * alg.max(1.0), "{r}");
        let t = r["time_us"].as_f64().unwrap();
        let size = r["size_bytes"].as_f64().unwrap();
        if t > 0.0 {
            assert!((alg - size / t / 1e3).abs() <= 1e-9 * alg.max(1.0), "{r}");
        }
        let l = &r["latency"];
        for (lo, hi) in [
            ("min_us", "p50_us"),
            ("p50_us", "p90_us"),
            ("p90_us", "p99_us"),
            ("p99_us", "max_us"),
        ] {
            assert!(
                l[lo].as_f64().unwrap() <= l[hi].as_f64().unwrap(),
                "{lo} <= {hi}: {l}"
            );
        }
        assert_eq!(r["per_rank"].as_array().unwrap().len(), 4);
    }
    let progress = std::fs::read_to_string(out.join("progress.jsonl")).unwrap();
    assert_eq!(progress.lines().count(), results(&doc).len());
}

#[test]
fn one_process_without_mpirun_is_a_world_of_one_with_a_note() {
    let (_tmp, out) = fresh_out();
    let o = collbench(&[
        "bench",
        "-b",
        "8",
        "-e",
        "1K",
        "-n",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    let (stdout, _stderr) = expect_code(&o, 0);
    assert!(
        stdout.contains("# note: no launcher found, running as one process (a world of 1)"),
        "{stdout}"
    );
    let doc = read_run(&out);
    assert_schema_valid(&doc);
    assert_eq!(doc["world_size"], 1);
    assert_eq!(doc["launcher"], "none");
}

#[test]
fn local_launcher_runs_four_ranks_itself() {
    let (_tmp, out) = fresh_out();
    let o = collbench(&[
        "local",
        "--np",
        "4",
        "-b",
        "1K",
        "-e",
        "16K",
        "-n",
        "3",
        "-d",
        "double",
        "-o",
        "min",
        "--out",
        out.to_str().unwrap(),
    ]);
    let (_stdout, stderr) = expect_code(&o, 0);
    assert!(stderr.contains("--oversubscribe"), "{stderr}");
    let doc = read_run(&out);
    assert_schema_valid(&doc);
    assert_eq!(doc["world_size"], 4);
    assert!(results(&doc).iter().all(|r| r["dtype"] == "double"));
}

#[test]
fn a_corrupted_rank_fails_the_run_and_is_counted() {
    let (_tmp, out) = fresh_out();
    let o = bench_mpi(
        3,
        &[
            "-b",
            "64",
            "-e",
            "64",
            "--debug-corrupt-rank",
            "2",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let (stdout, _stderr) = expect_code(&o, 1);
    assert!(stdout.contains("FAILED"), "{stdout}");
    let doc = read_run(&out);
    assert_schema_valid(&doc);
    assert!(doc["summary"]["wrong_total"].as_u64().unwrap() > 0);
    // All-to-all: only rank 0 receives rank 2's corrupted first block.
    let a2a = results(&doc)
        .iter()
        .find(|r| r["op"] == "all_to_all")
        .unwrap();
    let per: Vec<u64> = a2a["per_rank"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["wrong"].as_u64().unwrap())
        .collect();
    assert_eq!(per, vec![1, 0, 0]);
}

#[test]
fn bad_input_is_one_line_exit_2_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["-b", "1M", "-e", "1K"], "-b/--minbytes"),
        (&["-e", "64X"], "--maxbytes"),
        (&["-f", "0"], "-f/--stepfactor"),
        (&["-f", "1"], "-f/--stepfactor"),
        (&["-i", "0"], "-i/--stepbytes"),
        (&["-d", "flaot"], "-d/--datatype"),
        (&["-o", "avg"], "-o/--redop"),
        (&["--op", "broadcast"], "--op"),
        (&["-n", "0"], "-n/--iters"),
        (&["-e", "8T"], "-e/--maxbytes"),
        (&["--timeout", "soon"], "--timeout"),
        (&["--bogus"], "--bogus"),
    ];
    for (i, (args, flag)) in cases.iter().enumerate() {
        let out = out_dir(&tmp, &format!("bad{i}"));
        let mut full: Vec<&str> = args.to_vec();
        let o_str = out.to_str().unwrap().to_string();
        full.extend(["--out", &o_str]);
        // Alone and under mpirun: same code, one line from rank 0 only.
        let alone = {
            let mut a = vec!["bench"];
            a.extend(&full);
            collbench(&a)
        };
        let (_, stderr) = text(&alone);
        assert_eq!(alone.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            stderr.contains(flag),
            "{args:?} should name {flag}: {stderr}"
        );
        assert!(!out.exists(), "{args:?} wrote {out:?}");
    }
    let out = out_dir(&tmp, "mpi");
    let o = bench_mpi(2, &["-d", "flaot", "--out", out.to_str().unwrap()]);
    let (_, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert_eq!(
        stderr.matches("collbench: -d/--datatype").count(),
        1,
        "{stderr}"
    );
    assert!(!out.exists());
}

#[test]
fn an_existing_run_folder_is_not_overwritten() {
    let (_tmp, out) = fresh_out();
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("run.json"), "{}").unwrap();
    let o = collbench(&["bench", "-e", "8", "--out", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(std::fs::read_to_string(out.join("run.json")).unwrap(), "{}");
}
