//! Localization (`--localize`): node pairs in n-1 rounds (circle method), each pair timing an
//! all-reduce on its own MPI sub-communicator; then every suspect is re-paired with a healthy node.
//!
//! Rule: every pair is timed in 3 passes and its fastest time counts; the baseline is the median
//! over nodes of each node's fastest pair; a pair is slow beyond `factor` x baseline. A node slow
//! with most of its partners is a suspect (worst first; a suspect's pairs then no longer count
//! against its partners), and is the culprit when it is still slow paired with a healthy node. A
//! slow pair of two nodes fine with everyone else is a bad link, named when a re-run is slow
//! again. A re-run confirms only if it is also (factor + 1) / 2 x slower than control pairs of
//! the other healthy nodes timed beside it (load elsewhere slows those too). MPI on host memory.

use std::time::Duration;

use serde::Serialize;

use super::watchdog::Watchdog;
use super::RunError;
use crate::backend::mpi::MpiBackend;
use crate::backend::{Backend, Call};
use crate::bootstrap::World;
use crate::ffi::mpi::{self as mpic, MPI_Comm};
use crate::plan::{Collective, DType, Placement, RedOp};

#[derive(Clone, Debug, Serialize)]
pub struct PairTime {
    pub a: String,
    pub b: String,
    /// Median per-call all-reduce time of the pair's slowest rank, in us (fastest of 3 passes).
    pub time_us: f64,
    /// time / baseline.
    pub factor: f64,
    pub slow: bool,
    /// Confirmations: the median of the control pairs timed beside it, in us.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control_us: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Culprit {
    pub node: String,
    pub slow_pairs: usize,
    pub pairs: usize,
    /// The healthy node it was re-paired with, and whether that pair was slow too.
    pub confirmed_with: Option<String>,
    pub confirmed: bool,
    pub factor: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct BadLink {
    pub a: String,
    pub b: String,
    pub factor: f64,
    pub confirmed: bool,
}

/// What localization found, known to every rank.
#[derive(Clone, Debug, Serialize)]
pub struct Localization {
    pub size_bytes: u64,
    pub iterations: u32,
    /// Each pair's time is its fastest of this many passes.
    pub passes: usize,
    pub factor: f64,
    pub nodes: Vec<String>,
    pub baseline_us: f64,
    pub rounds: Vec<Vec<PairTime>>,
    pub confirmations: Vec<PairTime>,
    /// Suspects: confirmed ones are culprits; the others did not repeat.
    pub suspects: Vec<Culprit>,
    pub bad_links: Vec<BadLink>,
    /// Why nothing could be localized (fewer than 3 nodes), if so.
    pub note: Option<String>,
}

/// Rounds of node pairs in which every pair meets once (a bye where the count is odd).
pub fn circle_rounds(n: usize) -> Vec<Vec<(usize, usize)>> {
    if n < 2 {
        return Vec::new();
    }
    let m = n + n % 2;
    let mut seats: Vec<usize> = (0..m).collect();
    let mut rounds = Vec::with_capacity(m - 1);
    for _ in 0..m - 1 {
        let mut pairs = Vec::new();
        for k in 0..m / 2 {
            let (a, b) = (seats[k], seats[m - 1 - k]);
            if a < n && b < n {
                pairs.push((a.min(b), a.max(b)));
            }
        }
        rounds.push(pairs);
        seats[1..].rotate_right(1);
    }
    rounds
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// One pair's all-reduce time on its communicator: each rank's median per-call time (robust to a
/// descheduled call), the slowest rank's at the pair's rank 0. A rank that arrives late makes its
/// partner wait inside every call, so the pair is slow either way.
fn time_pair(
    sub: MPI_Comm,
    bytes: u64,
    iters: u32,
    slow: Option<Duration>,
) -> Result<Option<u64>, RunError> {
    let count = (bytes / 4).max(1);
    let mut b = MpiBackend::new(sub, count * 4, 1);
    b.prepare(&Call {
        op: Collective::AllReduce,
        dtype: DType::Float,
        redop: Some(RedOp::Sum),
        count,
        buffer_elems: count,
        placement: Placement::OutOfPlace,
    })?;
    b.launch()?;
    b.barrier()?;
    let mut samples = Vec::with_capacity(iters as usize);
    for _ in 0..iters.max(1) {
        if let Some(d) = slow {
            std::thread::sleep(d);
        }
        let t0 = crate::backend::now_ns();
        b.launch()?;
        samples.push(crate::backend::now_ns() - t0);
    }
    samples.sort_unstable();
    let t = samples[samples.len() / 2];
    // SAFETY: reading MPI's predefined op handle.
    let max = unsafe { mpi::ffi::RSMPI_MAX };
    Ok(mpic::reduce_u64(sub, 0, &[t], max)?.map(|v| v[0]))
}

struct Ctx<'a> {
    world: &'a World,
    comm: MPI_Comm,
    watchdog: &'a Watchdog,
    node_of_rank: Vec<usize>,
    bytes: u64,
    iters: u32,
    slow: Option<Duration>,
}

/// Every pair is timed this many times (whole passes of rounds), and its fastest time counts:
/// a bad node or link is slow every time, a burst of load on shared cores is not.
const PASSES: usize = 3;

impl Ctx<'_> {
    /// The pair (a, b) beside control pairs of `spare` nodes, PASSES times: the pair's fastest
    /// time in us, and the median of the controls' fastest times (None without controls), both
    /// measured under the same load.
    fn with_controls(
        &self,
        a: usize,
        b: usize,
        spare: &[usize],
    ) -> Result<(f64, Option<f64>), RunError> {
        let mut pairs = vec![(a.min(b), a.max(b))];
        pairs.extend(
            spare
                .chunks_exact(2)
                .map(|c| (c[0].min(c[1]), c[0].max(c[1]))),
        );
        let mut best = vec![f64::INFINITY; pairs.len()];
        for _ in 0..PASSES {
            for (x, ns) in best.iter_mut().zip(self.round(&pairs)?) {
                *x = x.min(ns as f64 / 1000.0);
            }
        }
        let control = (best.len() > 1).then(|| median(&mut best[1..].to_vec()));
        Ok((best[0], control))
    }

    /// Runs `pairs` at once, each on its own communicator; every rank learns every pair's time (ns).
    fn round(&self, pairs: &[(usize, usize)]) -> Result<Vec<u64>, RunError> {
        let me = self.node_of_rank[self.world.rank];
        let color = pairs.iter().position(|&(a, b)| a == me || b == me);
        self.watchdog.arm("localization round", None);
        let sub = mpic::comm_split(self.comm, color.map(|c| c as u32), self.world.rank)?;
        let mut times = vec![0u64; pairs.len()];
        if let (Some(sub), Some(c)) = (sub, color) {
            if let Some(t) = time_pair(sub, self.bytes, self.iters, self.slow)? {
                times[c] = t;
            }
            mpic::comm_free(sub)?;
        }
        // Ranks done (or without a pair) nap, so the cores go to the pairs still timing.
        mpic::napping_barrier(self.comm, Duration::from_micros(200))?;
        // SAFETY: reading MPI's predefined op handle.
        let sum = unsafe { mpi::ffi::RSMPI_SUM };
        let all = mpic::allreduce_u64s(self.comm, &times, sum)?;
        self.watchdog.disarm();
        Ok(all)
    }
}

/// Every rank calls this after the sweep; all of them get the same answer.
pub fn run(
    world: &World,
    watchdog: &Watchdog,
    bytes: u64,
    iters: u32,
    factor: f64,
    slow: Option<Duration>,
) -> Result<Localization, RunError> {
    let comm = world.group().mpi().ok_or_else(|| {
        RunError::Unsupported(
            "--localize needs an MPI world: start the ranks with mpirun (--backend mpi)".into(),
        )
    })?;
    // Every rank learns every rank's host, in rank order.
    let me = crate::bootstrap::hostname();
    watchdog.arm("localization: exchanging host names", None);
    let gathered = mpic::gather_bytes(comm, 0, me.as_bytes())?;
    let mut joined = gathered
        .map(|v| {
            v.iter()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
        .into_bytes();
    mpic::bcast_bytes(comm, 0, &mut joined)?;
    watchdog.disarm();
    let hosts: Vec<String> = String::from_utf8_lossy(&joined)
        .split('\n')
        .map(str::to_string)
        .collect();
    let mut nodes: Vec<String> = Vec::new();
    let node_of_rank: Vec<usize> = hosts
        .iter()
        .map(|h| {
            nodes.iter().position(|n| n == h).unwrap_or_else(|| {
                nodes.push(h.clone());
                nodes.len() - 1
            })
        })
        .collect();
    let ctx = Ctx {
        world,
        comm,
        watchdog,
        node_of_rank,
        bytes,
        iters,
        slow,
    };
    let n = nodes.len();
    let mut out = Localization {
        size_bytes: (bytes / 4).max(1) * 4,
        iterations: iters,
        passes: PASSES,
        factor,
        nodes: nodes.clone(),
        baseline_us: f64::NAN,
        rounds: Vec::new(),
        confirmations: Vec::new(),
        suspects: Vec::new(),
        bad_links: Vec::new(),
        note: None,
    };
    if n < 3 {
        out.note = Some(format!(
            "{n} node(s): pairing needs 3 or more to tell a bad node from its partner"
        ));
        return Ok(out);
    }
    let rounds = circle_rounds(n);
    let mut measured: Vec<(usize, usize, f64)> = rounds
        .iter()
        .flatten()
        .map(|&(a, b)| (a, b, f64::INFINITY))
        .collect();
    for _ in 0..PASSES {
        let mut k = 0;
        for pairs in &rounds {
            for ns in ctx.round(pairs)? {
                measured[k].2 = measured[k].2.min(ns as f64 / 1000.0);
                k += 1;
            }
        }
    }
    let fastest: Vec<f64> = (0..n)
        .map(|i| {
            measured
                .iter()
                .filter(|p| p.0 == i || p.1 == i)
                .map(|p| p.2)
                .fold(f64::INFINITY, f64::min)
        })
        .collect();
    let baseline = median(&mut fastest.clone()).max(1e-3);
    out.baseline_us = round3(baseline);
    let pair_time = |a: usize, b: usize, t: f64| PairTime {
        a: nodes[a].clone(),
        b: nodes[b].clone(),
        time_us: round3(t),
        factor: round3(t / baseline),
        slow: t > factor * baseline,
        control_us: None,
    };
    let mut k = 0;
    for pairs in &rounds {
        out.rounds.push(
            pairs
                .iter()
                .map(|_| {
                    let (a, b, t) = measured[k];
                    k += 1;
                    pair_time(a, b, t)
                })
                .collect(),
        );
    }
    let is_slow = |t: f64| t > factor * baseline;
    let slow_count = |i: usize| {
        let mine: Vec<&(usize, usize, f64)> =
            measured.iter().filter(|p| p.0 == i || p.1 == i).collect();
        (mine.iter().filter(|p| is_slow(p.2)).count(), mine.len())
    };
    let suspects = pick_suspects(&measured, n, factor * baseline);
    let mut healthy: Vec<usize> = (0..n).filter(|i| !suspects.contains(i)).collect();
    healthy.sort_by(|&a, &b| fastest[a].total_cmp(&fastest[b]));
    // Against the controls, halfway to `factor` suffices: load on shared cores slows them too.
    let confirmed = |t: f64, control: Option<f64>| {
        is_slow(t) && control.is_none_or(|c| t > (factor + 1.0) / 2.0 * c)
    };
    for (j, &s) in suspects.iter().enumerate() {
        let (slow_pairs, pairs) = slow_count(s);
        let mut c = Culprit {
            node: nodes[s].clone(),
            slow_pairs,
            pairs,
            confirmed_with: None,
            confirmed: false,
            factor: f64::NAN,
        };
        if let Some(&h) = healthy.get(j % healthy.len().max(1)) {
            let spare: Vec<usize> = healthy.iter().copied().filter(|&x| x != h).collect();
            let (t, control) = ctx.with_controls(s, h, &spare)?;
            c.confirmed_with = Some(nodes[h].clone());
            c.confirmed = confirmed(t, control);
            c.factor = round3(t / baseline);
            out.confirmations.push(PairTime {
                control_us: control.map(round3),
                ..pair_time(s.min(h), s.max(h), t)
            });
        }
        out.suspects.push(c);
    }
    for &(a, b, t) in &measured {
        if is_slow(t) && !suspects.contains(&a) && !suspects.contains(&b) {
            let spare: Vec<usize> = healthy
                .iter()
                .copied()
                .filter(|&x| x != a && x != b)
                .collect();
            let (again, control) = ctx.with_controls(a, b, &spare)?;
            out.confirmations.push(PairTime {
                control_us: control.map(round3),
                ..pair_time(a, b, again)
            });
            out.bad_links.push(BadLink {
                a: nodes[a].clone(),
                b: nodes[b].clone(),
                factor: round3(t / baseline),
                confirmed: confirmed(again, control),
            });
        }
    }
    Ok(out)
}

/// Nodes slow with most of their partners, worst first; once a node is a suspect its pairs no
/// longer count against its partners, so a noisy pair next to a bad node makes no second suspect.
fn pick_suspects(measured: &[(usize, usize, f64)], n: usize, limit: f64) -> Vec<usize> {
    let mut suspects: Vec<usize> = Vec::new();
    loop {
        let score = |i: usize| {
            let mine: Vec<&(usize, usize, f64)> = measured
                .iter()
                .filter(|p| {
                    (p.0 == i || p.1 == i) && !suspects.contains(&p.0) && !suspects.contains(&p.1)
                })
                .collect();
            let slow = mine.iter().filter(|p| p.2 > limit).count();
            let worst = mine.iter().map(|p| p.2).fold(0.0, f64::max);
            (slow, mine.len(), worst)
        };
        let next = (0..n)
            .filter(|i| !suspects.contains(i))
            .map(|i| (i, score(i)))
            .filter(|&(_, (slow, all, _))| 2 * slow > all)
            .max_by(|a, b| {
                let r = |x: &(usize, (usize, usize, f64))| x.1 .0 as f64 / x.1 .1 as f64;
                r(a).total_cmp(&r(b)).then(a.1 .2.total_cmp(&b.1 .2))
            });
        match next {
            Some((i, _)) => suspects.push(i),
            None => return suspects,
        }
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn circle_rounds_meet_every_pair_once() {
        for n in 2..=9 {
            let rounds = circle_rounds(n);
            assert_eq!(rounds.len(), n + n % 2 - 1, "n={n}");
            let mut seen = std::collections::BTreeSet::new();
            for r in &rounds {
                let mut busy = std::collections::BTreeSet::new();
                for &(a, b) in r {
                    assert!(a < b && b < n);
                    assert!(busy.insert(a) && busy.insert(b), "a node twice in a round");
                    assert!(seen.insert((a, b)), "pair ({a},{b}) twice");
                }
            }
            assert_eq!(seen.len(), n * (n - 1) / 2, "n={n}");
        }
        assert!(circle_rounds(1).is_empty());
    }

    #[test]
    fn a_noisy_pair_next_to_a_bad_node_makes_no_second_suspect() {
        // Node 2 is slow with everyone; the pair (1, 3) was slow once by chance.
        let m = [
            (0, 3, 1.0),
            (1, 2, 30.0),
            (0, 2, 31.0),
            (1, 3, 6.0),
            (0, 1, 1.2),
            (2, 3, 29.0),
        ];
        assert_eq!(pick_suspects(&m, 4, 4.0), vec![2]);
        let healthy = [(0, 1, 1.0), (0, 2, 1.1), (1, 2, 5.0)];
        assert!(pick_suspects(&healthy, 3, 4.0).is_empty());
        // Two bad nodes of six.
        let mut m = Vec::new();
        for a in 0..6 {
            for b in a + 1..6 {
                let bad = [1, 4].contains(&a) || [1, 4].contains(&b);
                m.push((a, b, if bad { 20.0 } else { 1.0 }));
            }
        }
        let mut s = pick_suspects(&m, 6, 4.0);
        s.sort();
        assert_eq!(s, vec![1, 4]);
    }
}
