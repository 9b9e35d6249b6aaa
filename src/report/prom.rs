//! metrics.prom: the headline numbers in Prometheus' text exposition format (0.0.4), for
//! node_exporter's textfile collector; written atomically so the collector never reads half a file.

use std::fmt::Write;

use super::read::{RecordData, RunData};

fn label_value(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn labels(r: &RecordData) -> String {
    format!(
        "op=\"{}\",dtype=\"{}\",redop=\"{}\",placement=\"{}\",size_bytes=\"{}\"",
        label_value(&r.op),
        label_value(&r.dtype),
        label_value(&r.redop),
        label_value(&r.placement),
        r.size_bytes
    )
}

fn family(s: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(s, "# HELP {name} {help}");
    let _ = writeln!(s, "# TYPE {name} {kind}");
}

fn num(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

type PerRecord = fn(&RecordData) -> f64;

/// `run` names the results folder in the run_info labels.
pub fn render(run: &RunData, name: &str) -> String {
    let mut s = String::new();
    family(
        &mut s,
        "collbench_run_info",
        "gauge",
        "Always 1; labels say which run and build wrote these metrics.",
    );
    let _ = writeln!(
        s,
        "collbench_run_info{{run=\"{}\",collbench_version=\"{}\",backend=\"{}\",status=\"{}\"}} 1",
        label_value(name),
        label_value(&run.collbench_version),
        label_value(&run.backend.name),
        label_value(&run.status)
    );
    family(
        &mut s,
        "collbench_run_complete",
        "gauge",
        "1 when the sweep ran to its end, 0 while running, killed or failed.",
    );
    let _ = writeln!(
        s,
        "collbench_run_complete {}",
        (run.status == "complete") as u8
    );
    if let Ok(t) = humantime::parse_rfc3339(&run.start_time) {
        if let Ok(d) = t.duration_since(std::time::UNIX_EPOCH) {
            family(
                &mut s,
                "collbench_run_start_timestamp_seconds",
                "gauge",
                "When the run started, seconds since the Unix epoch.",
            );
            let _ = writeln!(s, "collbench_run_start_timestamp_seconds {}", d.as_secs());
        }
    }
    family(&mut s, "collbench_world_size", "gauge", "Ranks in the run.");
    let _ = writeln!(s, "collbench_world_size {}", run.world_size);
    family(
        &mut s,
        "collbench_wrong_total",
        "counter",
        "Wrong elements found by the correctness check, summed over ranks and records.",
    );
    let _ = writeln!(s, "collbench_wrong_total {}", run.summary.wrong_total);
    if let Some(v) = &run.verdict {
        family(
            &mut s,
            "collbench_ready",
            "gauge",
            "1 when the readiness verdict against the topology is ready, else 0.",
        );
        let _ = writeln!(s, "collbench_ready {}", (v.overall == "ready") as u8);
    }
    family(
        &mut s,
        "collbench_avg_busbw_gbps",
        "gauge",
        "Mean bus bandwidth over all rows of a collective (nccl-tests' Avg bus bandwidth), GB/s.",
    );
    for (op, bw) in &run.summary.avg_busbw_gbps {
        let _ = writeln!(
            s,
            "collbench_avg_busbw_gbps{{op=\"{}\"}} {}",
            label_value(op),
            num(*bw)
        );
    }
    let per_record: [(&str, &str, &str, PerRecord); 3] = [
        (
            "collbench_busbw_gbps",
            "gauge",
            "Bus bandwidth (nccl-tests' formula), GB/s (1e9 B/s).",
            |r| r.busbw_gbps,
        ),
        (
            "collbench_algbw_gbps",
            "gauge",
            "Algorithm bandwidth: size / time, GB/s (1e9 B/s).",
            |r| r.algbw_gbps,
        ),
        (
            "collbench_time_seconds",
            "gauge",
            "Batched time per call: wall time of n back-to-back calls / n, averaged over ranks.",
            |r| r.time_us * 1e-6,
        ),
    ];
    for (name, kind, help, f) in per_record {
        family(&mut s, name, kind, help);
        for r in &run.results {
            let _ = writeln!(s, "{name}{{{}}} {}", labels(r), num(f(r)));
        }
    }
    let timed: Vec<&RecordData> = run.results.iter().filter(|r| r.has_latency()).collect();
    if !timed.is_empty() {
        family(
            &mut s,
            "collbench_latency_seconds",
            "summary",
            "Per-iteration latency of every timed iteration on every rank (merged HdrHistogram).",
        );
        for r in &timed {
            let l = labels(r);
            let lat = &r.latency;
            for (q, v) in [
                ("0.5", lat.p50_us),
                ("0.9", lat.p90_us),
                ("0.99", lat.p99_us),
                ("0.999", lat.p999_us),
            ] {
                let _ = writeln!(
                    s,
                    "collbench_latency_seconds{{{l},quantile=\"{q}\"}} {}",
                    num(v * 1e-6)
                );
            }
            let _ = writeln!(
                s,
                "collbench_latency_seconds_sum{{{l}}} {}",
                num(lat.mean_us * 1e-6 * lat.samples as f64)
            );
            let _ = writeln!(s, "collbench_latency_seconds_count{{{l}}} {}", lat.samples);
        }
        family(
            &mut s,
            "collbench_latency_max_seconds",
            "gauge",
            "Slowest timed iteration on any rank.",
        );
        for r in &timed {
            let _ = writeln!(
                s,
                "collbench_latency_max_seconds{{{}}} {}",
                labels(r),
                num(r.latency.max_us * 1e-6)
            );
        }
        family(
            &mut s,
            "collbench_skew_p99_seconds",
            "gauge",
            "p99 of per-iteration skew: slowest minus fastest rank in the same iteration.",
        );
        for r in &timed {
            let _ = writeln!(
                s,
                "collbench_skew_p99_seconds{{{}}} {}",
                labels(r),
                num(r.skew.p99_us * 1e-6)
            );
        }
    }
    s
}
