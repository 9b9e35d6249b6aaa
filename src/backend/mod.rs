//! One collective call on one communicator, behind one trait: buffers, the call, timing marks and
//! the wait. `mpi` runs on host memory. Knows nothing of sweeps or faults.

pub mod mpi;

use crate::ffi::mpi::MpiError;
use crate::plan::{Collective, DType, Placement, RedOp};

/// Monotonic host nanoseconds (vDSO clock_gettime, ~20 ns): the batched-time clock for every
/// backend, and MPI's per-call marks.
#[inline(always)]
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid out-pointer.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The call a timed loop repeats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Call {
    pub op: Collective,
    pub dtype: DType,
    pub redop: Option<RedOp>,
    /// nccl-tests' count: elements per rank (all-reduce) or per peer (all-to-all).
    pub count: u64,
    /// Elements in each of the send and receive buffers.
    pub buffer_elems: u64,
    pub placement: Placement,
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("{0}")]
    Mpi(#[from] MpiError),
    #[error("{0}")]
    Unsupported(String),
}

/// A collective library bound to one communicator.
pub trait Backend {
    fn name(&self) -> &'static str;
    fn library_version(&self) -> String;
    /// Resolves handles and pointers for `call`, so `launch` does nothing else.
    fn prepare(&mut self, call: &Call) -> Result<(), BackendError>;
    /// Starts (MPI: performs) the prepared call once.
    fn launch(&mut self) -> Result<(), BackendError>;
    /// Records a timing point in `slot` (0..2*max_iterations); no allocation.
    fn mark(&mut self, slot: usize);
    /// Waits for every launched call to finish.
    fn synchronize(&mut self) -> Result<(), BackendError>;
    /// Nanoseconds between two marks, valid after `synchronize`.
    fn elapsed_ns(&self, from: usize, to: usize) -> u64;
    /// Lets `fill` write the bytes the prepared call reads (send buffer, or receive when in place).
    fn write_input(&mut self, fill: &mut dyn FnMut(&mut [u8]));
    /// Lets `check` read the bytes the prepared call wrote.
    fn read_output(&mut self, check: &mut dyn FnMut(&[u8]));
    fn barrier(&mut self) -> Result<(), BackendError>;
}
