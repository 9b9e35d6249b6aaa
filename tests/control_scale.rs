//! The controller at small scale, correctness only: 200 simulated ranks (150 on their own
//! connections, 50 through 10 node relays) register with the real `collbench controller`, heartbeat,
//! upload histograms and leave; every rank is registered, every result merged exactly, and the two
//! ranks that stop heartbeating (one direct, one relayed) are the ones named by missed_heartbeat.
//! The timed version for 1k-100k ranks is `examples/control_load.rs`.

mod common;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use base64::Engine;
use collbench::control::proto::{self, Hello, Progress, ResultKey, ToController, ToRank};
use collbench::metrics::LatencyHistogram;

const RANKS: usize = 200;
const DIRECT: usize = 150;
const PER_RELAY: usize = 5;
const SILENT_DIRECT: usize = 77;
const SILENT_RELAYED: usize = 163;
/// (op, dtype, redop, size): two rows that differ only in their type stay apart.
const KEYS: [(&str, &str, &str, u64); 4] = [
    ("all_reduce", "float", "sum", 8),
    ("all_reduce", "double", "sum", 8),
    ("all_reduce", "float", "sum", 1 << 20),
    ("all_to_all", "float", "none", 4096),
];

fn hello(secret: &str, rank: usize) -> Hello {
    let node = if rank < DIRECT {
        rank
    } else {
        rank / PER_RELAY
    };
    Hello::simulated(secret, rank, RANKS, format!("sim-{node}"), 0)
}

/// Rank r's histogram for key k: 100 + r samples, deterministic.
fn histogram(r: usize, k: usize) -> LatencyHistogram {
    let mut h = LatencyHistogram::new();
    for i in 0..(100 + r as u64) {
        h.record(1_000 * (k as u64 + 1) + (i * 7919 + r as u64 * 104_729) % 500_000);
    }
    h
}

fn b64(h: &LatencyHistogram) -> String {
    base64::engine::general_purpose::STANDARD.encode(h.to_bytes())
}

fn progress(ticks: u64) -> Progress {
    Progress {
        ticks,
        activity: "timed loop".into(),
        op: Some("all_reduce".into()),
        size: Some(8),
        iteration: ticks,
    }
}

#[test]
fn two_hundred_ranks_register_upload_and_the_silent_ones_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("results");
    let ctl = common::Controller::start(
        tmp.path(),
        "[run]\nheartbeat = \"200ms\"\nheartbeat_timeout = \"2s\"\nstall = \"600s\"\nabort_after = \"600s\"\n",
        &["--results", results.to_str().unwrap()],
    );
    let (addr, secret) = (ctl.addr.clone(), ctl.secret.clone());
    let find = |pat: &str| ctl.find(pat);

    // Connections: (first rank, members it relays).
    let mut conns: Vec<(usize, Vec<usize>, TcpStream)> = Vec::new();
    let shapes = (0..DIRECT).map(|r| (r, Vec::new())).chain(
        (DIRECT..RANKS)
            .step_by(PER_RELAY)
            .map(|r| (r, (r + 1..r + PER_RELAY).collect())),
    );
    for (first, members) in shapes {
        let mut s = TcpStream::connect(&addr).unwrap();
        proto::write_frame(&mut s, &ToController::Hello(hello(&secret, first))).unwrap();
        if !members.is_empty() {
            let hellos = members.iter().map(|&r| hello(&secret, r)).collect();
            proto::write_frame(&mut s, &ToController::Members { hellos }).unwrap();
        }
        let welcome: ToRank = proto::read_frame(&mut s).unwrap();
        assert!(matches!(welcome, ToRank::Welcome { .. }), "{welcome:?}");
        conns.push((first, members, s));
    }
    assert_eq!(conns.len(), DIRECT + (RANKS - DIRECT) / PER_RELAY);
    proto::write_frame(&mut conns[0].2, &ToController::SweepStarted { unix_s: 0.0 }).unwrap();

    // Heartbeats from everyone but the two silent ranks until both are named (bounded wait).
    let t0 = Instant::now();
    let mut ticks = 0;
    let named = |r: usize| find(&format!("detected missed_heartbeat (rank {r} "));
    while named(SILENT_DIRECT).is_none() || named(SILENT_RELAYED).is_none() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the silent ranks were not named: {}",
            ctl.said()
        );
        ticks += 1;
        for (first, members, s) in &mut conns {
            let msg = if members.is_empty() {
                if *first == SILENT_DIRECT {
                    continue;
                }
                ToController::Heartbeat {
                    progress: progress(ticks),
                    retrans: Vec::new(),
                }
            } else {
                ToController::NodeHeartbeat {
                    ranks: std::iter::once(*first)
                        .chain(members.iter().copied())
                        .filter(|&r| r != SILENT_RELAYED)
                        .map(|r| (r, progress(ticks)))
                        .collect(),
                    retrans: Vec::new(),
                }
            };
            proto::write_frame(s, &msg).unwrap();
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    // Uploads: per rank and key (a relay sends its node merged), then goodbye.
    for (first, members, s) in &mut conns {
        for (k, (op, dtype, redop, size)) in KEYS.iter().enumerate() {
            let mut h = histogram(*first, k);
            for &m in members.iter() {
                h.merge(&histogram(m, k)).unwrap();
            }
            proto::write_frame(
                s,
                &ToController::Results {
                    key: ResultKey {
                        op: op.to_string(),
                        dtype: dtype.to_string(),
                        redop: redop.to_string(),
                        size: *size,
                        placement: "out_of_place".into(),
                    },
                    ranks: 1 + members.len() as u64,
                    histogram: b64(&h),
                },
            )
            .unwrap();
        }
        proto::write_frame(
            s,
            &ToController::Goodbye {
                reason: "complete".into(),
            },
        )
        .unwrap();
    }
    let (code, stdout, said) = ctl.finish();
    assert_eq!(code, Some(0), "{stdout}\n{said}");
    let detected: Vec<&str> = said
        .lines()
        .filter(|l| l.contains("detected missed_heartbeat"))
        .collect();
    assert_eq!(
        detected.len(),
        2,
        "only the silent ranks are named: {detected:#?}"
    );

    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(results.join("controller_results.json")).unwrap())
            .unwrap();
    assert_eq!(doc["registered_ranks"], RANKS);
    let rows = doc["results"].as_array().unwrap();
    assert_eq!(rows.len(), KEYS.len(), "{doc:#}");
    for (k, (op, dtype, redop, size)) in KEYS.iter().enumerate() {
        let mut expected = LatencyHistogram::new();
        for r in 0..RANKS {
            expected.merge(&histogram(r, k)).unwrap();
        }
        let row = rows
            .iter()
            .find(|r| {
                r["op"] == *op
                    && r["dtype"] == *dtype
                    && r["redop"] == *redop
                    && r["size_bytes"] == *size
            })
            .unwrap_or_else(|| panic!("no row for {op} {dtype} {redop} {size}: {doc:#}"));
        assert_eq!(row["ranks"], RANKS as u64);
        assert_eq!(row["uploads"], conns.len() as u64);
        let merged = base64::engine::general_purpose::STANDARD
            .decode(row["histogram"].as_str().unwrap())
            .unwrap();
        let merged = LatencyHistogram::from_bytes(&merged).unwrap();
        assert_eq!(merged.inner(), expected.inner(), "{op} {size}");
        let want = expected.summary();
        let got = &row["latency"];
        assert_eq!(got["samples"], want.samples);
        for (name, v) in [
            ("p50_us", want.p50_us),
            ("p99_us", want.p99_us),
            ("max_us", want.max_us),
        ] {
            assert_eq!(got[name].as_f64(), Some(v), "{op} {size} {name}");
        }
    }
}
