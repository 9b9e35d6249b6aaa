//! Input patterns whose reductions are exact in every type (small integers, powers that stay
//! representable), and the element-by-element check of a result against them.

use half::{bf16, f16};

use crate::backend::Call;
use crate::plan::{Collective, DType, RedOp};

/// An element type a backend moves, with the arithmetic its reductions use.
trait Elem: Copy + PartialEq {
    /// Relative rounding unit (0 for integers, which must match exactly).
    const EPS: f64;
    /// The largest integer up to which every integer is exact in the type.
    const EXACT_INT: u64;
    fn from_small(v: u64) -> Self;
    fn combine(self, other: Self, op: RedOp) -> Self;
    /// The mean from the sum over `n` ranks, as NCCL's avg computes it.
    fn div_n(self, n: u64) -> Self;
    fn to_f64(self) -> f64;
    #[cfg(test)]
    fn from_f64(v: f64) -> Self;
    /// Whether `self` is an acceptable result where `want` is exact: equal, except for float
    /// avg, which NCCL computes as a sum of premultiplied values (rounding once per step).
    fn accepts(self, want: Self, op: RedOp, n: u64) -> bool {
        if self == want {
            return true;
        }
        if Self::EPS == 0.0 || op != RedOp::Avg {
            return false;
        }
        let (g, w) = (self.to_f64(), want.to_f64());
        (g - w).abs() <= (n as f64 + 2.0) * Self::EPS * w.abs().max(1.0)
    }
}

macro_rules! int_elem {
    ($($t:ty),*) => {$(
        impl Elem for $t {
            const EPS: f64 = 0.0;
            const EXACT_INT: u64 = u64::MAX;
            fn from_small(v: u64) -> Self { v as $t }
            fn combine(self, o: Self, op: RedOp) -> Self {
                match op {
                    RedOp::Sum | RedOp::Avg => self.wrapping_add(o),
                    RedOp::Prod => self.wrapping_mul(o),
                    RedOp::Min => self.min(o),
                    RedOp::Max => self.max(o),
                }
            }
            fn div_n(self, n: u64) -> Self { (self as i128 / n.max(1) as i128) as $t }
            fn to_f64(self) -> f64 { self as f64 }
            #[cfg(test)]
            fn from_f64(v: f64) -> Self { v as $t }
        }
    )*};
}
int_elem!(i8, u8, i32, u32, i64, u64);

macro_rules! float_elem {
    ($($t:ty, $eps:expr, $exact:expr);*) => {$(
        impl Elem for $t {
            const EPS: f64 = $eps;
            const EXACT_INT: u64 = $exact;
            fn from_small(v: u64) -> Self { v as $t }
            fn combine(self, o: Self, op: RedOp) -> Self {
                match op {
                    RedOp::Sum | RedOp::Avg => self + o,
                    RedOp::Prod => self * o,
                    RedOp::Min => self.min(o),
                    RedOp::Max => self.max(o),
                }
            }
            fn div_n(self, n: u64) -> Self { self / n.max(1) as $t }
            fn to_f64(self) -> f64 { self as f64 }
            #[cfg(test)]
            fn from_f64(v: f64) -> Self { v as $t }
        }
    )*};
}
float_elem!(f32, f32::EPSILON as f64, 1 << 24; f64, f64::EPSILON, 1 << 53);

macro_rules! half_elem {
    ($($t:ty, $exact:expr);*) => {$(
        impl Elem for $t {
            const EPS: f64 = <$t>::EPSILON.to_f64_const();
            const EXACT_INT: u64 = $exact;
            fn from_small(v: u64) -> Self { <$t>::from_f64(v as f64) }
            fn combine(self, o: Self, op: RedOp) -> Self {
                let (a, b) = (self.to_f64(), o.to_f64());
                <$t>::from_f64(match op {
                    RedOp::Sum | RedOp::Avg => a + b,
                    RedOp::Prod => a * b,
                    RedOp::Min => a.min(b),
                    RedOp::Max => a.max(b),
                })
            }
            fn div_n(self, n: u64) -> Self { <$t>::from_f64(self.to_f64() / n.max(1) as f64) }
            fn to_f64(self) -> f64 { <$t>::to_f64(self) }
            #[cfg(test)]
            fn from_f64(v: f64) -> Self { <$t>::from_f64(v) }
        }
    )*};
}
half_elem!(f16, 1 << 11; bf16, 1 << 8);

/// The range of summands that keeps an n-rank sum exact in `T` (13 where the type allows).
fn sum_modulus<T: Elem>(n: u64) -> u64 {
    (T::EXACT_INT / (12 * n.max(1))).clamp(1, 13)
}

/// The value rank `rank` of `n` contributes at element `i` in check iteration `iter`.
fn reduce_input(op: RedOp, m: u64, rank: u64, n: u64, i: u64, iter: u64) -> u64 {
    let j = i + 7 * iter;
    match op {
        // Avg: the same sum, so sum / n is what NCCL's avg must produce.
        RedOp::Sum | RedOp::Avg => (j + 3 * rank) % m,
        // One rank per element contributes 1..3, the rest 1: the product stays tiny and exact.
        RedOp::Prod => {
            if rank == j % n {
                j % 3 + 1
            } else {
                1
            }
        }
        RedOp::Min | RedOp::Max => (5 * j + 11 * rank) % 17,
    }
}

/// What rank `src` puts in the block for rank `dst`, element `k`.
fn alltoall_input(src: u64, dst: u64, k: u64, iter: u64) -> u64 {
    (31 * src + 7 * dst + k + iter) % 101
}

fn fill_typed<T: Elem>(buf: &mut [T], call: &Call, rank: u64, n: u64, iter: u64) {
    match call.op {
        Collective::AllReduce => {
            let op = call.redop.unwrap_or(RedOp::Sum);
            let m = sum_modulus::<T>(n);
            for (i, x) in buf.iter_mut().enumerate() {
                *x = T::from_small(reduce_input(op, m, rank, n, i as u64, iter));
            }
        }
        Collective::AllToAll => {
            let c = call.count as usize;
            for (idx, x) in buf.iter_mut().enumerate().take(c * n as usize) {
                let (dst, k) = ((idx / c.max(1)) as u64, (idx % c.max(1)) as u64);
                *x = T::from_small(alltoall_input(rank, dst, k, iter));
            }
        }
    }
}

fn check_typed<T: Elem>(buf: &[T], call: &Call, rank: u64, n: u64, iter: u64) -> u64 {
    let mut wrong = 0;
    match call.op {
        Collective::AllReduce => {
            let op = call.redop.unwrap_or(RedOp::Sum);
            let m = sum_modulus::<T>(n);
            for (i, &got) in buf.iter().enumerate() {
                let i = i as u64;
                let mut want = T::from_small(reduce_input(op, m, 0, n, i, iter));
                for r in 1..n {
                    want = want.combine(T::from_small(reduce_input(op, m, r, n, i, iter)), op);
                }
                if op == RedOp::Avg {
                    want = want.div_n(n);
                }
                if !got.accepts(want, op, n) {
                    wrong += 1;
                }
            }
        }
        Collective::AllToAll => {
            let c = call.count as usize;
            for (idx, &got) in buf.iter().enumerate().take(c * n as usize) {
                let (src, k) = ((idx / c.max(1)) as u64, (idx % c.max(1)) as u64);
                if got != T::from_small(alltoall_input(src, rank, k, iter)) {
                    wrong += 1;
                }
            }
        }
    }
    wrong
}

macro_rules! dispatch {
    ($dtype:expr, $cast:ident, $bytes:expr, $f:ident, $($arg:expr),*) => {
        match $dtype {
            DType::Int8 => $f($cast::<i8>($bytes), $($arg),*),
            DType::Uint8 => $f($cast::<u8>($bytes), $($arg),*),
            DType::Int32 => $f($cast::<i32>($bytes), $($arg),*),
            DType::Uint32 => $f($cast::<u32>($bytes), $($arg),*),
            DType::Int64 => $f($cast::<i64>($bytes), $($arg),*),
            DType::Uint64 => $f($cast::<u64>($bytes), $($arg),*),
            DType::Float => $f($cast::<f32>($bytes), $($arg),*),
            DType::Double => $f($cast::<f64>($bytes), $($arg),*),
            DType::Half => $f($cast::<f16>($bytes), $($arg),*),
            DType::Bfloat16 => $f($cast::<bf16>($bytes), $($arg),*),
        }
    };
}

/// Views aligned bytes as elements (every bit pattern is valid for the types used here).
fn cast_mut<T: Copy>(bytes: &mut [u8]) -> &mut [T] {
    assert_eq!(
        bytes.as_ptr() as usize % std::mem::align_of::<T>(),
        0,
        "buffer alignment"
    );
    let n = bytes.len() / std::mem::size_of::<T>();
    // SAFETY: aligned (checked), in bounds, and any bit pattern is a valid T here.
    unsafe { std::slice::from_raw_parts_mut(bytes.as_mut_ptr() as *mut T, n) }
}

fn cast_ref<T: Copy>(bytes: &[u8]) -> &[T] {
    assert_eq!(
        bytes.as_ptr() as usize % std::mem::align_of::<T>(),
        0,
        "buffer alignment"
    );
    let n = bytes.len() / std::mem::size_of::<T>();
    // SAFETY: as above, read-only.
    unsafe { std::slice::from_raw_parts(bytes.as_ptr() as *const T, n) }
}

/// Writes this rank's input for check iteration `iter` into `bytes`.
pub fn fill(bytes: &mut [u8], call: &Call, rank: usize, nranks: usize, iter: u32) {
    dispatch!(
        call.dtype,
        cast_mut,
        bytes,
        fill_typed,
        call,
        rank as u64,
        nranks as u64,
        iter as u64
    )
}

/// For all-to-all, the rank whose block holds this rank's first wrong element: the sender whose
/// data went bad (a reduction mixes every rank's input, so it has no such answer).
pub fn first_wrong_source(
    bytes: &[u8],
    call: &Call,
    rank: usize,
    nranks: usize,
    iter: u32,
) -> Option<usize> {
    if call.op != Collective::AllToAll {
        return None;
    }
    dispatch!(
        call.dtype,
        cast_ref,
        bytes,
        first_wrong_typed,
        call,
        rank as u64,
        nranks as u64,
        iter as u64
    )
}

fn first_wrong_typed<T: Elem>(
    buf: &[T],
    call: &Call,
    rank: u64,
    n: u64,
    iter: u64,
) -> Option<usize> {
    let c = call.count as usize;
    buf.iter()
        .enumerate()
        .take(c * n as usize)
        .find(|(idx, &got)| {
            let (src, k) = ((idx / c.max(1)) as u64, (idx % c.max(1)) as u64);
            got != T::from_small(alltoall_input(src, rank, k, iter))
        })
        .map(|(idx, _)| idx / c.max(1))
}

/// Counts elements of this rank's result that differ from the exact expected value.
pub fn count_wrong(bytes: &[u8], call: &Call, rank: usize, nranks: usize, iter: u32) -> u64 {
    dispatch!(
        call.dtype,
        cast_ref,
        bytes,
        check_typed,
        call,
        rank as u64,
        nranks as u64,
        iter as u64
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Placement;

    #[test]
    fn all_to_all_names_the_sender_of_a_bad_block() {
        let c = call(Collective::AllToAll, DType::Int32, None, 4, 3);
        let n = 3;
        let mut out = vec![0i32; 12];
        // What rank 1 receives: block s from rank s.
        for s in 0..n {
            for k in 0..4 {
                out[s * 4 + k] = alltoall_input(s as u64, 1, k as u64, 0) as i32;
            }
        }
        let bytes = |v: &Vec<i32>| v.iter().flat_map(|x| x.to_ne_bytes()).collect::<Vec<u8>>();
        assert_eq!(first_wrong_source(&bytes(&out), &c, 1, n, 0), None);
        out[2 * 4 + 1] ^= 0x5a;
        assert_eq!(first_wrong_source(&bytes(&out), &c, 1, n, 0), Some(2));
        assert_eq!(count_wrong(&bytes(&out), &c, 1, n, 0), 1);
    }

    fn call(op: Collective, dtype: DType, redop: Option<RedOp>, count: u64, n: u64) -> Call {
        Call {
            op,
            dtype,
            redop,
            count,
            buffer_elems: if op == Collective::AllToAll {
                count * n
            } else {
                count
            },
            placement: Placement::OutOfPlace,
        }
    }

    /// Simulates the collective on host buffers to check that fill and check agree.
    fn simulate(c: &Call, n: usize) -> Vec<u64> {
        let bytes = (c.buffer_elems * c.dtype.size()) as usize;
        let mk = || vec![0u64; bytes.div_ceil(8)];
        let inputs: Vec<Vec<u64>> = (0..n)
            .map(|r| {
                let mut b = mk();
                fill(&mut as_bytes_mut(&mut b)[..bytes], c, r, n, 2);
                b
            })
            .collect();
        (0..n)
            .map(|r| {
                let mut out = mk();
                let esz = c.dtype.size() as usize;
                match c.op {
                    Collective::AllReduce => {
                        // Reduce by re-running the typed fold through check's arithmetic: copy
                        // rank 0 then combine bytes through fill of the expected values.
                        let o = &mut as_bytes_mut(&mut out)[..bytes];
                        o.copy_from_slice(&as_bytes(&inputs[0])[..bytes]);
                        reduce_into(o, &inputs[1..], c, bytes, n as u64);
                    }
                    Collective::AllToAll => {
                        let blk = c.count as usize * esz;
                        for (src, input) in inputs.iter().enumerate() {
                            let from = &as_bytes(input)[r * blk..(r + 1) * blk];
                            as_bytes_mut(&mut out)[src * blk..(src + 1) * blk]
                                .copy_from_slice(from);
                        }
                    }
                }
                count_wrong(&as_bytes(&out)[..bytes], c, r, n, 2)
            })
            .collect()
    }

    /// Reduces as NCCL does: in the element type, and float avg as a sum of values each
    /// premultiplied by 1/n (integer avg: the sum divided by n).
    fn reduce_into(acc: &mut [u8], rest: &[Vec<u64>], c: &Call, bytes: usize, n: u64) {
        fn go<T: Elem>(acc: &mut [T], others: &[&[T]], op: RedOp, n: u64) {
            let inv = T::from_f64(1.0 / n as f64).to_f64();
            let pre = |x: T| T::from_f64(x.to_f64() * inv);
            for (i, a) in acc.iter_mut().enumerate() {
                if op == RedOp::Avg && T::EPS > 0.0 {
                    let mut s = pre(*a);
                    for o in others {
                        s = s.combine(pre(o[i]), RedOp::Sum);
                    }
                    *a = s;
                } else {
                    for o in others {
                        *a = a.combine(o[i], op);
                    }
                    if op == RedOp::Avg {
                        *a = a.div_n(n);
                    }
                }
            }
        }
        let others: Vec<&[u8]> = rest.iter().map(|o| &as_bytes(o)[..bytes]).collect();
        let op = c.redop.unwrap();
        macro_rules! run {
            ($t:ty) => {{
                let o: Vec<&[$t]> = others.iter().map(|b| cast_ref::<$t>(b)).collect();
                go::<$t>(cast_mut(acc), &o, op, n)
            }};
        }
        match c.dtype {
            DType::Int8 => run!(i8),
            DType::Uint8 => run!(u8),
            DType::Int32 => run!(i32),
            DType::Uint32 => run!(u32),
            DType::Int64 => run!(i64),
            DType::Uint64 => run!(u64),
            DType::Float => run!(f32),
            DType::Double => run!(f64),
            DType::Half => run!(f16),
            DType::Bfloat16 => run!(bf16),
        }
    }

    fn as_bytes_mut(w: &mut [u64]) -> &mut [u8] {
        unsafe { std::slice::from_raw_parts_mut(w.as_mut_ptr() as *mut u8, w.len() * 8) }
    }
    fn as_bytes(w: &[u64]) -> &[u8] {
        unsafe { std::slice::from_raw_parts(w.as_ptr() as *const u8, w.len() * 8) }
    }

    #[test]
    fn exact_collectives_pass_the_check() {
        for n in [1usize, 2, 3, 8, 33] {
            for d in DType::ALL {
                for r in RedOp::ALL {
                    let c = call(Collective::AllReduce, d, Some(r), 1000, n as u64);
                    assert!(simulate(&c, n).iter().all(|&w| w == 0), "{n} {d:?} {r:?}");
                }
                let c = call(Collective::AllToAll, d, None, 37, n as u64);
                assert!(simulate(&c, n).iter().all(|&w| w == 0), "{n} {d:?} a2a");
            }
        }
    }

    #[test]
    fn sixteen_bit_sums_stay_in_their_exact_range() {
        // bf16 is exact to 256: 4 ranks x 12 fits, 64 ranks need smaller summands.
        assert_eq!(sum_modulus::<bf16>(4), 5);
        assert_eq!(sum_modulus::<f16>(4), 13);
        assert_eq!(sum_modulus::<bf16>(64), 1);
        assert_eq!(sum_modulus::<f32>(1024), 13);
        assert_eq!(sum_modulus::<i8>(4), 13);
    }

    #[test]
    fn float_avg_tolerance_still_catches_wrong_values() {
        let c = call(Collective::AllReduce, DType::Half, Some(RedOp::Avg), 64, 3);
        let n = 3;
        let mut good = vec![0u64; 16];
        {
            let want: &mut [f16] = cast_mut(&mut as_bytes_mut(&mut good)[..128]);
            for (i, w) in want.iter_mut().enumerate() {
                let sum: u64 = (0..n)
                    .map(|r| reduce_input(RedOp::Avg, sum_modulus::<f16>(n), r, n, i as u64, 0))
                    .sum();
                *w = f16::from_f64(sum as f64 / n as f64);
            }
        }
        assert_eq!(count_wrong(&as_bytes(&good)[..128], &c, 0, 3, 0), 0);
        let bad: &mut [f16] = cast_mut(&mut as_bytes_mut(&mut good)[..128]);
        bad[5] = f16::from_f64(bad[5].to_f64() + 0.5);
        assert_eq!(count_wrong(&as_bytes(&good)[..128], &c, 0, 3, 0), 1);
    }

    #[test]
    fn one_corrupt_element_is_counted() {
        let c = call(Collective::AllReduce, DType::Float, Some(RedOp::Sum), 64, 1);
        let mut buf = vec![0u64; 32];
        fill(&mut as_bytes_mut(&mut buf)[..256], &c, 0, 1, 0);
        assert_eq!(count_wrong(&as_bytes(&buf)[..256], &c, 0, 1, 0), 0);
        as_bytes_mut(&mut buf)[9] ^= 0x40;
        assert_eq!(count_wrong(&as_bytes(&buf)[..256], &c, 0, 1, 0), 1);
        // A stale result from another check iteration is caught too.
        assert!(count_wrong(&as_bytes(&buf)[..256], &c, 0, 1, 1) > 0);
    }

    #[test]
    fn misrouted_all_to_all_blocks_are_caught() {
        let c = call(Collective::AllToAll, DType::Int32, None, 4, 2);
        let mut buf = vec![0u64; 4];
        // Rank 0's own input is not what rank 0 should receive from rank 1.
        fill(&mut as_bytes_mut(&mut buf)[..32], &c, 0, 2, 0);
        assert!(count_wrong(&as_bytes(&buf)[..32], &c, 0, 2, 0) > 0);
    }
}
