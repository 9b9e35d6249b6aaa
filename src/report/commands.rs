//! The subcommands that read results back: report, compare, history, import-nccl-tests; each
//! maps its outcome to the documented exit codes through Outcome/Failure.

use std::path::PathBuf;

use super::compare::{self, Rule};
use super::history::{self, Filter, Metric};
use super::nccl_import::{self, ImportError};
use super::outputs::{self, ReportOptions};
use super::read;
use crate::cli::{
    CompareArgs, CompareFormat, HistoryArgs, HistoryMetric, ImportArgs, PlacementArg, ReportArgs,
};
use crate::plan::size::parse_size;
use crate::{Failure, Outcome};

fn bad(e: impl std::fmt::Display) -> Failure {
    Failure::BadInput(e.to_string())
}

fn write_or_print(out: Option<&PathBuf>, text: &str) -> Result<(), Failure> {
    match out {
        Some(p) if p.as_os_str() != "-" => outputs::write_atomic(p, text.as_bytes())
            .map_err(|e| Failure::CouldNotRun(format!("writing {}: {e}", p.display()))),
        _ => {
            print!("{text}");
            Ok(())
        }
    }
}

pub fn report(args: ReportArgs) -> Result<Outcome, Failure> {
    let loaded = read::load(&args.run_dir).map_err(bad)?;
    for w in &loaded.warnings {
        eprintln!("collbench: warning: {w}");
    }
    if let Some(p) = &args.prometheus {
        let text = super::prom::render(&loaded.run, &loaded.name());
        return write_or_print(Some(p), &text).map(|_| Outcome::Success);
    }
    let opts = ReportOptions {
        cdf_sizes: args.cdf_sizes.clone(),
    };
    let written = outputs::write_all(&loaded, &opts).map_err(|e| {
        Failure::CouldNotRun(format!(
            "writing reports into {}: {e}",
            loaded.dir.display()
        ))
    })?;
    for p in written {
        println!("{}", p.display());
    }
    Ok(Outcome::Success)
}

pub fn compare(args: CompareArgs) -> Result<Outcome, Failure> {
    if !(args.noise_k >= 0.0 && args.floor_pct >= 0.0) {
        return Err(bad("--noise-k/--floor-pct: must be 0 or more"));
    }
    let baseline = read::load(&args.baseline).map_err(bad)?;
    let run = read::load(&args.run).map_err(bad)?;
    let rule = Rule {
        k: args.noise_k,
        floor: args.floor_pct / 100.0,
        ..Rule::default()
    };
    let c = compare::compare(&baseline, &run, &rule).map_err(bad)?;
    let text = match args.format {
        CompareFormat::Md => c.markdown(),
        CompareFormat::Json => c.json(),
    };
    write_or_print(args.out.as_ref(), &text)?;
    let summary = format!(
        "{} regression(s), {} improvement(s) beyond noise in {} judged comparisons",
        c.regressions, c.improvements, c.judged
    );
    if args.out.is_some() {
        println!("collbench compare: {summary}");
    }
    if c.regressions > 0 {
        Ok(Outcome::TestFailed(summary))
    } else {
        Ok(Outcome::Success)
    }
}

pub fn history(args: HistoryArgs) -> Result<Outcome, Failure> {
    let metric = match args.metric {
        HistoryMetric::Busbw => Metric::Busbw,
        HistoryMetric::P50 => Metric::P50,
        HistoryMetric::P99 => Metric::P99,
    };
    let (mut sizes, mut all_sizes) = (Vec::new(), false);
    if let Some(s) = &args.sizes {
        if s.trim().eq_ignore_ascii_case("all") {
            all_sizes = true;
        } else {
            for part in s.split(',') {
                sizes
                    .push(parse_size(part).map_err(|e| {
                        bad(format!("--size: {e}; write sizes like 1M,64M or all"))
                    })?);
            }
        }
    }
    let ops = args
        .ops
        .as_deref()
        .map(|o| o.split(',').map(|s| s.trim().replace('-', "_")).collect())
        .unwrap_or_default();
    let placements = match args.placement {
        PlacementArg::Both => vec!["out_of_place".to_string(), "in_place".to_string()],
        PlacementArg::Out => vec!["out_of_place".to_string()],
        PlacementArg::In => vec!["in_place".to_string()],
    };
    let (runs, skipped) = history::load_dir(&args.dir).map_err(bad)?;
    for s in &skipped {
        eprintln!("collbench: warning: skipped {s}");
    }
    let h = history::build(
        runs,
        skipped,
        metric,
        &Filter {
            ops,
            sizes,
            all_sizes,
            placements,
        },
    )
    .map_err(|e| bad(format!("{}: {e}", args.dir.display())))?;
    print!("{}", h.table());
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| args.dir.join("history.html"));
    let title = args
        .dir
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| args.dir.display().to_string());
    outputs::write_atomic(&out, h.html(&title).as_bytes())
        .map_err(|e| Failure::CouldNotRun(format!("writing {}: {e}", out.display())))?;
    println!("# html: {}", out.display());
    Ok(Outcome::Success)
}

pub fn import_nccl_tests(args: ImportArgs) -> Result<Outcome, Failure> {
    match nccl_import::import(&args.file, &args.out) {
        Ok(i) => {
            for n in &i.notes {
                println!("# note: {n}");
            }
            println!(
                "# imported {} records into {}",
                i.records,
                args.out.join("run.json").display()
            );
            Ok(Outcome::Success)
        }
        Err(ImportError::Bad(m)) => Err(Failure::BadInput(m)),
        Err(ImportError::Io(m)) => Err(Failure::CouldNotRun(m)),
    }
}
