//! The MPI backend: MPI_Allreduce / MPI_Alltoall on host buffers of the world communicator,
//! timed with the monotonic clock around each blocking call.

use std::ffi::c_void;
use std::os::raw::c_int;

use super::{now_ns, Backend, BackendError, Call};
use crate::ffi::mpi::{self as mpic, MPI_Comm, MPI_Datatype, MPI_Op};
use crate::plan::{Collective, DType, RedOp};

struct Prepared {
    op: Collective,
    send: *const c_void,
    recv: *mut c_void,
    count: c_int,
    dtype: MPI_Datatype,
    redop: MPI_Op,
    input_bytes: usize,
    in_place: bool,
}

pub struct MpiBackend {
    comm: MPI_Comm,
    send: Vec<u64>,
    recv: Vec<u64>,
    marks: Vec<u64>,
    prepared: Option<Prepared>,
}

fn mpi_dtype(d: DType) -> Result<MPI_Datatype, BackendError> {
    // SAFETY: reading MPI's predefined handle constants.
    unsafe {
        Ok(match d {
            DType::Int8 => mpi::ffi::RSMPI_INT8_T,
            DType::Uint8 => mpi::ffi::RSMPI_UINT8_T,
            DType::Int32 => mpi::ffi::RSMPI_INT32_T,
            DType::Uint32 => mpi::ffi::RSMPI_UINT32_T,
            DType::Int64 => mpi::ffi::RSMPI_INT64_T,
            DType::Uint64 => mpi::ffi::RSMPI_UINT64_T,
            DType::Float => mpi::ffi::RSMPI_FLOAT,
            DType::Double => mpi::ffi::RSMPI_DOUBLE,
            DType::Half | DType::Bfloat16 => {
                return Err(BackendError::Unsupported(format!(
                    "MPI has no {} type",
                    d.name()
                )))
            }
        })
    }
}

fn mpi_op(r: RedOp) -> Result<MPI_Op, BackendError> {
    // SAFETY: reading MPI's predefined handle constants.
    unsafe {
        Ok(match r {
            RedOp::Sum => mpi::ffi::RSMPI_SUM,
            RedOp::Prod => mpi::ffi::RSMPI_PROD,
            RedOp::Min => mpi::ffi::RSMPI_MIN,
            RedOp::Max => mpi::ffi::RSMPI_MAX,
            RedOp::Avg => {
                return Err(BackendError::Unsupported(
                    "MPI has no built-in avg reduction".into(),
                ))
            }
        })
    }
}

impl MpiBackend {
    /// Allocates send and receive buffers of `max_bytes` and room for `max_iterations` marks.
    pub fn new(comm: MPI_Comm, max_bytes: u64, max_iterations: u32) -> MpiBackend {
        let words = (max_bytes as usize).div_ceil(8).max(1);
        MpiBackend {
            comm,
            send: vec![0u64; words],
            recv: vec![0u64; words],
            marks: vec![0u64; 2 * max_iterations.max(1) as usize],
            prepared: None,
        }
    }
}

impl Backend for MpiBackend {
    fn name(&self) -> &'static str {
        "mpi"
    }

    fn library_version(&self) -> String {
        mpic::library_version()
    }

    fn prepare(&mut self, call: &Call) -> Result<(), BackendError> {
        let bytes = call.buffer_elems * call.dtype.size();
        if bytes as usize > self.send.len() * 8 {
            return Err(BackendError::Unsupported(format!(
                "{bytes} bytes exceed the {} allocated",
                self.send.len() * 8
            )));
        }
        let count = c_int::try_from(call.count).map_err(|_| {
            BackendError::Unsupported(format!("{} elements exceed MPI's 32-bit count", call.count))
        })?;
        let in_place = call.placement.is_in_place();
        let send = if in_place {
            mpic::in_place() as *const c_void
        } else {
            self.send.as_ptr() as *const c_void
        };
        let redop = match call.redop {
            Some(r) => mpi_op(r)?,
            None => mpi_op(RedOp::Sum)?,
        };
        self.prepared = Some(Prepared {
            op: call.op,
            send,
            recv: self.recv.as_mut_ptr() as *mut c_void,
            count,
            dtype: mpi_dtype(call.dtype)?,
            redop,
            input_bytes: bytes as usize,
            in_place,
        });
        Ok(())
    }

    #[inline]
    fn launch(&mut self) -> Result<(), BackendError> {
        let p = self
            .prepared
            .as_ref()
            .ok_or_else(|| BackendError::Unsupported("launch before prepare".into()))?;
        // SAFETY: prepare checked that both buffers hold the call's elements.
        unsafe {
            match p.op {
                Collective::AllReduce => {
                    mpic::allreduce(p.send, p.recv, p.count, p.dtype, p.redop, self.comm)?
                }
                Collective::AllToAll => {
                    mpic::alltoall(p.send, p.recv, p.count, p.dtype, self.comm)?
                }
            }
        }
        Ok(())
    }

    #[inline(always)]
    fn mark(&mut self, slot: usize) {
        if let Some(m) = self.marks.get_mut(slot) {
            *m = now_ns();
        }
    }

    fn synchronize(&mut self) -> Result<(), BackendError> {
        Ok(())
    }

    fn elapsed_ns(&self, from: usize, to: usize) -> u64 {
        match (self.marks.get(from), self.marks.get(to)) {
            (Some(a), Some(b)) => b.saturating_sub(*a),
            _ => 0,
        }
    }

    fn write_input(&mut self, fill: &mut dyn FnMut(&mut [u8])) -> Result<(), BackendError> {
        let Some(p) = &self.prepared else {
            return Ok(());
        };
        let (n, in_place) = (p.input_bytes, p.in_place);
        let buf = if in_place {
            &mut self.recv
        } else {
            &mut self.send
        };
        fill(&mut bytemuck_bytes_mut(buf)[..n]);
        Ok(())
    }

    fn read_output(&mut self, check: &mut dyn FnMut(&[u8])) -> Result<(), BackendError> {
        let Some(p) = &self.prepared else {
            return Ok(());
        };
        let n = p.input_bytes;
        check(&bytemuck_bytes(&self.recv)[..n]);
        Ok(())
    }

    fn barrier(&mut self) -> Result<(), BackendError> {
        Ok(mpic::barrier(self.comm)?)
    }
}

fn bytemuck_bytes_mut(words: &mut [u64]) -> &mut [u8] {
    // SAFETY: u64 has no padding and any byte pattern is a valid u8.
    unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr() as *mut u8, words.len() * 8) }
}

fn bytemuck_bytes(words: &[u64]) -> &[u8] {
    // SAFETY: as above, read-only.
    unsafe { std::slice::from_raw_parts(words.as_ptr() as *const u8, words.len() * 8) }
}
