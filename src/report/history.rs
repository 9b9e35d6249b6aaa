//! `collbench history`: one metric across many runs in a folder (sorted by start time), as a
//! table for the terminal and an HTML page with an SVG trend plot per collective.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use super::read::{self, series_name, LoadedRun, RecordData};
use super::svg::{esc, fmt_num, Axis, LinePlot, Scale, Series};
use crate::plan::size::format_size;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    Busbw,
    P50,
    P99,
}

impl Metric {
    pub fn parse(s: &str) -> Option<Metric> {
        match s {
            "busbw" => Some(Metric::Busbw),
            "p50" => Some(Metric::P50),
            "p99" => Some(Metric::P99),
            _ => None,
        }
    }
    pub fn label(self) -> &'static str {
        match self {
            Metric::Busbw => "busbw (GB/s)",
            Metric::P50 => "p50 latency (us)",
            Metric::P99 => "p99 latency (us)",
        }
    }
    fn value(self, r: &RecordData) -> Option<f64> {
        match self {
            Metric::Busbw => Some(r.busbw_gbps),
            Metric::P50 => r.has_latency().then_some(r.latency.p50_us),
            Metric::P99 => r.has_latency().then_some(r.latency.p99_us),
        }
    }
}

pub struct Filter {
    pub ops: Vec<String>,
    /// Empty: the largest size of each op in the newest run.
    pub sizes: Vec<u64>,
    pub all_sizes: bool,
    pub placements: Vec<String>,
}

/// One line of the trend: (op, dtype, redop, placement, size).
type SeriesKey = (String, String, String, String, u64);

pub struct History {
    pub metric: Metric,
    pub runs: Vec<LoadedRun>,
    pub series: Vec<SeriesKey>,
    /// values[run][series]
    pub values: Vec<Vec<Option<f64>>>,
    /// Folders that were skipped, with why.
    pub skipped: Vec<String>,
}

/// Reads every results folder directly inside `dir`; unreadable ones are skipped and listed.
pub fn load_dir(dir: &Path) -> Result<(Vec<LoadedRun>, Vec<String>), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        format!(
            "{}: cannot read the folder ({e}); pass a folder that holds results folders",
            dir.display()
        )
    })?;
    let mut runs = Vec::new();
    let mut skipped = Vec::new();
    let mut paths: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for p in paths {
        if !p.join("run.json").is_file() {
            continue;
        }
        match read::load(&p) {
            Ok(l) => runs.push(l),
            Err(e) => skipped.push(e.to_string()),
        }
    }
    runs.sort_by(|a, b| {
        a.run
            .start_time
            .cmp(&b.run.start_time)
            .then_with(|| a.name().cmp(&b.name()))
    });
    Ok((runs, skipped))
}

pub fn build(
    runs: Vec<LoadedRun>,
    skipped: Vec<String>,
    metric: Metric,
    f: &Filter,
) -> Result<History, String> {
    let Some(newest) = runs.last() else {
        return Err("no readable results folder (one holding run.json) in it".into());
    };
    let wanted = |r: &RecordData| {
        (f.ops.is_empty() || f.ops.contains(&r.op)) && f.placements.contains(&r.placement)
    };
    let mut largest: BTreeMap<String, u64> = BTreeMap::new();
    for r in newest.run.results.iter().filter(|r| wanted(r)) {
        let e = largest.entry(r.op.clone()).or_default();
        *e = (*e).max(r.size_bytes);
    }
    let mut series: Vec<SeriesKey> = Vec::new();
    for run in &runs {
        for r in run.run.results.iter().filter(|r| wanted(r)) {
            let size_ok = if f.all_sizes {
                true
            } else if f.sizes.is_empty() {
                largest.get(&r.op) == Some(&r.size_bytes)
            } else {
                f.sizes.contains(&r.size_bytes)
            };
            let k = r.key();
            if size_ok && !series.contains(&k) {
                series.push(k);
            }
        }
    }
    if series.is_empty() {
        return Err(format!(
            "no run has records matching --op {} --size {} --placement {}; drop a filter or check the names",
            if f.ops.is_empty() { "(any)".into() } else { f.ops.join(",") },
            if f.all_sizes {
                "all".into()
            } else if f.sizes.is_empty() {
                "(largest)".into()
            } else {
                f.sizes.iter().map(|s| format_size(*s)).collect::<Vec<_>>().join(",")
            },
            f.placements.join(",")
        ));
    }
    series.sort();
    let values = runs
        .iter()
        .map(|run| {
            let by_key: BTreeMap<_, _> = run.run.results.iter().map(|r| (r.key(), r)).collect();
            series
                .iter()
                .map(|k| by_key.get(k).and_then(|r| metric.value(r)))
                .collect()
        })
        .collect();
    Ok(History {
        metric,
        runs,
        series,
        values,
        skipped,
    })
}

fn series_label(k: &SeriesKey) -> String {
    format!(
        "{} {}",
        series_name(&k.0, &k.1, &k.2, &k.3),
        format_size(k.4)
    )
}

fn fmt(metric: Metric, v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if metric == Metric::Busbw => format!("{v:.3}"),
        Some(v) => super::table::fmt_us(v),
    }
}

impl History {
    /// A fixed-width table: one row per run, one column per series.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# collbench history: {} across {} runs",
            self.metric.label(),
            self.runs.len()
        );
        for (i, k) in self.series.iter().enumerate() {
            let _ = writeln!(s, "# [{}] {}", i + 1, series_label(k));
        }
        let mut header = format!("{:<20}  {:<40}  {:<8}", "start_time", "run", "status");
        for i in 0..self.series.len() {
            let _ = write!(header, "  {:>12}", format!("[{}]", i + 1));
        }
        let _ = writeln!(s, "{}", header.trim_end());
        for (run, vals) in self.runs.iter().zip(&self.values) {
            let mut line = format!(
                "{:<20}  {:<40}  {:<8}",
                run.run.start_time,
                run.name(),
                run.run.status
            );
            for v in vals {
                let _ = write!(line, "  {:>12}", fmt(self.metric, *v));
            }
            let _ = writeln!(s, "{}", line.trim_end());
        }
        for w in &self.skipped {
            let _ = writeln!(s, "# skipped: {w}");
        }
        s
    }

    pub fn html(&self, title: &str) -> String {
        let mut s = String::new();
        let _ = write!(
            s,
            "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>collbench history {}</title><style>body{{font-family:system-ui,sans-serif;margin:24px auto;max-width:1320px;padding:0 16px;color:#222}}table{{border-collapse:collapse;font-size:13px}}td,th{{border:1px solid #ddd;padding:3px 8px;text-align:right}}td.l,th.l{{text-align:left}}th{{background:#f4f4f4}}.plots svg{{border:1px solid #eee}}</style></head><body><h1>collbench history: {}</h1><p>{} across {} runs, oldest first (sorted by start time).</p>",
            esc(title),
            esc(title),
            esc(self.metric.label()),
            self.runs.len()
        );
        let x_labels: Vec<(f64, String)> = self
            .runs
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let t = r.run.start_time.get(5..16).unwrap_or("");
                (i as f64, t.replacen('T', " ", 1))
            })
            .collect();
        let mut by_op: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (j, k) in self.series.iter().enumerate() {
            by_op.entry(k.0.as_str()).or_default().push(j);
        }
        s.push_str("<div class=\"plots\">");
        for (op, cols) in by_op {
            let series = cols
                .iter()
                .enumerate()
                .map(|(c, &j)| {
                    Series::new(
                        series_label(&self.series[j]),
                        c,
                        self.values
                            .iter()
                            .enumerate()
                            .filter_map(|(i, row)| row[j].map(|v| (i as f64, v)))
                            .collect(),
                    )
                })
                .collect();
            let mut x = Axis::new("run (start date)", Scale::Linear, fmt_num);
            x.range = Some((-0.3, (self.runs.len() as f64 - 0.7).max(0.3)));
            let plot = LinePlot {
                title: format!("{op}: {}", self.metric.label()),
                x,
                y: Axis::new(self.metric.label(), Scale::Linear, fmt_num),
                series,
                x_labels: x_labels.clone(),
            };
            s.push_str(&plot.render(1280, 380));
        }
        s.push_str("</div><h2>Table</h2><table><tr><th class=\"l\">start time</th><th class=\"l\">run</th><th class=\"l\">status</th>");
        for k in &self.series {
            let _ = write!(s, "<th>{}</th>", esc(&series_label(k)));
        }
        s.push_str("</tr>");
        for (run, vals) in self.runs.iter().zip(&self.values) {
            let _ = write!(
                s,
                "<tr><td class=\"l\">{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td>",
                esc(&run.run.start_time),
                esc(&run.name()),
                esc(&run.run.status)
            );
            for v in vals {
                let _ = write!(s, "<td>{}</td>", fmt(self.metric, *v));
            }
            s.push_str("</tr>");
        }
        s.push_str("</table>");
        for w in &self.skipped {
            let _ = write!(s, "<p>skipped: {}</p>", esc(w));
        }
        s.push_str("</body></html>\n");
        s
    }
}
