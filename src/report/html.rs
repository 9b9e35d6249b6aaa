//! report.html: one self-contained page (inline CSS and SVG, no scripts, nothing fetched) with
//! the verdict, busbw and latency plots, latency CDFs, the per-rank heat map and the fault timeline.

use std::collections::BTreeMap;
use std::fmt::Write;

use hdrhistogram::Histogram;

use super::phase::{self, Window};
use super::read::{FaultData, RecordData, RunData};
use super::svg::{self, esc, fmt_bytes, fmt_num, Axis, LinePlot, Scale, Series};
use super::table::fmt_us;
use crate::plan::size::format_size;

/// What the page is drawn from besides run.json.
#[derive(Default)]
pub struct Extras<'a> {
    /// Exact merged histograms by tag (from histograms.hlog); None falls back to percentiles.
    pub histograms: Option<&'a BTreeMap<String, Histogram<u64>>>,
    /// Sizes to draw latency CDFs for; empty picks smallest, middle and largest.
    pub cdf_sizes: Vec<u64>,
    pub warnings: Vec<String>,
}

const CSS: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:24px auto;max-width:1320px;color:#222;padding:0 16px}
h1{font-size:22px;margin-bottom:4px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:15px;margin:18px 0 6px}table{border-collapse:collapse;font-size:13px;margin:8px 0}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}th{background:#f4f4f4}td.l,th.l{text-align:left}
.meta td{text-align:left}.pass{background:#e3f4e1}.warn{background:#fff3cd}.fail{background:#f8d7da}
.ready{color:#1e7b34}.not_ready{color:#b02a37}.banner{padding:8px 12px;border-radius:4px;margin:8px 0}
.warnbox{background:#fff3cd;border:1px solid #e0c36a}.errbox{background:#f8d7da;border:1px solid #e4a1a8}
.plots{display:flex;flex-wrap:wrap;gap:12px}.plots svg{border:1px solid #eee;background:#fff}
p.empty{color:#777;font-style:italic}code{background:#f4f4f4;padding:1px 4px}details{margin:8px 0}
.phase-before{background:#e8f1fb}.phase-during{background:#f8d7da}.phase-after{background:#e3f4e1}.phase-applying,.phase-reverting{background:#fff3cd}";

type Pick = fn(&RecordData) -> f64;

/// Lines per plot before the legend stops being readable.
const MAX_SERIES: usize = 8;

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.digits$}"))
}

/// Records of one op, grouped by series (dtype, redop, placement) in measurement order.
fn series_of<'a>(run: &'a RunData, op: &str) -> Vec<(String, Vec<&'a RecordData>)> {
    let mut out: Vec<(String, Vec<&RecordData>)> = Vec::new();
    for r in run.results.iter().filter(|r| r.op == op) {
        let name = r.series();
        match out.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) => v.push(r),
            None => out.push((name, vec![r])),
        }
    }
    for (_, v) in &mut out {
        v.sort_by_key(|r| r.size_bytes);
    }
    out
}

fn ops(run: &RunData) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for r in &run.results {
        if !v.contains(&r.op) {
            v.push(r.op.clone());
        }
    }
    v
}

/// The (dtype, redop) the latency plots show for an op: float if measured (the usual headline
/// type), else the first measured.
fn primary<'a>(run: &'a RunData, op: &str) -> Vec<(String, Vec<&'a RecordData>)> {
    let all = series_of(run, op);
    let Some(first) = all
        .iter()
        .find(|(_, v)| v[0].dtype == "float")
        .or(all.first())
        .and_then(|(_, v)| v.first())
    else {
        return Vec::new();
    };
    let (d, rd) = (first.dtype.clone(), first.redop.clone());
    all.into_iter()
        .filter(|(_, v)| v[0].dtype == d && v[0].redop == rd)
        .collect()
}

fn verdict_section(run: &RunData) -> String {
    let mut s = String::from("<h2>Verdict</h2>");
    match &run.verdict {
        None => s.push_str(
            "<p id=\"verdict\">No topology given: pass <code>--topology FILE</code> to get a readiness verdict.</p>",
        ),
        Some(v) => {
            let label = if v.overall == "ready" { "READY" } else { "NOT READY" };
            let class = if v.overall == "ready" { "ready" } else { "not_ready" };
            let _ = write!(
                s,
                "<p id=\"verdict\" class=\"{class}\" style=\"font-size:20px;font-weight:700\">{label}{}</p>",
                v.topology
                    .as_deref()
                    .map_or(String::new(), |t| format!(
                        " <span style=\"font-weight:400;font-size:14px;color:#444\">against topology {}</span>",
                        esc(t)
                    ))
            );
            if !v.checks.is_empty() {
                s.push_str("<table class=\"verdict\"><tr><th class=\"l\">check</th><th class=\"l\">status</th><th>measured</th><th>expected</th></tr>");
                for c in &v.checks {
                    let _ = write!(
                        s,
                        "<tr class=\"{}\"><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{}</td><td>{}</td></tr>",
                        esc(&c.status),
                        esc(&c.name),
                        esc(&c.status),
                        esc(&c.measured),
                        esc(&c.expected)
                    );
                }
                s.push_str("</table>");
            }
        }
    }
    s
}

fn busbw_plots(run: &RunData) -> String {
    let mut s = String::from("<h2>Bus bandwidth vs size</h2><div class=\"plots\">");
    let mut hidden = 0;
    for op in ops(run) {
        let all = series_of(run, &op);
        // More lines than a legend can carry: draw the first type and reduction only.
        let shown = if all.len() > MAX_SERIES {
            let p = primary(run, &op);
            hidden += all.len() - p.len();
            p
        } else {
            all
        };
        let mut series: Vec<Series> = shown
            .into_iter()
            .enumerate()
            .map(|(i, (name, recs))| {
                Series::new(
                    name,
                    i,
                    recs.iter()
                        .map(|r| (r.size_bytes as f64, r.busbw_gbps))
                        .collect(),
                )
            })
            .collect();
        let n = series.len();
        if let Some(v) = &run.verdict {
            for (k, c) in v.checks.iter().enumerate() {
                if let Some((cop, lo, hi, e)) = &c.busbw_line {
                    if *cop == op {
                        let (a, b) = if lo == hi {
                            (*lo as f64 / 1.5, *hi as f64 * 1.5)
                        } else {
                            (*lo as f64, *hi as f64)
                        };
                        let mut line = Series::new(
                            format!("expected: {}", c.name),
                            n + k,
                            vec![(a, *e), (b, *e)],
                        );
                        line.dashed = true;
                        line.markers = false;
                        line.color = "#b02a37".into();
                        series.push(line);
                    }
                }
            }
        }
        let plot = LinePlot {
            title: format!("{op}: bus bandwidth"),
            x: Axis::new("message size (bytes, log2)", Scale::Log2, fmt_bytes),
            y: Axis::new("busbw (GB/s)", Scale::Linear, fmt_num),
            series,
            x_labels: vec![],
        };
        s.push_str(&plot.render(640, 340));
    }
    s.push_str("</div>");
    if hidden > 0 {
        let _ = write!(
            s,
            "<p class=\"empty\">{hidden} more series (other types and reductions) are in the table below and in results.csv.</p>"
        );
    }
    if run
        .verdict
        .as_ref()
        .is_none_or(|v| v.checks.iter().all(|c| c.busbw_line.is_none()))
    {
        s.push_str(
            "<p class=\"empty\">No expected line: no topology check gave a busbw level.</p>",
        );
    }
    s
}

fn latency_plots(run: &RunData) -> String {
    let mut s = String::from(
        "<h2>Latency percentiles vs size</h2><p>Every timed iteration on every rank, merged exactly (HdrHistogram, 3 significant digits).</p><div class=\"plots\">",
    );
    let mut any = false;
    for op in ops(run) {
        for (name, recs) in primary(run, &op) {
            let recs: Vec<&&RecordData> = recs.iter().filter(|r| r.has_latency()).collect();
            if recs.is_empty() {
                continue;
            }
            any = true;
            let pick: [(&str, Pick); 4] = [
                ("p50", |r| r.latency.p50_us),
                ("p99", |r| r.latency.p99_us),
                ("p99.9", |r| r.latency.p999_us),
                ("max", |r| r.latency.max_us),
            ];
            let series = pick
                .iter()
                .enumerate()
                .map(|(i, (label, f))| {
                    Series::new(
                        *label,
                        i,
                        recs.iter().map(|r| (r.size_bytes as f64, f(r))).collect(),
                    )
                })
                .collect();
            let plot = LinePlot {
                title: format!("{name}: latency"),
                x: Axis::new("message size (bytes, log2)", Scale::Log2, fmt_bytes),
                y: Axis::new("latency (us, log10)", Scale::Log10, fmt_num),
                series,
                x_labels: vec![],
            };
            s.push_str(&plot.render(640, 340));
        }
    }
    s.push_str("</div>");
    if !any {
        s.push_str("<p class=\"empty\">No per-iteration latencies in this run (an nccl-tests import without -I has none).</p>");
    }
    s
}

/// Cumulative fraction of samples at or below each recorded value, thinned to about `max` points.
fn cdf_points(h: &Histogram<u64>, max: usize) -> Vec<(f64, f64)> {
    let total = h.len() as f64;
    if total == 0.0 {
        return Vec::new();
    }
    let mut pts = Vec::new();
    let mut cum = 0u64;
    for v in h.iter_recorded() {
        cum += v.count_since_last_iteration();
        pts.push((
            h.highest_equivalent(v.value_iterated_to()) as f64 / 1000.0,
            cum as f64 / total,
        ));
    }
    if pts.len() > max {
        let step = pts.len().div_ceil(max);
        let last = *pts.last().expect("non-empty");
        pts = pts.into_iter().step_by(step).collect();
        if pts.last() != Some(&last) {
            pts.push(last);
        }
    }
    // Start the curve at 0 so the first step is visible.
    if let Some(&(x0, _)) = pts.first() {
        pts.insert(0, (x0, 0.0));
    }
    pts
}

fn summary_points(r: &RecordData) -> Vec<(f64, f64)> {
    let l = &r.latency;
    vec![
        (l.min_us, 0.0),
        (l.p50_us, 0.5),
        (l.p90_us, 0.9),
        (l.p99_us, 0.99),
        (l.p999_us, 0.999),
        (l.max_us, 1.0),
    ]
}

fn choose_sizes(sizes: &[u64], wanted: &[u64]) -> Vec<u64> {
    if !wanted.is_empty() {
        return sizes
            .iter()
            .copied()
            .filter(|s| wanted.contains(s))
            .collect();
    }
    let mut v = Vec::new();
    for i in [0, sizes.len() / 2, sizes.len().saturating_sub(1)] {
        if let Some(&s) = sizes.get(i) {
            if !v.contains(&s) {
                v.push(s);
            }
        }
    }
    v
}

fn cdf_plots(run: &RunData, extras: &Extras) -> String {
    let mut s = String::from("<h2>Latency CDF</h2>");
    match extras.histograms {
        Some(_) => s.push_str("<p>Exact: from the merged histograms in histograms.hlog.</p>"),
        None => s.push_str("<p>Approximate: histograms.hlog was not readable, so the curves join the percentiles in run.json (min, p50, p90, p99, p99.9, max).</p>"),
    }
    s.push_str("<div class=\"plots\">");
    let mut any = false;
    for op in ops(run) {
        for (name, recs) in primary(run, &op) {
            let sizes: Vec<u64> = recs
                .iter()
                .filter(|r| r.has_latency())
                .map(|r| r.size_bytes)
                .collect();
            let chosen = choose_sizes(&sizes, &extras.cdf_sizes);
            let mut series = Vec::new();
            for (i, size) in chosen.iter().enumerate() {
                let Some(r) = recs.iter().find(|r| r.size_bytes == *size) else {
                    continue;
                };
                let exact = extras
                    .histograms
                    .and_then(|h| h.get(&r.histogram_tag))
                    .filter(|h| !h.is_empty());
                let (pts, how) = match exact {
                    Some(h) => (cdf_points(h, 400), ""),
                    None => (summary_points(r), " (from percentiles)"),
                };
                let mut line = Series::new(format!("{}{how}", format_size(*size)), i, pts);
                line.markers = exact.is_none();
                series.push(line);
            }
            if series.is_empty() {
                continue;
            }
            any = true;
            let mut y = Axis::new("fraction of iterations <= x", Scale::Linear, fmt_num);
            y.range = Some((0.0, 1.0));
            let plot = LinePlot {
                title: format!("{name}: latency CDF"),
                x: Axis::new("latency (us, log10)", Scale::Log10, fmt_num),
                y,
                series,
                x_labels: vec![],
            };
            s.push_str(&plot.render(640, 340));
        }
    }
    s.push_str("</div>");
    if !any {
        s.push_str("<p class=\"empty\">No per-iteration latencies to draw.</p>");
    }
    s
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn heatmaps(run: &RunData) -> String {
    let mut s = String::from(
        "<h2>Per-rank heat map</h2><p>Each cell: that rank's p50 latency at that size divided by the median over ranks (1.00 = typical; red = slower, a straggler shows as a red row).</p>",
    );
    let host_of: BTreeMap<usize, &str> = run
        .ranks
        .iter()
        .map(|r| (r.rank, r.hostname.as_str()))
        .collect();
    let mut any = false;
    for op in ops(run) {
        for (name, recs) in primary(run, &op) {
            let recs: Vec<&&RecordData> = recs.iter().filter(|r| !r.per_rank.is_empty()).collect();
            if recs.is_empty() {
                continue;
            }
            any = true;
            let mut ranks: Vec<usize> = recs
                .iter()
                .flat_map(|r| r.per_rank.iter().map(|p| p.rank))
                .collect();
            ranks.sort_unstable();
            ranks.dedup();
            let cols: Vec<String> = recs
                .iter()
                .map(|r| fmt_bytes(r.size_bytes as f64))
                .collect();
            let rows: Vec<String> = ranks
                .iter()
                .map(|r| match host_of.get(r) {
                    Some(h) if run.hosts.len() > 1 => format!("{r} ({h})"),
                    _ => format!("rank {r}"),
                })
                .collect();
            let mut cells = vec![vec![None; recs.len()]; ranks.len()];
            for (j, r) in recs.iter().enumerate() {
                let mut vals: Vec<f64> = r.per_rank.iter().map(|p| p.p50_us).collect();
                let m = median(&mut vals);
                for p in &r.per_rank {
                    if let Ok(i) = ranks.binary_search(&p.rank) {
                        cells[i][j] = (m > 0.0).then(|| p.p50_us / m);
                    }
                }
            }
            s.push_str(&svg::heatmap(
                &format!("{name}: per-rank p50 / median rank"),
                &rows,
                &cols,
                &cells,
                1280,
            ));
        }
    }
    if !any {
        s.push_str("<p class=\"empty\">No per-rank data in this run.</p>");
    }
    s
}

/// The faults' windows in sweep seconds (a fault never reverted holds to the end), for placing
/// records with the rule the verdict's phases use.
fn fault_windows(faults: &[FaultData]) -> Vec<Window> {
    faults
        .iter()
        .filter_map(|f| {
            Some(Window::of(
                f.sent_at_s,
                f.applied_at_s?,
                f.revert_began_at_s,
                f.reverted_at_s,
                f64::INFINITY,
            ))
        })
        .collect()
}

/// Each record's phase, in the order of `run.results`, placed by its middle.
fn record_phases(run: &RunData, faults: &[FaultData], t0: f64) -> Vec<&'static str> {
    let windows = fault_windows(faults);
    let starts: Vec<f64> = run.results.iter().map(|r| r.start_unix_s - t0).collect();
    phase::middles(&starts)
        .into_iter()
        .map(|t| phase::place_among(&windows, t).name())
        .collect()
}

fn sweep_zero(run: &RunData) -> f64 {
    run.sweep_start_unix_s.unwrap_or_else(|| {
        run.results
            .iter()
            .map(|r| r.start_unix_s)
            .fold(f64::INFINITY, f64::min)
    })
}

fn fault_timeline(run: &RunData, faults: &[FaultData]) -> String {
    let mut s = String::from("<h2>Fault timeline</h2>");
    let t0 = sweep_zero(run);
    let t0 = if t0.is_finite() { t0 } else { 0.0 };
    // Each record spans from its start to the next record's start (or its own timed length).
    let mut starts: Vec<(f64, &RecordData, &str)> = run
        .results
        .iter()
        .zip(record_phases(run, faults, t0))
        .map(|(r, ph)| (r.start_unix_s - t0, r, ph))
        .collect();
    starts.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut end: f64 = 0.0;
    for f in faults {
        for v in [
            f.applied_at_s,
            f.reverted_at_s,
            f.detected.as_ref().map(|d| d.at_s),
        ]
        .into_iter()
        .flatten()
        {
            end = end.max(v);
        }
    }
    if let Some((t, r, _)) = starts.last() {
        end = end.max(t + r.time_us * 1e-6 * r.iterations as f64);
    }
    let end = if end > 0.0 { end * 1.04 } else { 1.0 };
    let (ml, mr, lane) = (150.0, 90.0, 26.0);
    let width = 1280.0;
    let pw = width - ml - mr;
    let x = |t: f64| ml + (t.max(0.0) / end) * pw;
    let height = 40.0 + lane * (faults.len() as f64 + 1.0) + 40.0;
    let _ = write!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"timeline\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" {} font-size=\"12\" role=\"img\" aria-label=\"fault timeline\">",
        svg::FONT
    );
    let _ = write!(
        s,
        "<text x=\"{ml}\" y=\"18\" font-size=\"14\" font-weight=\"600\">Records and faults over time (seconds since the sweep started)</text>"
    );
    let y0 = 32.0;
    let _ = write!(
        s,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">records</text>",
        ml - 8.0,
        y0 + 16.0
    );
    for (i, &(t, r, ph)) in starts.iter().enumerate() {
        let t_end = starts
            .get(i + 1)
            .map_or(t + r.time_us * 1e-6 * r.iterations as f64, |n| n.0);
        let fill = match ph {
            "during" => "#e15759",
            "after" => "#59a14f",
            "applying" | "reverting" => "#edc948",
            _ => "#4e79a7",
        };
        let _ = write!(
            s,
            "<rect class=\"record {ph}\" x=\"{:.2}\" y=\"{:.1}\" width=\"{:.2}\" height=\"18\" fill=\"{fill}\" fill-opacity=\"0.75\"><title>{} at {t:.3}s ({ph}): p50 {} us, busbw {:.2} GB/s</title></rect>",
            x(t),
            y0 + 4.0,
            (x(t_end) - x(t)).max(0.8),
            esc(&super::read::key_name(&r.key())),
            if r.has_latency() { fmt_us(r.latency.p50_us) } else { "-".into() },
            r.busbw_gbps
        );
    }
    for (k, f) in faults.iter().enumerate() {
        let y = y0 + lane * (k as f64 + 1.0);
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">#{} {} {}</text>",
            ml - 8.0,
            y + 16.0,
            f.id,
            esc(&f.kind),
            esc(&f.target)
        );
        if let Some(a) = f.applied_at_s {
            let b = f.reverted_at_s.unwrap_or(end);
            let open = if f.reverted_at_s.is_none() {
                " stroke=\"#b02a37\" stroke-dasharray=\"4 3\""
            } else {
                ""
            };
            let _ = write!(
                s,
                "<rect class=\"fault\" x=\"{:.2}\" y=\"{:.1}\" width=\"{:.2}\" height=\"18\" fill=\"#f28e2b\" fill-opacity=\"0.8\"{open}><title>fault {} {} on {}: applied {a:.3}s, {}; outcome {}</title></rect>",
                x(a),
                y + 4.0,
                (x(b) - x(a)).max(2.0),
                f.id,
                esc(&f.kind),
                esc(&f.target),
                f.reverted_at_s
                    .map_or("never reverted".to_string(), |r| format!("reverted {r:.3}s")),
                esc(f.outcome.as_deref().unwrap_or("-"))
            );
            let spans = [
                (
                    f.sent_at_s,
                    Some(a),
                    "being applied (sent, not yet confirmed)",
                ),
                (f.revert_began_at_s, f.reverted_at_s, "being reverted"),
            ];
            for (lo, hi, what) in spans {
                let (Some(lo), Some(hi)) = (lo, hi) else {
                    continue;
                };
                if hi > lo {
                    let _ = write!(
                        s,
                        "<rect class=\"fault-transition\" x=\"{:.2}\" y=\"{:.1}\" width=\"{:.2}\" height=\"18\" fill=\"#edc948\"><title>fault {} {what} from {lo:.3}s to {hi:.3}s: records there are in no phase</title></rect>",
                        x(lo),
                        y + 4.0,
                        (x(hi) - x(lo)).max(2.0),
                        f.id,
                    );
                }
            }
        }
        if let Some(d) = &f.detected {
            let dx = x(d.at_s);
            let _ = write!(
                s,
                "<path class=\"detected\" d=\"M{dx:.1},{:.1} l6,-9 l-12,0 z\" fill=\"#222\"><title>detected at {:.3}s{} by {}{}</title></path>",
                y + 13.0,
                d.at_s,
                d.after_s.map_or(String::new(), |a| format!(" ({a:.3}s after)")),
                esc(d.mechanism.as_deref().unwrap_or("?")),
                d.rank.map_or(String::new(), |r| format!(", rank {r}"))
            );
        }
        if let Some(o) = &f.outcome {
            let tx = match (f.applied_at_s, f.reverted_at_s) {
                (_, Some(r)) => x(r),
                (Some(_), None) => x(end),
                (None, None) => ml,
            } + 6.0;
            let _ = write!(
                s,
                "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"#444\">{}</text>",
                tx,
                y + 17.0,
                esc(o)
            );
        }
    }
    // Time axis.
    let ya = y0 + lane * (faults.len() as f64 + 1.0) + 6.0;
    let _ = write!(
        s,
        "<line x1=\"{ml}\" y1=\"{ya:.1}\" x2=\"{:.1}\" y2=\"{ya:.1}\" stroke=\"#999\"/>",
        ml + pw
    );
    let step = {
        let raw = end / 10.0;
        let mag = 10f64.powf(raw.log10().floor());
        [1.0, 2.0, 5.0, 10.0]
            .into_iter()
            .map(|m| m * mag)
            .find(|s| *s >= raw)
            .unwrap_or(raw)
    };
    let mut t = 0.0;
    while t <= end {
        let _ = write!(
            s,
            "<line x1=\"{0:.1}\" y1=\"{ya:.1}\" x2=\"{0:.1}\" y2=\"{1:.1}\" stroke=\"#999\"/><text x=\"{0:.1}\" y=\"{2:.1}\" text-anchor=\"middle\" fill=\"#444\">{3}s</text>",
            x(t),
            ya + 5.0,
            ya + 18.0,
            fmt_num(t)
        );
        t += step;
    }
    s.push_str("</svg>");
    s.push_str(&latency_over_time(&starts, end));
    s.push_str("<p><span class=\"phase-before\">&nbsp;before&nbsp;</span> <span class=\"phase-during\">&nbsp;during&nbsp;</span> <span class=\"phase-after\">&nbsp;after&nbsp;</span> a fault, <span class=\"phase-applying\">&nbsp;applying or reverting&nbsp;</span> it (on its bar too; records there count in no phase: a record goes by its middle, from its start to the next one's); ▼ marks first detection; a dashed fault bar was never reverted.</p>");
    s.push_str("<table class=\"faults\"><tr><th>id</th><th class=\"l\">kind</th><th class=\"l\">target</th><th class=\"l\">params</th><th class=\"l\">start</th><th>applied (s)</th><th>reverted (s)</th><th class=\"l\">revert</th><th>detected after (s)</th><th class=\"l\">detected by</th><th class=\"l\">outcome</th><th class=\"l\">phases: p50 us / p99 us / busbw GB/s</th></tr>");
    for f in faults {
        let det = f.detected.as_ref();
        let phases = f.phases.as_ref().map_or("-".to_string(), |p| {
            ["before", "during", "after"]
                .iter()
                .filter_map(|k| {
                    p.get(*k).map(|v| {
                        format!(
                            "{k}: {} / {} / {}",
                            opt(v.p50_us, 1),
                            opt(v.p99_us, 1),
                            opt(v.busbw_gbps, 2)
                        )
                    })
                })
                .collect::<Vec<_>>()
                .join("; ")
        });
        let compact = |v: &serde_json::Value| match v {
            serde_json::Value::Null => "-".to_string(),
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let _ = write!(
            s,
            "<tr><td>{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{}</td><td>{}</td><td class=\"l\">{}</td><td>{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td></tr>",
            f.id,
            esc(&f.kind),
            esc(&f.target),
            esc(&compact(&f.params)),
            esc(&compact(&f.start)),
            opt(f.applied_at_s, 3),
            opt(f.reverted_at_s, 3),
            esc(f.revert.as_deref().unwrap_or("-")),
            opt(det.and_then(|d| d.after_s), 3),
            esc(&det.map_or("not detected".to_string(), |d| format!(
                "{}{}{}{}",
                d.mechanism.as_deref().unwrap_or("?"),
                d.rank.map_or(String::new(), |r| format!(", rank {r}")),
                d.host.as_deref().map_or(String::new(), |h| format!(", host {h}")),
                d.device.as_deref().map_or(String::new(), |g| format!(", GPU {g}"))
            ))),
            esc(f.outcome.as_deref().unwrap_or("-")),
            esc(&phases)
        );
    }
    s.push_str("</table>");
    s
}

/// p50 and p99 of every record against its start time, for the (up to) three most-measured rows,
/// so a fault's effect shows as a shift over time.
fn latency_over_time(starts: &[(f64, &RecordData, &str)], end: f64) -> String {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for (_, r, _) in starts.iter().filter(|(_, r, _)| r.has_latency()) {
        let k = super::read::key_name(&r.key());
        match counts.iter_mut().find(|(n, _)| *n == k) {
            Some(c) => c.1 += 1,
            None => counts.push((k, 1)),
        }
    }
    counts.sort_by_key(|c| std::cmp::Reverse(c.1));
    counts.truncate(3);
    if counts.iter().all(|c| c.1 < 2) {
        return String::new();
    }
    let mut series = Vec::new();
    for (i, (k, _)) in counts.iter().enumerate() {
        let pts = |f: fn(&RecordData) -> f64| -> Vec<(f64, f64)> {
            starts
                .iter()
                .filter(|(_, r, _)| r.has_latency() && super::read::key_name(&r.key()) == *k)
                .map(|(t, r, _)| (*t, f(r)))
                .collect()
        };
        series.push(svg::Series::new(
            format!("{k} p50"),
            2 * i,
            pts(|r| r.latency.p50_us),
        ));
        let mut p99 = svg::Series::new(format!("{k} p99"), 2 * i + 1, pts(|r| r.latency.p99_us));
        p99.dashed = true;
        series.push(p99);
    }
    let mut x = svg::Axis::new(
        "seconds since the sweep started",
        svg::Scale::Linear,
        svg::fmt_num,
    );
    x.range = Some((0.0, end));
    let plot = svg::LinePlot {
        title: "Latency over time: p50 and p99 of each record".into(),
        x,
        y: svg::Axis::new("latency (us, log10)", svg::Scale::Log10, svg::fmt_num),
        series,
        x_labels: Vec::new(),
    };
    format!("<div class=\"plot\">{}</div>", plot.render(1280, 360))
}

fn results_table(run: &RunData) -> String {
    let faults = run.faults.as_deref().unwrap_or(&[]);
    let t0 = sweep_zero(run);
    let mut s = format!(
        "<h2>All records</h2><details><summary>{} records (op, type, reduction, placement, size)</summary><table class=\"records\"><tr><th class=\"l\">op</th><th class=\"l\">type</th><th class=\"l\">redop</th><th class=\"l\">placement</th><th>size</th><th>count</th><th>time (us)</th><th>algbw (GB/s)</th><th>busbw (GB/s)</th><th>#wrong</th><th>p50</th><th>p99</th><th>p99.9</th><th>max</th><th>skew p99</th>{}</tr>",
        run.results.len(),
        if faults.is_empty() { "" } else { "<th class=\"l\">phase</th>" }
    );
    let phases = record_phases(run, faults, t0);
    for (r, p) in run.results.iter().zip(phases) {
        let l = &r.latency;
        let lat = |v: f64| {
            if r.has_latency() {
                fmt_us(v)
            } else {
                "-".into()
            }
        };
        let (ph, row_class) = if faults.is_empty() {
            (String::new(), String::new())
        } else {
            (
                format!("<td class=\"l\">{p}</td>"),
                format!(" class=\"phase-{p}\""),
            )
        };
        let _ = write!(
            s,
            "<tr{row_class}><td class=\"l\">{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.2}</td><td>{:.2}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>{ph}</tr>",
            esc(&r.op),
            esc(&r.dtype),
            esc(&r.redop),
            esc(&r.placement),
            format_size(r.size_bytes),
            r.count,
            fmt_us(r.time_us),
            r.algbw_gbps,
            r.busbw_gbps,
            r.wrong.map_or("N/A".into(), |w| w.to_string()),
            lat(l.p50_us),
            lat(l.p99_us),
            lat(l.p999_us),
            lat(l.max_us),
            lat(r.skew.p99_us)
        );
    }
    s.push_str("</table></details>");
    s
}

pub fn render(run: &RunData, name: &str, extras: &Extras) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>collbench {}</title><style>{CSS}</style></head><body>",
        esc(name)
    );
    let _ = write!(s, "<h1>collbench report: {}</h1>", esc(name));
    let hosts = run
        .hosts
        .iter()
        .map(|h| format!("{} ({} ranks)", h.hostname, h.ranks.len()))
        .collect::<Vec<_>>()
        .join(", ");
    let _ = write!(
        s,
        "<table class=\"meta\"><tr><th class=\"l\">status</th><td>{}</td></tr><tr><th class=\"l\">started / ended</th><td>{} / {}</td></tr><tr><th class=\"l\">ranks</th><td>{} on {}</td></tr><tr><th class=\"l\">backend</th><td>{} ({})</td></tr><tr><th class=\"l\">sweep</th><td>{} · {} · {} · {} sizes {}..{} · {} iterations, {} warmup, {} check</td></tr><tr><th class=\"l\">command</th><td><code>{}</code></td></tr>{}</table>",
        esc(&run.status),
        esc(&run.start_time),
        esc(run.end_time.as_deref().unwrap_or("-")),
        run.world_size,
        esc(&hosts),
        esc(&run.backend.name),
        esc(run.backend.library_version.lines().next().unwrap_or("")),
        esc(&run.config.ops.join(",")),
        esc(&run.config.dtypes.join(",")),
        esc(&run.config.redops.join(",")),
        run.config.sizes.len(),
        run.config.sizes.first().map_or("-".into(), |v| format_size(*v)),
        run.config.sizes.last().map_or("-".into(), |v| format_size(*v)),
        run.config.iterations,
        run.config.warmup,
        run.config.check_iterations,
        esc(&run.command_line.join(" ")),
        run.source.as_ref().map_or(String::new(), |src| format!(
            "<tr><th class=\"l\">imported from</th><td>{} <code>{}</code></td></tr>",
            esc(&src.tool),
            esc(&src.file)
        ))
    );
    for w in &extras.warnings {
        let _ = write!(s, "<div class=\"banner warnbox\">warning: {}</div>", esc(w));
    }
    if let Some(e) = &run.error {
        let _ = write!(s, "<div class=\"banner errbox\">error: {}</div>", esc(e));
    }
    for n in &run.notes {
        let _ = write!(s, "<div class=\"banner warnbox\">note: {}</div>", esc(n));
    }
    s.push_str(&verdict_section(run));
    s.push_str(
        "<h2>Summary</h2><table><tr><th class=\"l\">op</th><th>avg bus bandwidth (GB/s)</th></tr>",
    );
    for (op, bw) in &run.summary.avg_busbw_gbps {
        let _ = write!(
            s,
            "<tr><td class=\"l\">{}</td><td>{bw:.3}</td></tr>",
            esc(op)
        );
    }
    let _ = write!(
        s,
        "</table><p>{} records; {} wrong values: <b>{}</b></p>",
        run.summary.records,
        run.summary.wrong_total,
        if run.summary.wrong_total == 0 {
            "OK"
        } else {
            "FAILED"
        }
    );
    s.push_str(&busbw_plots(run));
    s.push_str(&latency_plots(run));
    s.push_str(&cdf_plots(run, extras));
    s.push_str(&heatmaps(run));
    if let Some(f) = run.faults.as_deref().filter(|f| !f.is_empty()) {
        s.push_str(&fault_timeline(run, f));
    }
    s.push_str(&results_table(run));
    let _ = writeln!(
        s,
        "<p style=\"color:#777;font-size:12px;margin-top:32px\">collbench {} · schema {}</p></body></html>",
        esc(&run.collbench_version),
        run.schema_version
    );
    s
}
