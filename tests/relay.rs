//! Node relays (`--relay node`) under the real controller and real mpirun: commands reach relayed
//! ranks, their loss is attributed to them (or to the relay), and uploads merge to what MPI gathered.

mod common;

use std::path::Path;

use common::*;

/// Runs alone (timing_): the relay must see the closed connection within the 1 s heartbeat
/// timeout, and once, beside another 4-rank job spinning on 2 cores, it took 1.09 s.
#[test]
fn timing_a_killed_relayed_rank_is_named_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let out = out_dir(&tmp, "kill");
    let p = plan(
        tmp.path(),
        "[[fault]]\nkind = \"kill\"\ntarget = \"rank:2\"\nstart = \"1s\"\n",
    );
    let (code, log) = local_with_plan("4", &p, &out, &["--run-for", "60s", "--relay", "node"]);
    assert_eq!(code, 3, "{log}");
    assert!(
        log.contains("rank 2 registered from") && log.contains("through relay rank 0"),
        "rank 2 went through the relay: {log}"
    );
    let doc = read_run(&out);
    assert_schema_valid(&doc);
    let d = &doc["faults"][0]["detected"];
    assert_eq!(d["mechanism"], "connection_lost", "{doc:#}");
    assert_eq!(d["rank"], 2, "{d}");
    assert!(d["detail"].as_str().unwrap().contains("node relay"), "{d}");
    assert!(d["after_s"].as_f64().unwrap() < 1.0, "{d}");
    no_process_left(&out);
}

#[test]
fn a_dead_relay_is_named_and_its_ranks_lost_with_it() {
    let tmp = tempfile::tempdir().unwrap();
    let out = out_dir(&tmp, "relay-dies");
    let p = plan(
        tmp.path(),
        "[[fault]]\nkind = \"kill\"\ntarget = \"rank:0\"\nstart = \"1s\"\n",
    );
    let (code, log) = local_with_plan("4", &p, &out, &["--run-for", "60s", "--relay", "node"]);
    assert_eq!(code, 3, "{log}");
    let doc = read_run(&out);
    let d = &doc["faults"][0]["detected"];
    assert_eq!(d["mechanism"], "connection_lost", "{doc:#}");
    assert_eq!(d["rank"], 0, "{d}");
    assert!(
        d["detail"].as_str().unwrap().contains("[1, 2, 3]"),
        "its relayed ranks are lost with it: {d}"
    );
    no_process_left(&out);
}

#[test]
fn commands_reach_relayed_ranks() {
    let tmp = tempfile::tempdir().unwrap();
    let out = out_dir(&tmp, "faults");
    // An Apply and its Revert (slow), and an ArmAt (corrupt at a point), each for a relayed rank.
    let p = plan(
        tmp.path(),
        "[[fault]]\nkind = \"slow\"\ntarget = \"rank:2\"\nstart = \"300ms\"\nduration = \"1s\"\ndelay = \"2ms\"\n\n\
         [[fault]]\nkind = \"corrupt\"\ntarget = \"rank:3\"\nstart = { op = \"all_to_all\", size = \"1K\", iteration = 0 }\n",
    );
    let (code, log) = local_with_plan(
        "4",
        &p,
        &out,
        &["--run-for", "2s", "--op", "all_to_all", "--relay", "node"],
    );
    assert_eq!(code, 1, "wrong values are a failed test: {log}");
    let doc = read_run(&out);
    assert_schema_valid(&doc);
    let slow = &doc["faults"][0];
    assert_eq!(slow["ranks"], serde_json::json!([2]), "{slow}");
    assert_eq!(
        slow["revert"], "the rank stops sleeping before each collective",
        "rank 2's agent applied it: {slow}"
    );
    assert!(
        slow["reverted_at_s"].as_f64().unwrap() > slow["applied_at_s"].as_f64().unwrap(),
        "rank 2's agent reverted it: {slow}"
    );
    let corrupt = &doc["faults"][1];
    assert!(corrupt["applied_at_s"].is_number(), "{corrupt}");
    assert_eq!(corrupt["detected"]["mechanism"], "wrong_data", "{corrupt}");
    assert_eq!(corrupt["detected"]["rank"], 3, "{corrupt}");
    assert!(
        log.contains("fault 1 (corrupt rank:3) reached its point on rank 3"),
        "{log}"
    );
    no_process_left(&out);
}

/// The controller's merged uploads equal rank 0's MPI-merged records, key by key.
fn uploads_match_records(out: &Path, relay: &str) {
    let doc = read_run(out);
    let merged: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("controller_results.json")).expect("uploads written"),
    )
    .unwrap();
    let records = doc["results"].as_array().unwrap();
    let rows = merged["results"].as_array().unwrap();
    assert_eq!(records.len(), rows.len(), "{merged:#}");
    assert_eq!(
        records.len(),
        12,
        "all-reduce in 2 types x 2 reductions, all-to-all in 2 types, two placements: {merged:#}"
    );
    for rec in records {
        let row = rows
            .iter()
            .find(|r| {
                r["op"] == rec["op"]
                    && r["dtype"] == rec["dtype"]
                    && r["redop"] == rec["redop"]
                    && r["size_bytes"] == rec["size_bytes"]
                    && r["placement"] == rec["placement"]
            })
            .unwrap_or_else(|| panic!("no upload for {rec}"));
        assert_eq!(row["ranks"], 4, "{row}");
        // A node relay sends one merged upload per key; otherwise every rank sends its own.
        assert_eq!(row["uploads"], if relay == "node" { 1 } else { 4 }, "{row}");
        let (a, b) = (&row["latency"], &rec["latency"]);
        assert_eq!(a["samples"], 4 * 30, "{row}");
        for k in [
            "samples", "min_us", "p50_us", "p90_us", "p99_us", "max_us", "mean_us",
        ] {
            assert_eq!(
                a[k], b[k],
                "{k} of {} {} {} {}: {a} vs {b}",
                rec["op"], rec["dtype"], rec["redop"], rec["placement"]
            );
        }
    }
}

#[test]
fn uploaded_histograms_equal_the_gathered_ones() {
    for relay in ["off", "node"] {
        let tmp = tempfile::tempdir().unwrap();
        let out = out_dir(&tmp, relay);
        let p = plan(tmp.path(), "");
        let (code, log) = local_with_plan(
            "4",
            &p,
            &out,
            &["--relay", relay, "-d", "float,int32", "-o", "sum,max"],
        );
        assert_eq!(code, 0, "{log}");
        uploads_match_records(&out, relay);
    }
}

#[test]
fn timing_a_hung_relayed_rank_is_named_by_missed_heartbeats() {
    let tmp = tempfile::tempdir().unwrap();
    let out = out_dir(&tmp, "hang");
    let p = plan(
        tmp.path(),
        "[[fault]]\nkind = \"hang\"\ntarget = \"rank:1\"\nstart = \"1s\"\nduration = \"2s\"\n",
    );
    let (code, log) = local_with_plan("4", &p, &out, &["--run-for", "4s", "--relay", "node"]);
    assert_eq!(code, 0, "{log}");
    let doc = read_run(&out);
    let f = &doc["faults"][0];
    // The relay leaves a rank that sent it no heartbeat out of its node's heartbeat.
    assert_eq!(f["detected"]["mechanism"], "missed_heartbeat", "{f}");
    assert_eq!(f["detected"]["rank"], 1, "{f}");
    assert!(f["detected"]["after_s"].as_f64().unwrap() < 2.0, "{f}");
    assert_eq!(f["outcome"], "recovered", "{f}");
    no_process_left(&out);
}
