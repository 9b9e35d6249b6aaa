//! Input patterns whose reductions are exact in every type (small integers, powers that stay
//! representable), and the element-by-element check of a result against them.

use crate::backend::Call;
use crate::plan::{Collective, DType, RedOp};

/// An element type the MPI backend moves, with the arithmetic its reductions use.
trait Elem: Copy + PartialEq {
    fn from_small(v: u64) -> Self;
    fn combine(self, other: Self, op: RedOp) -> Self;
}

macro_rules! int_elem {
    ($($t:ty),*) => {$(
        impl Elem for $t {
            fn from_small(v: u64) -> Self { v as $t }
            fn combine(self, o: Self, op: RedOp) -> Self {
                match op {
                    RedOp::Sum | RedOp::Avg => self.wrapping_add(o),
                    RedOp::Prod => self.wrapping_mul(o),
                    RedOp::Min => self.min(o),
                    RedOp::Max => self.max(o),
                }
            }
        }
    )*};
}
int_elem!(i8, u8, i32, u32, i64, u64);

macro_rules! float_elem {
    ($($t:ty),*) => {$(
        impl Elem for $t {
            fn from_small(v: u64) -> Self { v as $t }
            fn combine(self, o: Self, op: RedOp) -> Self {
                match op {
                    RedOp::Sum | RedOp::Avg => self + o,
                    RedOp::Prod => self * o,
                    RedOp::Min => self.min(o),
                    RedOp::Max => self.max(o),
                }
            }
        }
    )*};
}
float_elem!(f32, f64);

/// The value rank `rank` of `n` contributes at element `i` in check iteration `iter`.
fn reduce_input(op: RedOp, rank: u64, n: u64, i: u64, iter: u64) -> u64 {
    let j = i + 7 * iter;
    match op {
        RedOp::Sum | RedOp::Avg => (j + 3 * rank) % 13,
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
            for (i, x) in buf.iter_mut().enumerate() {
                *x = T::from_small(reduce_input(op, rank, n, i as u64, iter));
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
            for (i, &got) in buf.iter().enumerate() {
                let i = i as u64;
                let mut want = T::from_small(reduce_input(op, 0, n, i, iter));
                for r in 1..n {
                    want = want.combine(T::from_small(reduce_input(op, r, n, i, iter)), op);
                }
                if got != want {
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
            DType::Half | DType::Bfloat16 => unreachable!("plan refuses 16-bit floats on MPI"),
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
                        reduce_into(o, &inputs[1..], c, bytes);
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

    fn reduce_into(acc: &mut [u8], rest: &[Vec<u64>], c: &Call, bytes: usize) {
        fn go<T: Elem>(acc: &mut [T], other: &[T], op: RedOp) {
            for (a, b) in acc.iter_mut().zip(other) {
                *a = a.combine(*b, op);
            }
        }
        for other in rest {
            let o = &as_bytes(other)[..bytes];
            let op = c.redop.unwrap();
            match c.dtype {
                DType::Int8 => go::<i8>(cast_mut(acc), cast_ref(o), op),
                DType::Uint8 => go::<u8>(cast_mut(acc), cast_ref(o), op),
                DType::Int32 => go::<i32>(cast_mut(acc), cast_ref(o), op),
                DType::Uint32 => go::<u32>(cast_mut(acc), cast_ref(o), op),
                DType::Int64 => go::<i64>(cast_mut(acc), cast_ref(o), op),
                DType::Uint64 => go::<u64>(cast_mut(acc), cast_ref(o), op),
                DType::Float => go::<f32>(cast_mut(acc), cast_ref(o), op),
                DType::Double => go::<f64>(cast_mut(acc), cast_ref(o), op),
                _ => unreachable!(),
            }
        }
    }

    fn as_bytes_mut(w: &mut [u64]) -> &mut [u8] {
        unsafe { std::slice::from_raw_parts_mut(w.as_mut_ptr() as *mut u8, w.len() * 8) }
    }
    fn as_bytes(w: &[u64]) -> &[u8] {
        unsafe { std::slice::from_raw_parts(w.as_ptr() as *const u8, w.len() * 8) }
    }

    const MPI_TYPES: [DType; 8] = [
        DType::Int8,
        DType::Uint8,
        DType::Int32,
        DType::Uint32,
        DType::Int64,
        DType::Uint64,
        DType::Float,
        DType::Double,
    ];

    #[test]
    fn exact_collectives_pass_the_check() {
        for n in [1usize, 2, 3, 8, 33] {
            for d in MPI_TYPES {
                for r in [RedOp::Sum, RedOp::Prod, RedOp::Min, RedOp::Max] {
                    let c = call(Collective::AllReduce, d, Some(r), 1000, n as u64);
                    assert!(simulate(&c, n).iter().all(|&w| w == 0), "{n} {d:?} {r:?}");
                }
                let c = call(Collective::AllToAll, d, None, 37, n as u64);
                assert!(simulate(&c, n).iter().all(|&w| w == 0), "{n} {d:?} a2a");
            }
        }
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
