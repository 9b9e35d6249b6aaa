//! The merged histogram of every record in HdrHistogram's interval-log format (V2, compressed,
//! base64), tagged `op.type.redop.placement.size`, readable by HdrHistogram's log tools.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::V2DeflateSerializer;

use super::{Exporter, RunDoc};
use crate::metrics::Record;

pub struct HlogExporter {
    path: PathBuf,
    start_unix_s: f64,
}

impl HlogExporter {
    pub fn new(dir: &Path, file: &str, start_unix_s: f64) -> HlogExporter {
        HlogExporter {
            path: dir.join(file),
            start_unix_s,
        }
    }
}

impl Exporter for HlogExporter {
    fn start(&mut self, run: &RunDoc) -> io::Result<()> {
        let mut f = BufWriter::new(File::create(&self.path)?);
        let mut ser = V2DeflateSerializer::new();
        let start = UNIX_EPOCH + Duration::from_secs_f64(self.start_unix_s);
        IntervalLogWriterBuilder::new()
            .add_comment(&format!(
                "collbench {} latency histograms, values in nanoseconds, one interval per record",
                run.collbench_version
            ))
            .with_start_time(start)
            .with_base_time(start)
            .begin_log_with(&mut f, &mut ser)?;
        writeln!(
            f,
            "\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\""
        )?;
        f.flush()
    }

    fn step(&mut self, _run: &RunDoc, records: &[Record]) -> io::Result<()> {
        let mut f = BufWriter::new(OpenOptions::new().append(true).open(&self.path)?);
        let mut ser = V2DeflateSerializer::new();
        {
            let mut w = IntervalLogWriterBuilder::new().begin_log_with(&mut f, &mut ser)?;
            for r in records {
                let offset = (r.start_unix_s - self.start_unix_s).max(0.0);
                let length = r.latency.mean_us * 1e-6 * r.latency.samples as f64;
                w.write_histogram(
                    r.histogram.inner(),
                    Duration::from_secs_f64(offset),
                    Duration::from_secs_f64(length.max(0.0)),
                    Tag::new(&r.histogram_tag),
                )
                .map_err(|e| io::Error::other(format!("{e:?}")))?;
            }
        }
        f.flush()
    }

    fn finish(&mut self, _run: &RunDoc) -> io::Result<()> {
        Ok(())
    }
}
