//! report.md: the run in GitHub-flavoured Markdown for CI job summaries: verdict, headline
//! bandwidth, one table per (op, type, reduction) with busbw and latency percentiles.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::read::{RecordData, RunData};
use super::table::fmt_us;
use crate::plan::size::format_size;

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// The verdict section (or the sentence that there was none).
pub fn verdict(run: &RunData) -> String {
    let mut s = String::new();
    match &run.verdict {
        None => s.push_str(
            "**Verdict:** no topology given (pass `--topology FILE` for a readiness verdict).\n",
        ),
        Some(v) => {
            let mark = if v.overall == "ready" {
                "READY"
            } else {
                "NOT READY"
            };
            let _ = writeln!(
                s,
                "**Verdict: {mark}**{}\n",
                v.topology
                    .as_deref()
                    .map_or(String::new(), |t| format!(" (topology {})", cell(t)))
            );
            if !v.checks.is_empty() {
                s.push_str("| check | status | measured | expected |\n|---|---|---:|---:|\n");
                for c in &v.checks {
                    let _ = writeln!(
                        s,
                        "| {} | {} | {} | {} |",
                        cell(&c.name),
                        cell(&c.status),
                        cell(&c.measured),
                        cell(&c.expected)
                    );
                }
            }
        }
    }
    s
}

pub fn render(run: &RunData, name: &str, warnings: &[String]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "## collbench run `{}`\n", cell(name));
    let _ = writeln!(
        s,
        "status **{}** · {} ranks on {} host(s) · backend {} · started {}{}\n",
        run.status,
        run.world_size,
        run.hosts.len(),
        cell(&run.backend.name),
        run.start_time,
        run.end_time
            .as_deref()
            .map_or(String::new(), |e| format!(", ended {e}"))
    );
    for w in warnings {
        let _ = writeln!(s, "> **warning:** {}\n", cell(w));
    }
    if let Some(e) = &run.error {
        let _ = writeln!(s, "> **error:** {}\n", cell(e));
    }
    s.push_str(&verdict(run));
    s.push('\n');
    let _ = writeln!(
        s,
        "{} records, {} wrong values: **{}**\n",
        run.summary.records,
        run.summary.wrong_total,
        if run.summary.wrong_total == 0 {
            "OK"
        } else {
            "FAILED"
        }
    );
    if !run.summary.avg_busbw_gbps.is_empty() {
        s.push_str("| op | avg bus bandwidth (GB/s) |\n|---|---:|\n");
        for (op, bw) in &run.summary.avg_busbw_gbps {
            let _ = writeln!(s, "| {op} | {bw:.3} |");
        }
        s.push('\n');
    }
    if let Some(faults) = &run.faults {
        s.push_str("### Faults\n\n| id | kind | target | applied (s) | reverted (s) | detected after (s) | by | outcome |\n|---:|---|---|---:|---:|---:|---|---|\n");
        for f in faults {
            let det = f.detected.as_ref();
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                f.id,
                cell(&f.kind),
                cell(&f.target),
                f.applied_at_s.map_or("-".into(), |v| format!("{v:.3}")),
                f.reverted_at_s.map_or("-".into(), |v| format!("{v:.3}")),
                det.and_then(|d| d.after_s)
                    .map_or("-".into(), |v| format!("{v:.3}")),
                det.map_or("not detected".into(), |d| cell(&format!(
                    "{}{}",
                    d.mechanism.as_deref().unwrap_or("?"),
                    d.rank.map_or(String::new(), |r| format!(
                        " (rank {r}{})",
                        d.device
                            .as_deref()
                            .map_or(String::new(), |g| format!(", GPU {g}"))
                    ))
                ))),
                cell(f.outcome.as_deref().unwrap_or("-"))
            );
        }
        s.push('\n');
    }
    // One table per (op, dtype, redop); placements side by side.
    let mut groups: BTreeMap<(String, String, String), Vec<&RecordData>> = BTreeMap::new();
    let mut order = Vec::new();
    for r in &run.results {
        let k = (r.op.clone(), r.dtype.clone(), r.redop.clone());
        if !groups.contains_key(&k) {
            order.push(k.clone());
        }
        groups.entry(k).or_default().push(r);
    }
    for k in order {
        let recs = &groups[&k];
        let title = if k.2 == "none" {
            format!("{} {}", k.0, k.1)
        } else {
            format!("{} {} {}", k.0, k.1, k.2)
        };
        let _ = writeln!(s, "### {title}\n");
        s.push_str("| size | placement | time (us) | algbw (GB/s) | busbw (GB/s) | #wrong | p50 (us) | p99 (us) | p99.9 (us) | max (us) |\n");
        s.push_str("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for r in recs {
            let l = &r.latency;
            let lat = |v: f64| {
                if r.has_latency() {
                    fmt_us(v)
                } else {
                    "-".into()
                }
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {:.2} | {:.2} | {} | {} | {} | {} | {} |",
                format_size(r.size_bytes),
                r.placement,
                fmt_us(r.time_us),
                r.algbw_gbps,
                r.busbw_gbps,
                r.wrong.map_or("N/A".into(), |w| w.to_string()),
                lat(l.p50_us),
                lat(l.p99_us),
                lat(l.p999_us),
                lat(l.max_us)
            );
        }
        s.push('\n');
    }
    s
}
