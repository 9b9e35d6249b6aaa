//! Measurement math: bounded latency histograms per (op, size, placement, rank), their exact
//! merge across ranks (HdrHistogram V2 bytes), nccl-tests' bandwidth formulas and rank skew.

mod histogram;

pub use histogram::{HistogramError, LatencyHistogram, LatencySummary, HIGHEST_TRACKABLE_NS};

use serde::Serialize;

use crate::plan::Collective;

/// Algorithm and bus bandwidth in GB/s (1e9 bytes/s) as nccl-tests computes them.
///
/// `bytes` is the size column (for all-to-all: all n blocks a rank sends).
pub fn bandwidth(op: Collective, bytes: u64, nranks: usize, seconds: f64) -> (f64, f64) {
    if seconds <= 0.0 || !seconds.is_finite() {
        return (0.0, 0.0);
    }
    let algbw = bytes as f64 / 1.0e9 / seconds;
    (algbw, algbw * op.bus_factor(nranks))
}

/// Mean of a set of batched times, as nccl-tests' default `-a 1` averages across ranks.
pub fn mean_ns(values: &[u64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.iter().map(|&v| v as f64).sum::<f64>() / values.len() as f64
}

/// Per-iteration skew between ranks: slowest minus fastest rank's latency for the same iteration.
pub fn skew_histogram(max_per_iter: &[u64], min_per_iter: &[u64]) -> LatencyHistogram {
    let mut h = LatencyHistogram::new();
    for (hi, lo) in max_per_iter.iter().zip(min_per_iter) {
        h.record(hi.saturating_sub(*lo));
    }
    h
}

/// One rank's share of a record: what a straggler hunt reads.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct RankSummary {
    pub rank: usize,
    pub time_us: f64,
    pub wrong: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
    /// All-to-all check: the sender of the first wrong block this rank received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wrong_source: Option<usize>,
}

/// The late rank of a call, if one stands out: its per-iteration median is under a third of the
/// median of the other ranks and at least 200 us below it. Returns (rank, its p50, the others' p50).
pub fn late_rank(per_rank: &[RankSummary]) -> Option<(usize, f64, f64)> {
    if per_rank.len() < 3 {
        return None;
    }
    let low = per_rank
        .iter()
        .min_by(|a, b| a.p50_us.total_cmp(&b.p50_us))?;
    let mut others: Vec<f64> = per_rank
        .iter()
        .filter(|r| r.rank != low.rank)
        .map(|r| r.p50_us)
        .collect();
    others.sort_by(|a, b| a.total_cmp(b));
    let med = others[others.len() / 2];
    // Every other rank must wait too, or it is noise on one rank.
    let all_wait = others[0] > 3.0 * low.p50_us;
    (all_wait && med > 3.0 * low.p50_us && med - low.p50_us >= 200.0)
        .then_some((low.rank, low.p50_us, med))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranks(p50: &[f64]) -> Vec<RankSummary> {
        p50.iter()
            .enumerate()
            .map(|(rank, &p)| RankSummary {
                rank,
                time_us: p,
                wrong: 0,
                p50_us: p,
                p99_us: p,
                max_us: p,
                mean_us: p,
                wrong_source: None,
            })
            .collect()
    }

    #[test]
    fn the_late_rank_waits_least() {
        assert_eq!(
            late_rank(&ranks(&[2050.0, 1990.0, 12.0, 2010.0])).map(|x| x.0),
            Some(2)
        );
        // Noise: one fast rank but the others do not all wait.
        assert_eq!(late_rank(&ranks(&[30.0, 900.0, 10.0, 25.0])), None);
        // Too small a gap to be a straggler.
        assert_eq!(late_rank(&ranks(&[60.0, 55.0, 10.0, 58.0])), None);
        assert_eq!(late_rank(&ranks(&[10.0, 2000.0])), None);
    }

    /// Rows of published nccl-tests tables: (op, size, ranks, time us, algbw, busbw).
    const PUBLISHED: &[(Collective, u64, usize, f64, f64, f64)] = &[
        // all_reduce_perf, 4 ranks: factor 2(n-1)/n = 1.5
        (Collective::AllReduce, 134217728, 4, 1119.32, 119.91, 179.87),
        (Collective::AllReduce, 16777216, 4, 195.46, 85.83, 128.75),
        // all_reduce_perf, 8 ranks: factor 1.75
        (Collective::AllReduce, 134217728, 8, 386.9, 346.95, 607.15),
        (Collective::AllReduce, 268435456, 8, 698.9, 384.07, 672.13),
        // alltoall_perf, 16 ranks (count 131072 per peer): factor 15/16
        (Collective::AllToAll, 8388608, 16, 784.9, 10.69, 10.02),
        // alltoall_perf, 4 ranks (count 65536 per peer): factor 3/4
        (Collective::AllToAll, 1048576, 4, 52.94, 19.81, 14.85),
    ];

    #[test]
    fn bandwidth_matches_published_nccl_tests_rows() {
        for &(op, size, n, us, alg, bus) in PUBLISHED {
            let (a, b) = bandwidth(op, size, n, us * 1e-6);
            // The tables print time rounded to 4-5 digits, so allow that rounding.
            let tol = |x: f64| x * 1.5e-4 + 0.006;
            assert!(
                (a - alg).abs() < tol(alg),
                "{op:?} {size}: algbw {a} vs {alg}"
            );
            assert!(
                (b - bus).abs() < tol(bus),
                "{op:?} {size}: busbw {b} vs {bus}"
            );
        }
    }

    #[test]
    fn bus_factors() {
        assert_eq!(Collective::AllReduce.bus_factor(1), 0.0);
        assert_eq!(Collective::AllReduce.bus_factor(2), 1.0);
        assert_eq!(Collective::AllToAll.bus_factor(4), 0.75);
        assert_eq!(bandwidth(Collective::AllReduce, 8, 4, 0.0), (0.0, 0.0));
    }

    #[test]
    fn skew_is_max_minus_min_per_iteration() {
        let h = skew_histogram(&[10_000, 50_000, 12_000], &[9_000, 10_000, 12_000]);
        let s = h.summary();
        assert_eq!(s.samples, 3);
        assert!((s.max_us - 40.0).abs() < 0.05, "{s:?}");
        assert_eq!(s.min_us, 0.0);
    }
}

/// One measured (op, dtype, redop, size, placement), merged over all ranks.
#[derive(Clone, Debug, Serialize)]
pub struct Record {
    pub op: crate::plan::Collective,
    pub dtype: crate::plan::DType,
    /// "none" for collectives without a reduction, as nccl-tests prints it.
    pub redop: String,
    pub root: i32,
    pub placement: crate::plan::Placement,
    pub size_bytes: u64,
    pub count: u64,
    pub iterations: u32,
    /// Batched time: wall time of the n-iteration loop / n, averaged over ranks (nccl-tests -a 1).
    pub time_us: f64,
    pub time_us_min_rank: f64,
    pub time_us_max_rank: f64,
    pub algbw_gbps: f64,
    pub busbw_gbps: f64,
    /// Wrong elements summed over ranks; None when the check was off (-c 0).
    pub wrong: Option<u64>,
    /// Distribution of every timed iteration on every rank.
    pub latency: LatencySummary,
    /// Distribution of per-iteration skew: slowest minus fastest rank in the same iteration.
    pub skew: LatencySummary,
    pub per_rank: Vec<RankSummary>,
    /// Tag of this record's merged histogram in histograms.hlog.
    pub histogram_tag: String,
    /// Seconds since the Unix epoch when the timed loop started on rank 0.
    pub start_unix_s: f64,
    #[serde(skip)]
    pub histogram: LatencyHistogram,
}

impl Record {
    pub fn tag_for(
        op: crate::plan::Collective,
        dtype: crate::plan::DType,
        redop: &str,
        placement: crate::plan::Placement,
        size: u64,
    ) -> String {
        format!(
            "{}.{}.{}.{}.{}",
            op.name(),
            dtype.name(),
            redop,
            placement.name(),
            size
        )
    }
}
