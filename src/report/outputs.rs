//! Writes the human and dashboard outputs of a results folder (results.csv, report.md,
//! report.html, metrics.prom), during a run (as an Exporter) and afterwards (`collbench report`).

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::read::{self, LoadedRun, RunData};
use super::{csv, html, markdown, prom, Exporter, RunDoc};
use crate::metrics::Record;

pub const CSV_FILE: &str = "results.csv";
pub const MARKDOWN_FILE: &str = "report.md";
pub const HTML_FILE: &str = "report.html";
pub const PROM_FILE: &str = "metrics.prom";

/// Writes `bytes` so that a reader (a browser, node_exporter) sees the old file or the new one
/// (rename, no fsync: these files are rebuilt from run.json). The temporary name starts with a
/// dot and ends in .tmp, which the textfile collector skips.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    File::create(&tmp)?.write_all(bytes)?;
    fs::rename(&tmp, path)
}

#[derive(Clone, Debug, Default)]
pub struct ReportOptions {
    /// Sizes for the latency CDFs; empty picks smallest, middle and largest.
    pub cdf_sizes: Vec<u64>,
}

/// The run document as the readers see it (same JSON as run.json).
pub fn run_data(doc: &RunDoc) -> io::Result<RunData> {
    let v = serde_json::to_value(doc).map_err(io::Error::other)?;
    serde_json::from_value(v).map_err(io::Error::other)
}

fn folder_name(dir: &Path) -> String {
    dir.canonicalize()
        .ok()
        .as_deref()
        .and_then(Path::file_name)
        .or_else(|| dir.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| dir.display().to_string())
}

pub fn write_csv(dir: &Path, run: &RunData) -> io::Result<PathBuf> {
    let p = dir.join(CSV_FILE);
    write_atomic(&p, csv::render(run).as_bytes())?;
    Ok(p)
}

pub fn write_markdown(dir: &Path, run: &RunData, warnings: &[String]) -> io::Result<PathBuf> {
    let p = dir.join(MARKDOWN_FILE);
    write_atomic(
        &p,
        markdown::render(run, &folder_name(dir), warnings).as_bytes(),
    )?;
    Ok(p)
}

pub fn write_prom(path: &Path, run: &RunData, name: &str) -> io::Result<()> {
    write_atomic(path, prom::render(run, name).as_bytes())
}

/// report.html; histograms.hlog is read back for exact CDFs when it is there.
pub fn write_html(
    dir: &Path,
    run: &RunData,
    warnings: &[String],
    opts: &ReportOptions,
) -> io::Result<PathBuf> {
    let hists = read::read_hlog(&dir.join(&run.files.histograms));
    let mut warnings = warnings.to_vec();
    if let Err(e) = &hists {
        if !run.results.is_empty() {
            warnings.push(format!("latency CDFs are approximate: {e}"));
        }
    }
    let extras = html::Extras {
        histograms: hists.as_ref().ok(),
        cdf_sizes: opts.cdf_sizes.clone(),
        warnings,
    };
    let p = dir.join(HTML_FILE);
    write_atomic(&p, html::render(run, &folder_name(dir), &extras).as_bytes())?;
    Ok(p)
}

/// Every output of a loaded run into its folder; returns the paths written.
pub fn write_all(loaded: &LoadedRun, opts: &ReportOptions) -> io::Result<Vec<PathBuf>> {
    let dir = &loaded.dir;
    Ok(vec![
        write_csv(dir, &loaded.run)?,
        write_markdown(dir, &loaded.run, &loaded.warnings)?,
        write_html(dir, &loaded.run, &loaded.warnings, opts)?,
        {
            let p = dir.join(PROM_FILE);
            write_prom(&p, &loaded.run, &folder_name(dir))?;
            p
        },
    ])
}

/// The outputs above, refreshed as a run goes: csv, md and prom after every size, html at most
/// every few seconds (it reads the histogram log back) and always at the end.
pub struct ReportExporter {
    dir: PathBuf,
    last_html: Option<Instant>,
    html_every: Duration,
}

impl ReportExporter {
    pub fn new(dir: &Path) -> ReportExporter {
        ReportExporter {
            dir: dir.to_path_buf(),
            last_html: None,
            html_every: Duration::from_secs(5),
        }
    }

    fn write(&mut self, doc: &RunDoc, html_now: bool) -> io::Result<()> {
        let run = run_data(doc)?;
        let warnings: Vec<String> = if run.status == "running" {
            vec!["the run is still going (or was killed): this report is partial".to_string()]
        } else {
            Vec::new()
        };
        write_csv(&self.dir, &run)?;
        write_markdown(&self.dir, &run, &warnings)?;
        write_prom(&self.dir.join(PROM_FILE), &run, &folder_name(&self.dir))?;
        if html_now
            || self
                .last_html
                .is_none_or(|t| t.elapsed() >= self.html_every)
        {
            write_html(&self.dir, &run, &warnings, &ReportOptions::default())?;
            self.last_html = Some(Instant::now());
        }
        Ok(())
    }
}

impl Exporter for ReportExporter {
    fn start(&mut self, run: &RunDoc) -> io::Result<()> {
        self.write(run, true)
    }

    fn step(&mut self, run: &RunDoc, _records: &[Record]) -> io::Result<()> {
        self.write(run, false)
    }

    fn finish(&mut self, run: &RunDoc) -> io::Result<()> {
        self.write(run, true)
    }
}
