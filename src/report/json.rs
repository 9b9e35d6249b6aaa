//! run.json, rewritten atomically (temp file + rename) after every size, and progress.jsonl,
//! one record per line appended as measured, so a run killed half-way keeps what it measured.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::{Exporter, RunDoc};
use crate::metrics::Record;

pub struct JsonExporter {
    dir: PathBuf,
    progress: Option<File>,
}

impl JsonExporter {
    pub fn new(dir: &Path) -> JsonExporter {
        JsonExporter {
            dir: dir.to_path_buf(),
            progress: None,
        }
    }
}

/// Writes `bytes` to `path` so that a reader sees the old file or the new one, never a part.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_data()?;
    }
    fs::rename(&tmp, path)
}

fn write_run(dir: &Path, run: &RunDoc) -> io::Result<()> {
    let mut bytes = serde_json::to_vec_pretty(run).map_err(io::Error::other)?;
    bytes.push(b'\n');
    write_atomic(&dir.join("run.json"), &bytes)
}

impl Exporter for JsonExporter {
    fn start(&mut self, run: &RunDoc) -> io::Result<()> {
        self.progress = Some(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.join(&run.files.progress))?,
        );
        write_run(&self.dir, run)
    }

    fn step(&mut self, run: &RunDoc, records: &[Record]) -> io::Result<()> {
        if let Some(p) = &mut self.progress {
            for r in records {
                let mut line = serde_json::to_vec(r).map_err(io::Error::other)?;
                line.push(b'\n');
                p.write_all(&line)?;
            }
            p.flush()?;
        }
        write_run(&self.dir, run)
    }

    fn finish(&mut self, run: &RunDoc) -> io::Result<()> {
        write_run(&self.dir, run)
    }
}
