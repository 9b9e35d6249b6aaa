//! A one-line progress display on stderr (op, size, done/total, ETA) for long runs, refreshed
//! after every size; lib.rs adds it only when stderr is a terminal, so logs and CI stay quiet.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use super::{Exporter, RunDoc};
use crate::metrics::Record;
use crate::plan::size::format_size;
use crate::plan::SweepPlan;

/// Work of one (op, size) step in the ETA model: its bytes plus a fixed per-call cost worth
/// 64 KiB, so small sizes (latency-bound) and large ones (bandwidth-bound) both count.
const FIXED_COST_BYTES: f64 = 65536.0;

/// Whether a progress line is on the terminal now (the table clears it before printing a row).
static SHOWN: AtomicBool = AtomicBool::new(false);

/// Wraps the table's output: clears the progress line first, so rows never land after it.
pub struct ClearProgress<W: Write>(pub W);

impl<W: Write> Write for ClearProgress<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if SHOWN.swap(false, Ordering::Relaxed) {
            let mut e = io::stderr();
            let _ = e.write_all(b"\r\x1b[2K");
            let _ = e.flush();
        }
        self.0.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

pub struct ProgressExporter<W: Write> {
    out: W,
    started: Instant,
    /// (label, work) of every step in the order the runner measures them.
    steps: Vec<(String, f64)>,
    done: usize,
}

impl<W: Write> ProgressExporter<W> {
    pub fn new(out: W, plan: &SweepPlan) -> Self {
        let mut steps = Vec::new();
        for (op, dtype, redop) in plan.groups() {
            for &size in &plan.sizes {
                let label = match redop {
                    Some(r) => format!(
                        "{} {} {} {}",
                        op.name(),
                        dtype.name(),
                        r.name(),
                        format_size(size)
                    ),
                    None => format!("{} {} {}", op.name(), dtype.name(), format_size(size)),
                };
                steps.push((
                    label,
                    (size as f64 + FIXED_COST_BYTES) * plan.placements.len() as f64,
                ));
            }
        }
        ProgressExporter {
            out,
            started: Instant::now(),
            steps,
            done: 0,
        }
    }

    /// The line shown after `done` steps, `elapsed_s` seconds in.
    pub fn line(&self, elapsed_s: f64) -> String {
        let total: f64 = self.steps.iter().map(|s| s.1).sum();
        let done: f64 = self.steps[..self.done.min(self.steps.len())]
            .iter()
            .map(|s| s.1)
            .sum();
        let pct = if total > 0.0 {
            100.0 * done / total
        } else {
            100.0
        };
        let eta = if done > 0.0 {
            fmt_secs(elapsed_s * (total - done) / done)
        } else {
            "?".into()
        };
        let now = self
            .steps
            .get(self.done)
            .map_or("finishing".to_string(), |s| format!("now {}", s.0));
        format!(
            "collbench [{pct:3.0}%] {}/{} sizes, {now}, elapsed {}, ETA {eta}",
            self.done,
            self.steps.len(),
            fmt_secs(elapsed_s)
        )
    }

    fn draw(&mut self) -> io::Result<()> {
        let line = self.line(self.started.elapsed().as_secs_f64());
        write!(self.out, "\r\x1b[2K{line}")?;
        self.out.flush()?;
        SHOWN.store(true, Ordering::Relaxed);
        Ok(())
    }
}

fn fmt_secs(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, s % 3600 / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

impl<W: Write> Exporter for ProgressExporter<W> {
    fn start(&mut self, _run: &RunDoc) -> io::Result<()> {
        self.started = Instant::now();
        self.draw()
    }

    fn step(&mut self, _run: &RunDoc, _records: &[Record]) -> io::Result<()> {
        self.done += 1;
        self.draw()
    }

    fn finish(&mut self, _run: &RunDoc) -> io::Result<()> {
        SHOWN.store(false, Ordering::Relaxed);
        write!(self.out, "\r\x1b[2K")?;
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{LaunchFacts, Plan};

    fn plan(args: &[&str]) -> SweepPlan {
        use clap::Parser;
        let mut argv = vec!["collbench", "bench"];
        argv.extend_from_slice(args);
        let crate::cli::Command::Bench(b) = crate::cli::Cli::parse_from(argv).command else {
            unreachable!()
        };
        let facts = LaunchFacts {
            ranks_on_host: 1,
            mem_available: None,
            auto_backend: crate::plan::BackendKind::Mpi,
        };
        Plan::resolve(&b.sweep, facts).unwrap().sweep
    }

    #[test]
    fn eta_weights_sizes_by_bytes_plus_a_fixed_cost() {
        let p = plan(&["-b", "64K", "-e", "256K", "--op", "all_reduce"]);
        let mut e = ProgressExporter::new(Vec::new(), &p);
        assert!(
            e.line(0.0)
                .contains("0/3 sizes, now all_reduce float sum 64K"),
            "{}",
            e.line(0.0)
        );
        assert!(e.line(0.0).ends_with("ETA ?"));
        // 64K + 64K fixed = 128K of 128K + 192K + 320K = 640K: a fifth done after 10 s.
        e.done = 1;
        let l = e.line(10.0);
        assert!(
            l.contains("[ 20%] 1/3 sizes, now all_reduce float sum 128K"),
            "{l}"
        );
        assert!(l.ends_with("elapsed 10s, ETA 40s"), "{l}");
        e.done = 3;
        assert!(e.line(70.0).contains("[100%] 3/3 sizes, finishing"));
    }
}
