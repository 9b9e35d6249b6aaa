//! The timed loop: per (op, type, redop, size, placement) the correctness check, warmup, and n
//! timed iterations with a mark around each call; then the cross-rank assembly of a record.
//!
//! Loop semantics: the batched time is the wall time of n back-to-back calls followed by one
//! synchronize, divided by n (nccl-tests' `time`); the per-iteration latency is the time between
//! the marks around each call (host clock for MPI, whose calls block; CUDA events on the stream
//! for NCCL, whose marks run in a second loop of n iterations so that they cost the batched time
//! nothing). Nothing inside the timed region allocates, formats or does I/O: marks go into
//! preallocated slots.

pub mod check;
pub mod localize;
pub mod watchdog;

use std::time::{SystemTime, UNIX_EPOCH};

use crate::backend::{Backend, BackendError, Call, Phase};
use crate::bootstrap::group::{Extreme, GroupError};
use crate::bootstrap::World;
use crate::metrics::{self, HistogramError, LatencyHistogram, RankSummary, Record};
use crate::plan::{Collective, RedOp, Shape, SweepPlan};
use watchdog::Watchdog;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Backend(#[from] BackendError),
    #[error("{0}")]
    Group(#[from] GroupError),
    #[error("{0}")]
    Mpi(#[from] crate::ffi::mpi::MpiError),
    #[error("merging histograms: {0}")]
    Histogram(#[from] HistogramError),
    #[error("writing results: {0}")]
    Export(String),
    /// Something this world cannot do (e.g. MPI sub-communicators without MPI).
    #[error("{0}")]
    Unsupported(String),
}

/// One rank's measurement of one call.
struct RankMeasurement {
    batched_ns: u64,
    samples: Vec<u64>,
    wrong: u64,
    /// All-to-all: the sender of the first wrong block (u64::MAX on the wire when none).
    wrong_source: Option<usize>,
    /// Whether the check ran (the backend may not define a result to check).
    checked: bool,
}

/// What the sweep found, known to every rank.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SweepOutcome {
    pub records: u64,
    pub wrong_total: u64,
}

/// Runs the whole sweep; rank 0 gets every size's records through `on_step` as soon as they exist.
pub fn run_sweep<B: Backend + ?Sized>(
    plan: &SweepPlan,
    backend: &mut B,
    world: &World,
    watchdog: &Watchdog,
    mut on_step: impl FnMut(&[Record]) -> Result<(), RunError>,
) -> Result<SweepOutcome, RunError> {
    let mut outcome = SweepOutcome {
        records: 0,
        wrong_total: 0,
    };
    let first_pass = std::time::Instant::now();
    let mut pass = 0u32;
    loop {
        sweep_pass(plan, backend, world, watchdog, &mut on_step, &mut outcome)?;
        pass += 1;
        // Rank 0's clock decides for everyone whether another pass runs.
        let mine = world.is_root()
            && (pass < plan.repeat || plan.run_for.is_some_and(|d| first_pass.elapsed() < d));
        watchdog.arm("agreeing on another pass", None);
        let more = world.group().allreduce_sum_u64(mine as u64)?;
        watchdog.disarm();
        if more == 0 {
            break;
        }
    }
    watchdog.arm("final agreement", None);
    outcome.wrong_total = world.group().allreduce_sum_u64(outcome.wrong_total)?;
    watchdog.disarm();
    Ok(outcome)
}

/// One pass over every group and size.
fn sweep_pass<B: Backend + ?Sized>(
    plan: &SweepPlan,
    backend: &mut B,
    world: &World,
    watchdog: &Watchdog,
    on_step: &mut impl FnMut(&[Record]) -> Result<(), RunError>,
    outcome: &mut SweepOutcome,
) -> Result<(), RunError> {
    for (op, dtype, redop) in plan.groups() {
        for &size in &plan.sizes {
            let shape = Shape::of(op, dtype, size, world.size as u64);
            let mut step = Vec::with_capacity(plan.placements.len());
            for &placement in &plan.placements {
                let call = Call {
                    op,
                    dtype,
                    redop,
                    count: shape.count,
                    buffer_elems: shape.buffer_elems,
                    placement,
                };
                let start = SystemTime::now();
                let m = measure(plan, backend, world, watchdog, &call, shape.bytes)?;
                watchdog.arm("gathering results", None);
                let rec = assemble(plan, world, &call, shape, &m, start)?;
                watchdog.disarm();
                if let Some(r) = rec {
                    step.push(r);
                }
            }
            if world.is_root() {
                outcome.records += step.len() as u64;
                outcome.wrong_total += step.iter().filter_map(|r| r.wrong).sum::<u64>();
                on_step(&step)?;
            }
        }
    }
    Ok(())
}

fn measure<B: Backend + ?Sized>(
    plan: &SweepPlan,
    backend: &mut B,
    world: &World,
    watchdog: &Watchdog,
    call: &Call,
    bytes: u64,
) -> Result<RankMeasurement, RunError> {
    let (rank, n) = (world.rank, world.size);
    let point = Some((call.op, bytes, call.placement));
    backend.prepare(call)?;

    watchdog.arm("correctness check", point);
    backend.begin_phase(Phase::Check);
    let checked = backend.checks(call);
    let check_iterations = if checked { plan.check_iterations } else { 0 };
    let mut wrong = 0;
    let mut wrong_source = None;
    for it in 0..check_iterations {
        backend.write_input(&mut |b| {
            check::fill(b, call, rank, n, it);
            if it == 0 && plan.debug_corrupt_rank == Some(rank) {
                if let Some(x) = b.first_mut() {
                    *x ^= 0x5a;
                }
            }
        })?;
        backend.launch()?;
        backend.synchronize()?;
        backend.read_output(&mut |b| {
            let w = check::count_wrong(b, call, rank, n, it);
            if w > 0 && wrong_source.is_none() {
                wrong_source = check::first_wrong_source(b, call, rank, n, it);
            }
            wrong += w;
        })?;
        watchdog.tick(it as u64);
    }
    backend.write_input(&mut |b| check::fill(b, call, rank, n, 0))?;

    watchdog.arm("warmup", point);
    backend.begin_phase(Phase::Warmup);
    for i in 0..plan.warmup {
        backend.launch()?;
        watchdog.tick(i as u64);
    }
    backend.synchronize()?;
    backend.barrier()?;

    let iters = plan.iterations as usize;
    let mut samples = vec![0u64; iters];
    // Where a mark costs time of its own (CUDA events), the batched loop runs unmarked and a
    // second loop of n marked iterations gives the per-iteration samples.
    let separate = backend.separate_marked_loop();
    let slow = plan
        .debug_slow_rank
        .filter(|s| s.rank == rank)
        .map(|s| s.delay);
    watchdog.arm("timed loop", point);
    backend.begin_phase(Phase::Timed);
    let t0 = crate::backend::now_ns();
    if separate {
        for i in 0..iters {
            if let Some(d) = slow {
                std::thread::sleep(d);
            }
            backend.launch()?;
            watchdog.tick(i as u64);
        }
    } else if slow.is_some() || backend.marks_each_start() {
        for i in 0..iters {
            if let Some(d) = slow {
                std::thread::sleep(d);
            }
            backend.mark(2 * i);
            backend.launch()?;
            backend.mark(2 * i + 1);
            watchdog.tick(i as u64);
        }
    } else {
        // One clock read per iteration: each call's end mark is the next one's start.
        backend.mark(0);
        for i in 0..iters {
            backend.launch()?;
            backend.mark(i + 1);
            watchdog.tick(i as u64);
        }
    }
    backend.synchronize()?;
    let t1 = crate::backend::now_ns();
    let chained = !separate && slow.is_none() && !backend.marks_each_start();
    if separate {
        watchdog.arm("per-iteration loop", point);
        backend.begin_phase(Phase::Marked);
        for i in 0..iters {
            if let Some(d) = slow {
                std::thread::sleep(d);
            }
            backend.mark(2 * i);
            backend.launch()?;
            backend.mark(2 * i + 1);
            watchdog.tick(i as u64);
        }
        backend.synchronize()?;
    }
    watchdog.disarm();
    for (i, s) in samples.iter_mut().enumerate() {
        *s = if chained {
            backend.elapsed_ns(i, i + 1)
        } else {
            backend.elapsed_ns(2 * i, 2 * i + 1)
        };
    }
    Ok(RankMeasurement {
        batched_ns: (t1 - t0) / iters as u64,
        samples,
        wrong,
        wrong_source,
        checked,
    })
}

/// Gathers every rank's measurement of one call to rank 0 and merges it into a record there.
fn assemble(
    plan: &SweepPlan,
    world: &World,
    call: &Call,
    shape: Shape,
    m: &RankMeasurement,
    start: SystemTime,
) -> Result<Option<Record>, RunError> {
    let group = world.group();
    let mut hist = LatencyHistogram::new();
    for &s in &m.samples {
        hist.record(s);
    }
    let key = || crate::control::relay::Key {
        op: call.op.name().to_string(),
        dtype: call.dtype.name().to_string(),
        redop: call.redop.map_or("none", |r| r.name()).to_string(),
        size: shape.bytes,
        placement: call.placement.name().to_string(),
    };
    crate::control::relay::upload(key, &hist);
    let mut payload = Vec::with_capacity(64);
    payload.extend_from_slice(&m.batched_ns.to_le_bytes());
    payload.extend_from_slice(&m.wrong.to_le_bytes());
    payload.extend_from_slice(&m.wrong_source.map_or(u64::MAX, |s| s as u64).to_le_bytes());
    payload.extend_from_slice(&hist.to_bytes());
    let gathered = group.gather_bytes(0, &payload)?;
    let max = group.reduce_u64(0, &m.samples, Extreme::Max)?;
    let min = group.reduce_u64(0, &m.samples, Extreme::Min)?;
    let (Some(gathered), Some(max), Some(min)) = (gathered, max, min) else {
        return Ok(None);
    };

    let mut merged = LatencyHistogram::new();
    let mut per_rank = Vec::with_capacity(gathered.len());
    let mut batched = Vec::with_capacity(gathered.len());
    let mut wrong_total = 0;
    for (rank, bytes) in gathered.iter().enumerate() {
        if bytes.len() < 24 {
            return Err(HistogramError::Truncated(bytes.len()).into());
        }
        let word =
            |i: usize| u64::from_le_bytes(bytes[8 * i..8 * i + 8].try_into().expect("8 bytes"));
        let (b, w, src) = (word(0), word(1), word(2));
        let h = LatencyHistogram::from_bytes(&bytes[24..])?;
        merged.merge(&h)?;
        let s = h.summary();
        per_rank.push(RankSummary {
            rank,
            time_us: b as f64 / 1000.0,
            wrong: w,
            p50_us: s.p50_us,
            p99_us: s.p99_us,
            max_us: s.max_us,
            mean_us: s.mean_us,
            wrong_source: (src != u64::MAX).then_some(src as usize),
        });
        batched.push(b);
        wrong_total += w;
    }
    let time_ns = metrics::mean_ns(&batched);
    let (algbw, busbw) = metrics::bandwidth(call.op, shape.bytes, world.size, time_ns * 1e-9);
    let redop = redop_name(call.op, call.redop);
    Ok(Some(Record {
        op: call.op,
        dtype: call.dtype,
        histogram_tag: Record::tag_for(call.op, call.dtype, &redop, call.placement, shape.bytes),
        redop,
        root: -1,
        placement: call.placement,
        size_bytes: shape.bytes,
        count: shape.count,
        iterations: plan.iterations,
        time_us: time_ns / 1000.0,
        time_us_min_rank: batched.iter().copied().min().unwrap_or(0) as f64 / 1000.0,
        time_us_max_rank: batched.iter().copied().max().unwrap_or(0) as f64 / 1000.0,
        algbw_gbps: algbw,
        busbw_gbps: busbw,
        wrong: (plan.check_iterations > 0 && m.checked).then_some(wrong_total),
        latency: merged.summary(),
        skew: metrics::skew_histogram(&max, &min).summary(),
        per_rank,
        start_unix_s: start
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64()),
        histogram: merged,
    }))
}

pub fn redop_name(op: Collective, redop: Option<RedOp>) -> String {
    match (op.reduces(), redop) {
        (true, Some(r)) => r.name().to_string(),
        _ => "none".to_string(),
    }
}
