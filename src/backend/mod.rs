//! One collective call on one communicator, behind one trait: buffers, the call, timing marks and
//! the wait. `mpi` runs on host memory, `nccl` on GPU memory. Knows nothing of sweeps or faults.

pub mod mpi;
pub mod nccl;

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
    Group(#[from] crate::bootstrap::group::GroupError),
    #[error("{0}")]
    Unsupported(String),
    /// A GPU-side failure (NCCL or CUDA), already saying which call, size and iteration.
    #[error("{0}")]
    Device(String),
}

/// The part of a measurement the backend is in, for its own error messages and progress marks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Check,
    Warmup,
    /// The batched loop.
    Timed,
    /// The marked loop, when the backend asks for one apart from the batched loop.
    Marked,
}

impl Phase {
    pub fn label(self) -> &'static str {
        match self {
            Phase::Check => "correctness check",
            Phase::Warmup => "warmup",
            Phase::Timed => "timed loop",
            Phase::Marked => "per-iteration loop",
        }
    }
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
    fn write_input(&mut self, fill: &mut dyn FnMut(&mut [u8])) -> Result<(), BackendError>;
    /// Lets `check` read the bytes the prepared call wrote.
    fn read_output(&mut self, check: &mut dyn FnMut(&[u8])) -> Result<(), BackendError>;
    fn barrier(&mut self) -> Result<(), BackendError>;
    /// The runner enters `phase` of the prepared call (launches are counted per phase).
    fn begin_phase(&mut self, _phase: Phase) {}
    /// Whether the result of `call` is defined, so the check applies (nccl-tests does not check
    /// in-place all-to-all on NCCL, whose sends and receives overlap).
    fn checks(&self, _call: &Call) -> bool {
        true
    }
    /// Whether marks cost enough to distort the batched time, so the runner times the batched
    /// loop unmarked and takes per-iteration samples from a second, marked loop.
    fn separate_marked_loop(&self) -> bool {
        false
    }
    /// Whether each call needs its own start mark (something happens between calls that must stay
    /// outside the samples); otherwise one call's end mark is the next one's start.
    fn marks_each_start(&self) -> bool {
        false
    }
}
