//! Checked MPI calls on raw handles (mpi-sys underneath, rsmpi for init): one `Result` per C call.
//! The timed loop calls these directly so no bookkeeping lands inside a timed region.

use std::ffi::c_void;
use std::fmt;
use std::os::raw::{c_char, c_int};

pub use mpi::ffi::{MPI_Comm, MPI_Datatype, MPI_Op};

extern "C" {
    fn collbench_mpi_in_place() -> *mut c_void;
}

/// MPI_IN_PLACE, whose value differs between MPI libraries.
pub fn in_place() -> *mut c_void {
    // SAFETY: the shim returns a constant address and touches nothing.
    unsafe { collbench_mpi_in_place() }
}

/// A failed MPI call: which call, the error class and MPI's own message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MpiError {
    pub call: &'static str,
    pub code: i32,
    pub class: i32,
    pub message: String,
}

impl fmt::Display for MpiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} failed: {} (MPI error class {}, code {})",
            self.call, self.message, self.class, self.code
        )
    }
}

impl std::error::Error for MpiError {}

fn check(call: &'static str, code: c_int) -> Result<(), MpiError> {
    if code == mpi::ffi::MPI_SUCCESS as c_int {
        return Ok(());
    }
    let mut class: c_int = code;
    let mut buf = [0 as c_char; mpi::ffi::MPI_MAX_ERROR_STRING as usize + 1];
    let mut len: c_int = 0;
    // SAFETY: out-pointers are valid for the sizes MPI documents.
    let message = unsafe {
        mpi::ffi::MPI_Error_class(code, &mut class);
        if mpi::ffi::MPI_Error_string(code, buf.as_mut_ptr(), &mut len) == 0 {
            let bytes: Vec<u8> = buf[..len.max(0) as usize]
                .iter()
                .map(|&c| c as u8)
                .collect();
            String::from_utf8_lossy(&bytes).into_owned()
        } else {
            "unknown MPI error".to_string()
        }
    };
    Err(MpiError {
        call,
        code,
        class,
        message,
    })
}

/// Makes errors on `comm` return codes instead of aborting the job.
pub fn set_errors_return(comm: MPI_Comm) -> Result<(), MpiError> {
    // SAFETY: comm is a live communicator; the handler is MPI's predefined one.
    check("MPI_Comm_set_errhandler", unsafe {
        mpi::ffi::MPI_Comm_set_errhandler(comm, mpi::ffi::RSMPI_ERRORS_RETURN)
    })
}

pub fn barrier(comm: MPI_Comm) -> Result<(), MpiError> {
    // SAFETY: comm is a live communicator.
    check("MPI_Barrier", unsafe { mpi::ffi::MPI_Barrier(comm) })
}

/// # Safety
/// `send` (unless MPI_IN_PLACE) and `recv` must hold `count` elements of `dtype`.
pub unsafe fn allreduce(
    send: *const c_void,
    recv: *mut c_void,
    count: c_int,
    dtype: MPI_Datatype,
    op: MPI_Op,
    comm: MPI_Comm,
) -> Result<(), MpiError> {
    check(
        "MPI_Allreduce",
        mpi::ffi::MPI_Allreduce(send, recv, count, dtype, op, comm),
    )
}

/// # Safety
/// `send` (unless MPI_IN_PLACE) and `recv` must hold `count * world` elements of `dtype`.
pub unsafe fn alltoall(
    send: *const c_void,
    recv: *mut c_void,
    count: c_int,
    dtype: MPI_Datatype,
    comm: MPI_Comm,
) -> Result<(), MpiError> {
    check(
        "MPI_Alltoall",
        mpi::ffi::MPI_Alltoall(send, count, dtype, recv, count, dtype, comm),
    )
}

pub fn comm_rank(comm: MPI_Comm) -> Result<usize, MpiError> {
    let mut r: c_int = 0;
    // SAFETY: out-pointer valid.
    check("MPI_Comm_rank", unsafe {
        mpi::ffi::MPI_Comm_rank(comm, &mut r)
    })?;
    Ok(r as usize)
}

pub fn comm_size(comm: MPI_Comm) -> Result<usize, MpiError> {
    let mut s: c_int = 0;
    // SAFETY: out-pointer valid.
    check("MPI_Comm_size", unsafe {
        mpi::ffi::MPI_Comm_size(comm, &mut s)
    })?;
    Ok(s as usize)
}

/// Gathers every rank's bytes to `root`; returns them in rank order there, None elsewhere.
pub fn gather_bytes(
    comm: MPI_Comm,
    root: usize,
    data: &[u8],
) -> Result<Option<Vec<Vec<u8>>>, MpiError> {
    let rank = comm_rank(comm)?;
    let size = comm_size(comm)?;
    let len: c_int = c_int::try_from(data.len()).map_err(|_| MpiError {
        call: "MPI_Gather",
        code: -1,
        class: -1,
        message: format!("{} bytes do not fit one MPI count", data.len()),
    })?;
    // SAFETY: predefined datatype handles.
    let (byte, int) = unsafe { (mpi::ffi::RSMPI_UINT8_T, mpi::ffi::RSMPI_INT32_T) };
    let mut lens = vec![0 as c_int; if rank == root { size } else { 0 }];
    // SAFETY: lens holds `size` ints at root; the send is one int.
    check("MPI_Gather", unsafe {
        mpi::ffi::MPI_Gather(
            &len as *const c_int as *const c_void,
            1,
            int,
            lens.as_mut_ptr() as *mut c_void,
            1,
            int,
            root as c_int,
            comm,
        )
    })?;
    let mut displs = Vec::with_capacity(lens.len());
    let mut total: usize = 0;
    for &l in &lens {
        displs.push(total as c_int);
        total += l as usize;
    }
    let mut buf = vec![0u8; total];
    // SAFETY: buf holds sum(lens) bytes at root, laid out by displs.
    check("MPI_Gatherv", unsafe {
        mpi::ffi::MPI_Gatherv(
            data.as_ptr() as *const c_void,
            len,
            byte,
            buf.as_mut_ptr() as *mut c_void,
            lens.as_ptr(),
            displs.as_ptr(),
            byte,
            root as c_int,
            comm,
        )
    })?;
    if rank != root {
        return Ok(None);
    }
    Ok(Some(
        lens.iter()
            .zip(&displs)
            .map(|(&l, &d)| buf[d as usize..d as usize + l as usize].to_vec())
            .collect(),
    ))
}

/// Element-wise reduction of u64s to `root` (None elsewhere).
pub fn reduce_u64(
    comm: MPI_Comm,
    root: usize,
    data: &[u64],
    op: MPI_Op,
) -> Result<Option<Vec<u64>>, MpiError> {
    let rank = comm_rank(comm)?;
    let mut out = vec![0u64; if rank == root { data.len() } else { 0 }];
    let count = c_int::try_from(data.len()).map_err(|_| MpiError {
        call: "MPI_Reduce",
        code: -1,
        class: -1,
        message: format!("{} values do not fit one MPI count", data.len()),
    })?;
    // SAFETY: both buffers hold `count` u64 at root; non-roots pass an unused receive pointer.
    check("MPI_Reduce", unsafe {
        mpi::ffi::MPI_Reduce(
            data.as_ptr() as *const c_void,
            out.as_mut_ptr() as *mut c_void,
            count,
            mpi::ffi::RSMPI_UINT64_T,
            op,
            root as c_int,
            comm,
        )
    })?;
    Ok((rank == root).then_some(out))
}

/// Sum of one u64 over all ranks, known to every rank.
pub fn allreduce_sum_u64(comm: MPI_Comm, value: u64) -> Result<u64, MpiError> {
    let mut out = 0u64;
    // SAFETY: one u64 each way.
    unsafe {
        allreduce(
            &value as *const u64 as *const c_void,
            &mut out as *mut u64 as *mut c_void,
            1,
            mpi::ffi::RSMPI_UINT64_T,
            mpi::ffi::RSMPI_SUM,
            comm,
        )?;
    }
    Ok(out)
}

/// The MPI library's own version string (MPI_Get_library_version).
pub fn library_version() -> String {
    mpi::environment::library_version()
        .map(|s| s.trim_end_matches(['\0', '\n']).trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// Sends `data` from `root` to every rank; elsewhere `data` is replaced by root's bytes.
pub fn bcast_bytes(comm: MPI_Comm, root: usize, data: &mut Vec<u8>) -> Result<(), MpiError> {
    let mut len = data.len() as u64;
    // SAFETY: one u64, then a buffer resized to the broadcast length.
    unsafe {
        check(
            "MPI_Bcast",
            mpi::ffi::MPI_Bcast(
                &mut len as *mut u64 as *mut c_void,
                1,
                mpi::ffi::RSMPI_UINT64_T,
                root as c_int,
                comm,
            ),
        )?;
        let n = c_int::try_from(len).map_err(|_| MpiError {
            call: "MPI_Bcast",
            code: -1,
            class: -1,
            message: format!("{len} bytes do not fit one MPI count"),
        })?;
        data.resize(len as usize, 0);
        check(
            "MPI_Bcast",
            mpi::ffi::MPI_Bcast(
                data.as_mut_ptr() as *mut c_void,
                n,
                mpi::ffi::RSMPI_UINT8_T,
                root as c_int,
                comm,
            ),
        )
    }
}

/// MPI_Comm_split: ranks with the same `color` get one new communicator, ordered by `key`;
/// `None` (MPI_UNDEFINED) takes part in the split and gets no communicator.
pub fn comm_split(
    comm: MPI_Comm,
    color: Option<u32>,
    key: usize,
) -> Result<Option<MPI_Comm>, MpiError> {
    // SAFETY: reading MPI's predefined constants; the out-pointer is valid.
    unsafe {
        let c = color.map_or(mpi::ffi::RSMPI_UNDEFINED, |c| c as c_int);
        let mut out = mpi::ffi::RSMPI_COMM_NULL;
        check(
            "MPI_Comm_split",
            mpi::ffi::MPI_Comm_split(comm, c, key as c_int, &mut out),
        )?;
        Ok((out != mpi::ffi::RSMPI_COMM_NULL).then_some(out))
    }
}

/// Frees a communicator made by `comm_split`.
pub fn comm_free(mut comm: MPI_Comm) -> Result<(), MpiError> {
    // SAFETY: comm came from MPI_Comm_split and is freed once.
    check("MPI_Comm_free", unsafe {
        mpi::ffi::MPI_Comm_free(&mut comm)
    })
}

/// Element-wise reduction of u64s, known to every rank.
pub fn allreduce_u64s(comm: MPI_Comm, data: &[u64], op: MPI_Op) -> Result<Vec<u64>, MpiError> {
    let mut out = vec![0u64; data.len()];
    let count = c_int::try_from(data.len()).map_err(|_| MpiError {
        call: "MPI_Allreduce",
        code: -1,
        class: -1,
        message: format!("{} values do not fit one MPI count", data.len()),
    })?;
    // SAFETY: both buffers hold `count` u64.
    unsafe {
        allreduce(
            data.as_ptr() as *const c_void,
            out.as_mut_ptr() as *mut c_void,
            count,
            mpi::ffi::RSMPI_UINT64_T,
            op,
            comm,
        )?;
    }
    Ok(out)
}

/// A barrier that naps between polls (MPI_Ibarrier + MPI_Test), so ranks waiting in it leave
/// the cores to the ranks still working (a plain barrier spins).
pub fn napping_barrier(comm: MPI_Comm, nap: std::time::Duration) -> Result<(), MpiError> {
    // SAFETY: the request is completed by MPI_Test before it goes out of scope.
    unsafe {
        let mut req = mpi::ffi::RSMPI_REQUEST_NULL;
        check("MPI_Ibarrier", mpi::ffi::MPI_Ibarrier(comm, &mut req))?;
        loop {
            let mut done: c_int = 0;
            check(
                "MPI_Test",
                mpi::ffi::MPI_Test(&mut req, &mut done, mpi::ffi::RSMPI_STATUS_IGNORE),
            )?;
            if done != 0 {
                return Ok(());
            }
            std::thread::sleep(nap);
        }
    }
}
