//! results.csv: one row per record with the headline numbers and latency percentiles, for
//! spreadsheets and pandas (RFC 4180 quoting; empty cell where a value was not measured).

use super::read::RunData;

pub const HEADER: &[&str] = &[
    "op",
    "dtype",
    "redop",
    "root",
    "placement",
    "size_bytes",
    "count",
    "iterations",
    "time_us",
    "time_us_min_rank",
    "time_us_max_rank",
    "algbw_gbps",
    "busbw_gbps",
    "wrong",
    "samples",
    "clamped",
    "min_us",
    "p50_us",
    "p90_us",
    "p99_us",
    "p999_us",
    "max_us",
    "mean_us",
    "stdev_us",
    "skew_p50_us",
    "skew_p99_us",
    "skew_max_us",
    "start_unix_s",
    "histogram_tag",
];

fn field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

pub fn render(run: &RunData) -> String {
    let mut out = HEADER.join(",");
    out.push('\n');
    for r in &run.results {
        let l = &r.latency;
        let lat = |v: f64| {
            if r.has_latency() {
                v.to_string()
            } else {
                String::new()
            }
        };
        let row = [
            field(&r.op),
            field(&r.dtype),
            field(&r.redop),
            r.root.to_string(),
            field(&r.placement),
            r.size_bytes.to_string(),
            r.count.to_string(),
            r.iterations.to_string(),
            r.time_us.to_string(),
            r.time_us_min_rank.to_string(),
            r.time_us_max_rank.to_string(),
            r.algbw_gbps.to_string(),
            r.busbw_gbps.to_string(),
            r.wrong.map_or(String::new(), |w| w.to_string()),
            l.samples.to_string(),
            l.clamped.to_string(),
            lat(l.min_us),
            lat(l.p50_us),
            lat(l.p90_us),
            lat(l.p99_us),
            lat(l.p999_us),
            lat(l.max_us),
            lat(l.mean_us),
            lat(l.stdev_us),
            lat(r.skew.p50_us),
            lat(r.skew.p99_us),
            lat(r.skew.max_us),
            format!("{:.6}", r.start_unix_s),
            field(&r.histogram_tag),
        ];
        out.push_str(&row.join(","));
        out.push('\n');
    }
    out
}
