//! Inline SVG drawing for the reports: line plots on linear or log axes, heat maps, and the
//! escaping they need. Pure string building, no fonts or scripts fetched.

use std::fmt::Write;

/// Tableau 10: distinct on screen and in print.
pub const PALETTE: [&str; 10] = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#bab0ac",
];

pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scale {
    Linear,
    Log2,
    Log10,
}

impl Scale {
    fn fwd(self, v: f64) -> f64 {
        match self {
            Scale::Linear => v,
            Scale::Log2 => v.log2(),
            Scale::Log10 => v.log10(),
        }
    }
    fn usable(self, v: f64) -> bool {
        v.is_finite() && (self == Scale::Linear || v > 0.0)
    }
}

pub struct Axis {
    pub label: String,
    pub scale: Scale,
    pub format: fn(f64) -> String,
    /// Fixed range; None fits the data.
    pub range: Option<(f64, f64)>,
}

impl Axis {
    pub fn new(label: &str, scale: Scale, format: fn(f64) -> String) -> Axis {
        Axis {
            label: label.to_string(),
            scale,
            format,
            range: None,
        }
    }
}

pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub color: String,
    pub dashed: bool,
    pub markers: bool,
}

impl Series {
    pub fn new(name: impl Into<String>, color_index: usize, points: Vec<(f64, f64)>) -> Series {
        Series {
            name: name.into(),
            points,
            color: PALETTE[color_index % PALETTE.len()].to_string(),
            dashed: false,
            markers: true,
        }
    }
}

pub struct LinePlot {
    pub title: String,
    pub x: Axis,
    pub y: Axis,
    pub series: Vec<Series>,
    /// Labels for x positions (used instead of numbers when given), e.g. run dates.
    pub x_labels: Vec<(f64, String)>,
}

pub fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if !(1e-3..1e6).contains(&a) {
        format!("{v:.0e}")
    } else if a >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').to_string()
    }
}

pub fn fmt_bytes(v: f64) -> String {
    let b = v.round() as u64;
    for (shift, suffix) in [(40, "T"), (30, "G"), (20, "M"), (10, "K")] {
        if b >= 1u64 << shift {
            let x = b as f64 / (1u64 << shift) as f64;
            return if x.fract() == 0.0 {
                format!("{x:.0}{suffix}")
            } else {
                format!("{x:.1}{suffix}")
            };
        }
    }
    format!("{b}")
}

fn nice_step(span: f64, target: usize) -> f64 {
    let raw = span / target.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let n = raw / mag;
    let m = if n <= 1.0 {
        1.0
    } else if n <= 2.0 {
        2.0
    } else if n <= 5.0 {
        5.0
    } else {
        10.0
    };
    m * mag
}

/// Tick positions (in data units) between lo and hi.
fn ticks(scale: Scale, lo: f64, hi: f64, target: usize) -> Vec<f64> {
    match scale {
        Scale::Linear => {
            let step = nice_step(hi - lo, target);
            let mut t = (lo / step).ceil() * step;
            let mut out = Vec::new();
            while t <= hi + step * 1e-9 {
                out.push(if t.abs() < step * 1e-9 { 0.0 } else { t });
                t += step;
            }
            out
        }
        Scale::Log2 | Scale::Log10 => {
            let base: f64 = if scale == Scale::Log2 { 2.0 } else { 10.0 };
            let (a, b) = (scale.fwd(lo).floor() as i32, scale.fwd(hi).ceil() as i32);
            let every = (((b - a) as f64) / target as f64).ceil().max(1.0) as i32;
            let mut out: Vec<f64> = (a..=b)
                .filter(|e| (e - a) % every == 0)
                .map(|e| base.powi(e))
                .filter(|v| *v >= lo * 0.999 && *v <= hi * 1.001)
                .collect();
            if scale == Scale::Log10 && b - a <= 2 {
                // A narrow decade range: add 2x and 5x ticks so the axis is readable.
                for e in a..=b {
                    for m in [2.0, 5.0] {
                        let v = m * base.powi(e);
                        if v >= lo && v <= hi {
                            out.push(v);
                        }
                    }
                }
                out.sort_by(|x, y| x.total_cmp(y));
            }
            out
        }
    }
}

fn fit_range(scale: Scale, values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let mut lo = f64::INFINITY;
    let mut hi = f64::NEG_INFINITY;
    for v in values.filter(|v| scale.usable(*v)) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return None;
    }
    Some(match scale {
        Scale::Linear => {
            let lo = if lo > 0.0 && lo < hi * 0.5 { 0.0 } else { lo };
            if hi == lo {
                (
                    lo - 1.0_f64.max(lo.abs() * 0.1),
                    hi + 1.0_f64.max(hi.abs() * 0.1),
                )
            } else {
                let pad = (hi - lo) * 0.05;
                (if lo == 0.0 { 0.0 } else { lo - pad }, hi + pad)
            }
        }
        Scale::Log2 => {
            if hi == lo {
                (lo / 2.0, hi * 2.0)
            } else {
                (lo, hi)
            }
        }
        Scale::Log10 => {
            let (a, b) = (lo.log10().floor(), hi.log10().ceil());
            let b = if a == b { b + 1.0 } else { b };
            (10f64.powf(a), 10f64.powf(b))
        }
    })
}

pub const FONT: &str = "font-family=\"system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif\"";

impl LinePlot {
    /// An SVG element, or a note saying there was nothing to draw.
    pub fn render(&self, width: u32, height: u32) -> String {
        let xs = fit_range(
            self.x.scale,
            self.series
                .iter()
                .flat_map(|s| s.points.iter().map(|p| p.0)),
        );
        let ys = fit_range(
            self.y.scale,
            self.series
                .iter()
                .flat_map(|s| s.points.iter().map(|p| p.1)),
        );
        let (Some(xr), Some(yr)) = (self.x.range.or(xs), self.y.range.or(ys)) else {
            return format!(
                "<p class=\"empty\">{}: no data to plot</p>",
                esc(&self.title)
            );
        };
        // Legend columns sized to the longest name (about 6.5 px a character at 12 px).
        let longest = self
            .series
            .iter()
            .map(|s| s.name.chars().count())
            .max()
            .unwrap_or(0);
        let per_row =
            (((width as f64 - 90.0) / (34.0 + 6.8 * longest as f64)).floor() as usize).clamp(1, 4);
        let legend_rows = self.series.len().div_ceil(per_row);
        let (ml, mr, mt) = (70.0, 20.0, 34.0);
        let (w, h) = (
            width as f64,
            height as f64 + 18.0 * legend_rows as f64 + 4.0,
        );
        let pw = w - ml - mr;
        let ph = height as f64 - mt - 48.0;
        let sx = |v: f64| {
            let (a, b) = (self.x.scale.fwd(xr.0), self.x.scale.fwd(xr.1));
            ml + if b > a {
                (self.x.scale.fwd(v) - a) / (b - a) * pw
            } else {
                pw / 2.0
            }
        };
        let sy = |v: f64| {
            let (a, b) = (self.y.scale.fwd(yr.0), self.y.scale.fwd(yr.1));
            mt + ph
                - if b > a {
                    (self.y.scale.fwd(v) - a) / (b - a) * ph
                } else {
                    ph / 2.0
                }
        };
        let mut s = String::new();
        let _ = write!(
            s,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"plot\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" {FONT} font-size=\"12\" role=\"img\" aria-label=\"{}\">",
            esc(&self.title)
        );
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"20\" font-size=\"14\" font-weight=\"600\">{}</text>",
            ml,
            esc(&self.title)
        );
        let _ = write!(
            s,
            "<rect x=\"{ml}\" y=\"{mt}\" width=\"{pw}\" height=\"{ph}\" fill=\"#fff\" stroke=\"#999\"/>"
        );
        // Grid and tick labels.
        if self.x_labels.is_empty() {
            for t in ticks(self.x.scale, xr.0, xr.1, 10) {
                let x = sx(t);
                let _ = write!(
                    s,
                    "<line x1=\"{x:.1}\" y1=\"{mt}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#e5e5e5\"/><text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#444\">{}</text>",
                    mt + ph,
                    mt + ph + 16.0,
                    esc(&(self.x.format)(t))
                );
            }
        } else {
            let every = self.x_labels.len().div_ceil(8).max(1);
            for (i, (t, label)) in self.x_labels.iter().enumerate() {
                let x = sx(*t);
                let _ = write!(
                    s,
                    "<line x1=\"{x:.1}\" y1=\"{mt}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#eee\"/>",
                    mt + ph
                );
                if i % every == 0 {
                    let _ = write!(
                        s,
                        "<text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#444\" font-size=\"11\">{}</text>",
                        mt + ph + 16.0,
                        esc(label)
                    );
                }
            }
        }
        for t in ticks(self.y.scale, yr.0, yr.1, 6) {
            let y = sy(t);
            let _ = write!(
                s,
                "<line x1=\"{ml}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#e5e5e5\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#444\">{}</text>",
                ml + pw,
                ml - 6.0,
                y + 4.0,
                esc(&(self.y.format)(t))
            );
        }
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#222\">{}</text>",
            ml + pw / 2.0,
            mt + ph + 34.0,
            esc(&self.x.label)
        );
        let _ = write!(
            s,
            "<text transform=\"translate(16 {:.1}) rotate(-90)\" text-anchor=\"middle\" fill=\"#222\">{}</text>",
            mt + ph / 2.0,
            esc(&self.y.label)
        );
        // Lines, clipped to the plot area.
        let clip = format!("clip{:x}", fxhash(&self.title));
        let _ = write!(
            s,
            "<clipPath id=\"{clip}\"><rect x=\"{ml}\" y=\"{mt}\" width=\"{pw}\" height=\"{ph}\"/></clipPath><g clip-path=\"url(#{clip})\">"
        );
        for series in &self.series {
            let pts: Vec<(f64, f64)> = series
                .points
                .iter()
                .filter(|(x, y)| self.x.scale.usable(*x) && self.y.scale.usable(*y))
                .map(|&(x, y)| (sx(x), sy(y)))
                .collect();
            if pts.is_empty() {
                continue;
            }
            let d: String = pts
                .iter()
                .enumerate()
                .map(|(i, (x, y))| format!("{}{x:.1},{y:.1}", if i == 0 { "M" } else { "L" }))
                .collect();
            let dash = if series.dashed {
                " stroke-dasharray=\"6 4\""
            } else {
                ""
            };
            let _ = write!(
                s,
                "<path class=\"series\" d=\"{d}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\"{dash}><title>{}</title></path>",
                series.color,
                esc(&series.name)
            );
            if series.markers && pts.len() <= 80 {
                for (x, y) in &pts {
                    let _ = write!(
                        s,
                        "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"2.5\" fill=\"{}\"/>",
                        series.color
                    );
                }
            }
        }
        s.push_str("</g>");
        // Legend below the axis label.
        let col_w = pw / per_row as f64;
        for (i, series) in self.series.iter().enumerate() {
            let x = ml + col_w * (i % per_row) as f64;
            let y = height as f64 + 18.0 * (i / per_row) as f64 - 4.0;
            let dash = if series.dashed {
                " stroke-dasharray=\"6 4\""
            } else {
                ""
            };
            let _ = write!(
                s,
                "<line x1=\"{x:.1}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"{}\" stroke-width=\"3\"{dash}/><text x=\"{:.1}\" y=\"{:.1}\" fill=\"#222\">{}</text>",
                x + 22.0,
                series.color,
                x + 28.0,
                y + 4.0,
                esc(&series.name)
            );
        }
        s.push_str("</svg>");
        s
    }
}

fn fxhash(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

/// Blue (below 1) .. white (1) .. red (above 1), saturating at half and twice.
pub fn ratio_color(r: f64) -> String {
    if !r.is_finite() || r <= 0.0 {
        return "#ddd".into();
    }
    let t = r.log2().clamp(-1.0, 1.0);
    let (cr, cg, cb) = if t >= 0.0 {
        (255.0, 255.0 - 200.0 * t, 255.0 - 210.0 * t)
    } else {
        (255.0 + 200.0 * t, 255.0 + 130.0 * t, 255.0)
    };
    format!("#{:02x}{:02x}{:02x}", cr as u8, cg as u8, cb as u8)
}

/// A grid of ratios: rows x columns, each cell coloured by `ratio_color` and labelled.
pub fn heatmap(
    title: &str,
    row_labels: &[String],
    col_labels: &[String],
    cells: &[Vec<Option<f64>>],
    max_width: u32,
) -> String {
    if row_labels.is_empty() || col_labels.is_empty() {
        return format!("<p class=\"empty\">{}: no data</p>", esc(title));
    }
    let (ml, mt) = (90.0, 50.0);
    let cw = ((max_width as f64 - ml - 20.0) / col_labels.len() as f64).clamp(8.0, 64.0);
    let ch = if row_labels.len() > 64 { 8.0 } else { 20.0 };
    // Wide enough for the title and the colour key even with few columns.
    let w = (ml + cw * col_labels.len() as f64 + 20.0).max(ml + 560.0);
    let h = mt + ch * row_labels.len() as f64 + 60.0;
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"heatmap\" width=\"{w:.0}\" height=\"{h:.0}\" viewBox=\"0 0 {w:.0} {h:.0}\" {FONT} font-size=\"11\" role=\"img\" aria-label=\"{}\">",
        esc(title)
    );
    let _ = write!(
        s,
        "<text x=\"{ml}\" y=\"18\" font-size=\"14\" font-weight=\"600\">{}</text>",
        esc(title)
    );
    let label_every = ((40.0 / cw).ceil() as usize).max(1);
    for (j, c) in col_labels.iter().enumerate() {
        if j % label_every == 0 {
            let _ = write!(
                s,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#444\">{}</text>",
                ml + cw * (j as f64 + 0.5),
                mt - 6.0,
                esc(c)
            );
        }
    }
    let row_every = if ch < 12.0 {
        (12.0 / ch).ceil() as usize
    } else {
        1
    };
    for (i, r) in row_labels.iter().enumerate() {
        let y = mt + ch * i as f64;
        if i % row_every == 0 {
            let _ = write!(
                s,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#444\">{}</text>",
                ml - 6.0,
                y + ch / 2.0 + 4.0,
                esc(r)
            );
        }
        for (j, _) in col_labels.iter().enumerate() {
            let v = cells.get(i).and_then(|row| row.get(j)).copied().flatten();
            let x = ml + cw * j as f64;
            let fill = v.map_or("#eee".to_string(), ratio_color);
            let tip = match v {
                Some(v) => format!("{} {}: {:.3}x median", r, col_labels[j], v),
                None => format!("{} {}: no data", r, col_labels[j]),
            };
            let _ = write!(
                s,
                "<rect class=\"cell\" x=\"{x:.1}\" y=\"{y:.1}\" width=\"{cw:.1}\" height=\"{ch:.1}\" fill=\"{fill}\" stroke=\"#ddd\" stroke-width=\"0.5\"><title>{}</title></rect>",
                esc(&tip)
            );
            if let (Some(v), true) = (v, cw >= 34.0 && ch >= 14.0) {
                let _ = write!(
                    s,
                    "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#222\" font-size=\"10\">{:.2}</text>",
                    x + cw / 2.0,
                    y + ch / 2.0 + 4.0,
                    v
                );
            }
        }
    }
    // Colour key.
    let ky = mt + ch * row_labels.len() as f64 + 18.0;
    for (k, (r, label)) in [
        (0.5, "0.5x"),
        (0.8, "0.8x"),
        (1.0, "1x = median"),
        (1.25, "1.25x"),
        (2.0, "2x+"),
    ]
    .iter()
    .enumerate()
    {
        let x = ml + 105.0 * k as f64;
        let _ = write!(
            s,
            "<rect x=\"{x:.1}\" y=\"{ky:.1}\" width=\"16\" height=\"12\" fill=\"{}\" stroke=\"#999\"/><text x=\"{:.1}\" y=\"{:.1}\" fill=\"#222\">{label}</text>",
            ratio_color(*r),
            x + 20.0,
            ky + 10.0
        );
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log2_ticks_cover_the_range() {
        let t = ticks(Scale::Log2, 8.0, 1024.0, 10);
        assert_eq!(t, vec![8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0]);
        let t = ticks(Scale::Log2, 8.0, (1u64 << 30) as f64, 10);
        assert!(t.len() <= 11 && t[0] == 8.0, "{t:?}");
    }

    #[test]
    fn linear_ticks_are_round() {
        assert_eq!(
            ticks(Scale::Linear, 0.0, 10.0, 5),
            vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]
        );
    }

    #[test]
    fn plot_escapes_and_skips_unplottable_points() {
        let p = LinePlot {
            title: "a<b".into(),
            x: Axis::new("size", Scale::Log2, fmt_bytes),
            y: Axis::new("GB/s", Scale::Linear, fmt_num),
            series: vec![Series::new(
                "s&t",
                0,
                vec![(0.0, 1.0), (8.0, 2.0), (16.0, 3.0)],
            )],
            x_labels: vec![],
        };
        let svg = p.render(600, 300);
        assert!(svg.contains("a&lt;b") && svg.contains("s&amp;t"));
        assert!(svg.contains("<path class=\"series\" d=\"M"));
        assert_eq!(svg.matches("<circle").count(), 2);
    }

    #[test]
    fn ratio_colors() {
        assert_eq!(ratio_color(1.0), "#ffffff");
        assert!(ratio_color(2.0).starts_with("#ff"));
        assert!(ratio_color(0.5).ends_with("ff"));
    }
}
