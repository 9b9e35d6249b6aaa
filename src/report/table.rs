//! The live table in nccl-tests' column order (size, count, type, redop, root, then time, algbw,
//! busbw, #wrong per placement), with per-iteration percentile and skew columns appended.

use std::io::{self, Write};

use super::{Exporter, RunDoc};
use crate::metrics::Record;
use crate::plan::{size::format_size, Collective, Placement};

pub struct TableExporter<W: Write> {
    out: W,
    placements: Vec<Placement>,
    /// The collective whose table is open.
    current: Option<Collective>,
    busbw_sum: f64,
    rows: u64,
    wrong: u64,
    checked: bool,
}

impl<W: Write> TableExporter<W> {
    pub fn new(out: W, placements: Vec<Placement>, checked: bool) -> Self {
        TableExporter {
            out,
            placements,
            current: None,
            busbw_sum: 0.0,
            rows: 0,
            wrong: 0,
            checked,
        }
    }

    fn header(&mut self, op: Collective) -> io::Result<()> {
        let mut l1 = format!("# {:<50}", op.name());
        let mut l2 = format!(
            "#{:>11}  {:>12}  {:>8}  {:>6}  {:>6}",
            "size", "count", "type", "redop", "root"
        );
        let mut l3 = format!(
            "#{:>11}  {:>12}  {:>8}  {:>6}  {:>6}",
            "(B)", "(elements)", "", "", ""
        );
        for p in &self.placements {
            l1.push_str(&format!("{:^33}", p.label()));
            l2.push_str(&format!(
                "  {:>7}  {:>6}  {:>6}  {:>6}",
                "time", "algbw", "busbw", "#wrong"
            ));
            l3.push_str(&format!(
                "  {:>7}  {:>6}  {:>6}  {:>6}",
                "(us)", "(GB/s)", "(GB/s)", ""
            ));
        }
        for p in &self.placements {
            l1.push_str(&format!(
                "{:^41}",
                format!("{} per-iteration (us)", p.label())
            ));
            l2.push_str(&format!(
                "  {:>7} {:>7} {:>7} {:>7} {:>7}",
                "p50", "p99", "p99.9", "max", "skew99"
            ));
            l3.push_str(&format!(
                "  {:>7} {:>7} {:>7} {:>7} {:>7}",
                "", "", "", "", ""
            ));
        }
        writeln!(self.out, "#")?;
        writeln!(self.out, "{}", l1.trim_end())?;
        writeln!(self.out, "{}", l2.trim_end())?;
        writeln!(self.out, "{}", l3.trim_end())
    }

    fn footer(&mut self) -> io::Result<()> {
        let verdict = if self.wrong == 0 { "OK" } else { "FAILED" };
        let avg = if self.rows > 0 {
            self.busbw_sum / self.rows as f64
        } else {
            0.0
        };
        writeln!(
            self.out,
            "# Out of bounds values : {} {}",
            self.wrong, verdict
        )?;
        writeln!(self.out, "# Avg bus bandwidth    : {avg:.4} ")?;
        self.busbw_sum = 0.0;
        self.rows = 0;
        self.wrong = 0;
        Ok(())
    }
}

/// One line of the rank list: nccl-tests' device list when the rank drives a GPU.
fn rank_line(r: &crate::bootstrap::RankInfo) -> String {
    match (r.gpu, &r.pci_bus_id) {
        (Some(gpu), Some(bus)) => format!(
            "#  Rank {:>2} Group  0 Pid {:>6} on {:>10} device {:>2} [{}] {}",
            r.rank,
            r.pid,
            r.hostname,
            gpu,
            bus,
            r.gpu_name.as_deref().unwrap_or("")
        ),
        _ => format!(
            "#  Rank {:>3} Pid {:>7} on {:>12} local rank {}",
            r.rank, r.pid, r.hostname, r.local_rank
        ),
    }
}

/// nccl-tests' time formatting: fewer decimals as the number grows.
pub fn fmt_us(us: f64) -> String {
    if us >= 10000.0 {
        format!("{us:.0}")
    } else if us >= 100.0 {
        format!("{us:.1}")
    } else {
        format!("{us:.2}")
    }
}

impl<W: Write> Exporter for TableExporter<W> {
    fn start(&mut self, run: &RunDoc) -> io::Result<()> {
        let c = &run.config;
        let step = match c.step {
            crate::plan::size::Step::Factor(f) => format!("{f}(factor)"),
            crate::plan::size::Step::Bytes(b) => format!("{}(bytes)", format_size(b)),
        };
        writeln!(
            self.out,
            "# collbench {}  backend {}  nRanks {}  minBytes {} maxBytes {} step: {} warmup iters: {} iters: {} validation: {} timeout: {}",
            run.collbench_version,
            run.backend.name,
            run.world_size,
            c.min_bytes,
            c.max_bytes,
            step,
            c.warmup,
            c.iterations,
            c.check_iterations,
            c.timeout
                .map_or("off".to_string(), |t| humantime::format_duration(t).to_string())
        )?;
        writeln!(
            self.out,
            "# {}",
            run.backend.library_version.lines().next().unwrap_or("")
        )?;
        for n in &run.notes {
            writeln!(self.out, "# note: {n}")?;
        }
        writeln!(self.out, "#\n# Using ranks")?;
        for r in &run.ranks {
            writeln!(self.out, "{}", rank_line(r))?;
        }
        self.out.flush()
    }

    fn step(&mut self, _run: &RunDoc, records: &[Record]) -> io::Result<()> {
        let Some(first) = records.first() else {
            return Ok(());
        };
        if self.current != Some(first.op) {
            if self.current.is_some() {
                self.footer()?;
            }
            self.header(first.op)?;
        }
        self.current = Some(first.op);
        let mut line = format!(
            "{:>12}  {:>12}  {:>8}  {:>6}  {:>6}",
            first.size_bytes,
            first.count,
            first.dtype.name(),
            first.redop,
            first.root
        );
        for p in &self.placements {
            match records.iter().find(|r| r.placement == *p) {
                Some(r) => {
                    let wrong = match r.wrong {
                        Some(w) => w.to_string(),
                        None => "N/A".to_string(),
                    };
                    line.push_str(&format!(
                        "  {:>7}  {:>6.2}  {:>6.2}  {:>6}",
                        fmt_us(r.time_us),
                        r.algbw_gbps,
                        r.busbw_gbps,
                        wrong
                    ));
                    self.busbw_sum += r.busbw_gbps;
                    self.rows += 1;
                    self.wrong += r.wrong.unwrap_or(0);
                }
                None => line.push_str(&format!("  {:>7}  {:>6}  {:>6}  {:>6}", "-", "-", "-", "-")),
            }
        }
        for p in &self.placements {
            if let Some(r) = records.iter().find(|r| r.placement == *p) {
                let l = &r.latency;
                line.push_str(&format!(
                    "  {:>7} {:>7} {:>7} {:>7} {:>7}",
                    fmt_us(l.p50_us),
                    fmt_us(l.p99_us),
                    fmt_us(l.p999_us),
                    fmt_us(l.max_us),
                    fmt_us(r.skew.p99_us)
                ));
            }
        }
        writeln!(self.out, "{line}")?;
        self.out.flush()
    }

    fn finish(&mut self, run: &RunDoc) -> io::Result<()> {
        if self.current.is_some() {
            self.footer()?;
        }
        if !self.checked {
            writeln!(self.out, "# correctness check off (-c 0): #wrong is N/A")?;
        }
        for (op, bw) in &run.summary.avg_busbw_gbps {
            writeln!(self.out, "# {op}: avg bus bandwidth {bw:.4} GB/s")?;
        }
        writeln!(
            self.out,
            "# {} records, {} wrong values in total: {}",
            run.summary.records,
            run.summary.wrong_total,
            if run.summary.wrong_total == 0 {
                "OK"
            } else {
                "FAILED"
            }
        )?;
        writeln!(self.out, "#")?;
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootstrap::RankInfo;

    #[test]
    fn gpu_ranks_are_listed_like_nccl_tests_devices() {
        let mut r = RankInfo {
            rank: 0,
            local_rank: 0,
            hostname: "node7".into(),
            pid: 1234,
            gpu: Some(0),
            pci_bus_id: Some("0000:19:00.0".into()),
            gpu_name: Some("NVIDIA H200".into()),
        };
        assert_eq!(
            rank_line(&r),
            "#  Rank  0 Group  0 Pid   1234 on      node7 device  0 [0000:19:00.0] NVIDIA H200"
        );
        r.gpu = None;
        assert_eq!(
            rank_line(&r),
            "#  Rank   0 Pid    1234 on        node7 local rank 0"
        );
    }
}
