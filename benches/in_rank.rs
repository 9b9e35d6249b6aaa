//! In-rank cost of measuring: recording one iteration into the latency histogram, the timed loop's
//! per-iteration bookkeeping (two marks and a watchdog tick), and both together, in ns per iteration.
//!
//! cargo bench --bench in_rank

use std::hint::black_box;
use std::time::{Duration, Instant};

use collbench::backend::now_ns;
use collbench::metrics::LatencyHistogram;
use collbench::runner::watchdog::Watchdog;

const ITERS: usize = 5_000_000;

/// Median over 7 runs of ns per iteration of `f` over ITERS iterations.
fn measure(name: &str, mut f: impl FnMut(usize)) -> f64 {
    let mut runs: Vec<f64> = (0..7)
        .map(|_| {
            let t = Instant::now();
            for i in 0..ITERS {
                f(black_box(i));
            }
            t.elapsed().as_nanos() as f64 / ITERS as f64
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    let med = runs[runs.len() / 2];
    println!(
        "{name:<52} {med:6.1} ns/iter (min {:.1}, max {:.1})",
        runs[0],
        runs[runs.len() - 1]
    );
    med
}

fn main() {
    // Latencies a collective's iterations really spread over: 5 us to 50 ms.
    let mut seed = 1u64;
    let values: Vec<u64> = (0..4096)
        .map(|_| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            5_000 + (seed >> 33) % 50_000_000
        })
        .collect();
    let mut hist = LatencyHistogram::new();
    let record = measure("LatencyHistogram::record", |i| {
        hist.record(values[i & 4095]);
    });
    black_box(hist.len());

    let dog = Watchdog::start(0, Some(Duration::from_secs(3600)), Box::new(|_| {}));
    dog.arm("timed loop", None);
    let tick = measure("Watchdog::tick", |i| dog.tick(i as u64));
    let mut marks = vec![0u64; 4096];
    let mark = measure("mark (now_ns into the marks array)", |i| {
        marks[i & 4095] = now_ns();
    });
    // The timed loop with a slow fault: mark, (launch), mark, tick; the samples are recorded
    // into the histogram after the loop.
    let mut hist = LatencyHistogram::new();
    let all = measure("loop bookkeeping: 2 marks + tick + record", |i| {
        let j = (2 * i) & 4095;
        marks[j] = now_ns();
        marks[j + 1] = now_ns();
        dog.tick(i as u64);
        hist.record(marks[j + 1] - marks[j] + values[i & 4095]);
    });
    black_box(hist.len());
    // The timed loop otherwise: one clock read per iteration, the end of one iteration the start
    // of the next.
    let mut hist = LatencyHistogram::new();
    let mut last = now_ns();
    let shared = measure("one shared mark + tick + record", |i| {
        let t = now_ns();
        dog.tick(i as u64);
        hist.record(t - last + values[i & 4095]);
        last = t;
    });
    black_box(hist.len());
    dog.disarm();
    println!(
        "# in-rank cost: record {record:.1} ns, tick {tick:.1} ns, mark {mark:.1} ns; per iteration {shared:.1} ns in the timed loop (one shared mark), {all:.1} ns with a slow fault's two marks (target < 50 ns)"
    );
}
