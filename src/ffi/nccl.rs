//! NCCL as checked calls (one `Result` per C call; errors name the ncclResult_t and carry NCCL's
//! messages) and the communicator owner: non-blocking init under a deadline, abort from any thread.

use std::ffi::{c_int, c_void, CStr};
use std::fmt;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::nccl_sys::{self as sys, ncclComm_t, ncclResult_t, NcclLib};

/// The name nccl.h gives `code`.
pub fn result_name(code: ncclResult_t) -> &'static str {
    match code {
        sys::ncclSuccess => "ncclSuccess",
        sys::ncclUnhandledCudaError => "ncclUnhandledCudaError",
        sys::ncclSystemError => "ncclSystemError",
        sys::ncclInternalError => "ncclInternalError",
        sys::ncclInvalidArgument => "ncclInvalidArgument",
        sys::ncclInvalidUsage => "ncclInvalidUsage",
        sys::ncclRemoteError => "ncclRemoteError",
        sys::ncclInProgress => "ncclInProgress",
        sys::ncclTimeout => "ncclTimeout",
        _ => "ncclResult_t(unknown)",
    }
}

/// Every result code nccl.h (2.30) defines.
pub const ALL_RESULTS: [ncclResult_t; 9] = [0, 1, 2, 3, 4, 5, 6, 7, 8];

/// A failed NCCL call: the call, the code's name, ncclGetErrorString and ncclGetLastError.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NcclError {
    pub call: &'static str,
    pub code: ncclResult_t,
    pub message: String,
    pub last_error: String,
}

impl NcclError {
    pub fn name(&self) -> &'static str {
        result_name(self.code)
    }
}

impl fmt::Display for NcclError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.call, self.name())?;
        if result_name(self.code).ends_with("(unknown)") {
            write!(f, " {}", self.code)?;
        }
        if !self.message.is_empty() {
            write!(f, " ({})", self.message)?;
        }
        if !self.last_error.is_empty() {
            write!(f, ": {}", self.last_error)?;
        }
        Ok(())
    }
}

impl std::error::Error for NcclError {}

/// What a call that may run on in the background left behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Done,
    InProgress,
}

fn c_text(p: *const std::ffi::c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: NCCL returns NUL-terminated strings it owns.
    unsafe { CStr::from_ptr(p) }
        .to_string_lossy()
        .trim()
        .to_string()
}

/// The loaded library; every call goes through it.
#[derive(Clone, Copy)]
pub struct Nccl {
    lib: &'static NcclLib,
}

impl Nccl {
    /// Loads libnccl.so.2 (see `nccl_sys::lib`) and refuses versions older than 2.14.
    pub fn load() -> Result<Nccl, String> {
        let n = Nccl { lib: sys::lib()? };
        let v = n.version().map_err(|e| e.to_string())?;
        if v < 21400 {
            return Err(format!(
                "{} is NCCL {}, collbench needs 2.14 or newer (non-blocking communicators); \
                 point LD_LIBRARY_PATH at a newer libnccl.so.2",
                n.lib.path,
                version_text(v)
            ));
        }
        Ok(n)
    }

    pub fn path(&self) -> &str {
        &self.lib.path
    }

    #[cold]
    fn error(&self, call: &'static str, code: ncclResult_t, comm: ncclComm_t) -> NcclError {
        // SAFETY: both calls accept any code / a null or live communicator.
        let (message, last_error) = unsafe {
            (
                c_text((self.lib.ncclGetErrorString)(code)),
                c_text((self.lib.ncclGetLastError)(comm)),
            )
        };
        NcclError {
            call,
            code,
            message,
            last_error,
        }
    }

    #[inline(always)]
    fn status(
        &self,
        call: &'static str,
        code: ncclResult_t,
        comm: ncclComm_t,
    ) -> Result<Status, NcclError> {
        match code {
            sys::ncclSuccess => Ok(Status::Done),
            sys::ncclInProgress => Ok(Status::InProgress),
            c => Err(self.error(call, c, comm)),
        }
    }

    /// NCCL_VERSION_CODE of the loaded library (e.g. 22809 for 2.28.9).
    pub fn version(&self) -> Result<c_int, NcclError> {
        let mut v = 0;
        // SAFETY: out-pointer valid.
        let r = unsafe { (self.lib.ncclGetVersion)(&mut v) };
        self.status("ncclGetVersion", r, std::ptr::null_mut())?;
        Ok(v)
    }

    pub fn unique_id(&self) -> Result<[u8; sys::NCCL_UNIQUE_ID_BYTES], NcclError> {
        let mut id = sys::ncclUniqueId {
            internal: [0; sys::NCCL_UNIQUE_ID_BYTES],
        };
        // SAFETY: out-pointer valid.
        let r = unsafe { (self.lib.ncclGetUniqueId)(&mut id) };
        self.status("ncclGetUniqueId", r, std::ptr::null_mut())?;
        Ok(id.internal.map(|c| c as u8))
    }

    /// The communicator's asynchronous state: Done (healthy and idle), InProgress, or the error.
    ///
    /// # Safety
    /// `comm` is a live communicator.
    #[inline]
    pub unsafe fn async_error(&self, comm: ncclComm_t) -> Result<Status, NcclError> {
        let mut state: ncclResult_t = sys::ncclSuccess;
        // SAFETY: comm is live; out-pointer valid.
        let r = unsafe { (self.lib.ncclCommGetAsyncError)(comm, &mut state) };
        self.status("ncclCommGetAsyncError", r, comm)?;
        self.status("ncclCommGetAsyncError", state, comm)
    }

    /// # Safety
    /// `send` and `recv` hold `count` elements of `dtype` on the communicator's device.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub unsafe fn all_reduce(
        &self,
        send: *const c_void,
        recv: *mut c_void,
        count: usize,
        dtype: sys::ncclDataType_t,
        op: sys::ncclRedOp_t,
        comm: ncclComm_t,
        stream: sys::cudaStream_t,
    ) -> Result<Status, NcclError> {
        let r = (self.lib.ncclAllReduce)(send, recv, count, dtype, op, comm, stream);
        self.status("ncclAllReduce", r, comm)
    }

    /// # Safety
    /// `send` holds `count` elements of `dtype` on the communicator's device.
    #[inline(always)]
    pub unsafe fn send(
        &self,
        send: *const c_void,
        count: usize,
        dtype: sys::ncclDataType_t,
        peer: c_int,
        comm: ncclComm_t,
        stream: sys::cudaStream_t,
    ) -> Result<Status, NcclError> {
        let r = (self.lib.ncclSend)(send, count, dtype, peer, comm, stream);
        self.status("ncclSend", r, comm)
    }

    /// # Safety
    /// `recv` holds `count` elements of `dtype` on the communicator's device.
    #[inline(always)]
    pub unsafe fn recv(
        &self,
        recv: *mut c_void,
        count: usize,
        dtype: sys::ncclDataType_t,
        peer: c_int,
        comm: ncclComm_t,
        stream: sys::cudaStream_t,
    ) -> Result<Status, NcclError> {
        let r = (self.lib.ncclRecv)(recv, count, dtype, peer, comm, stream);
        self.status("ncclRecv", r, comm)
    }

    /// Whether the library has ncclAlltoAll (NCCL 2.28 and newer).
    pub fn has_alltoall(&self) -> bool {
        self.lib.ncclAlltoAll.is_some()
    }

    /// # Safety
    /// `send` and `recv` hold `count` elements of `dtype` per rank of `comm`, on its device.
    #[inline(always)]
    pub unsafe fn alltoall(
        &self,
        send: *const c_void,
        recv: *mut c_void,
        count: usize,
        dtype: sys::ncclDataType_t,
        comm: ncclComm_t,
        stream: sys::cudaStream_t,
    ) -> Result<Status, NcclError> {
        let Some(f) = self.lib.ncclAlltoAll else {
            return Err(NcclError {
                call: "ncclAlltoAll",
                code: sys::ncclInvalidUsage,
                message: "this libnccl.so.2 has no ncclAlltoAll (NCCL 2.28 or newer)".into(),
                last_error: String::new(),
            });
        };
        let r = f(send, recv, count, dtype, comm, stream);
        self.status("ncclAlltoAll", r, comm)
    }

    #[inline(always)]
    pub fn group_start(&self) -> Result<Status, NcclError> {
        // SAFETY: no arguments.
        let r = unsafe { (self.lib.ncclGroupStart)() };
        self.status("ncclGroupStart", r, std::ptr::null_mut())
    }

    #[inline(always)]
    pub fn group_end(&self, comm: ncclComm_t) -> Result<Status, NcclError> {
        // SAFETY: no arguments.
        let r = unsafe { (self.lib.ncclGroupEnd)() };
        self.status("ncclGroupEnd", r, comm)
    }

    /// # Safety
    /// `comm` is live and not used again by anyone.
    pub unsafe fn abort(&self, comm: ncclComm_t) -> Result<Status, NcclError> {
        let r = (self.lib.ncclCommAbort)(comm);
        self.status("ncclCommAbort", r, std::ptr::null_mut())
    }
}

/// "2.28.9" from 22809 (and the pre-2.9 encoding, 2708 for 2.7.8).
pub fn version_text(code: c_int) -> String {
    if code >= 10000 {
        format!("{}.{}.{}", code / 10000, (code % 10000) / 100, code % 100)
    } else {
        format!("{}.{}.{}", code / 1000, (code % 1000) / 100, code % 100)
    }
}

/// The communicator pointer, shared by its owner and its abort handles; whoever swaps it to null
/// first frees it.
struct CommCell(AtomicPtr<sys::ncclComm>);

/// A non-blocking communicator. Drop finalizes and destroys it (or aborts it if that fails).
pub struct Comm {
    nccl: Nccl,
    cell: Arc<CommCell>,
    raw: ncclComm_t,
}

/// Aborts a communicator from another thread (the watchdog's last act before ending the rank).
#[derive(Clone)]
pub struct AbortHandle {
    nccl: Nccl,
    cell: Arc<CommCell>,
}

// SAFETY: the handle only moves a pointer out of an atomic and passes it to ncclCommAbort, which
// NCCL documents as callable from any thread.
unsafe impl Send for AbortHandle {}
unsafe impl Sync for AbortHandle {}
// SAFETY: as above; the owner may move between threads, NCCL calls on it are serialized by &mut.
unsafe impl Send for Comm {}

impl AbortHandle {
    /// Aborts the communicator unless it is already gone; true if this call aborted it.
    pub fn abort(&self) -> bool {
        let p = self.cell.0.swap(std::ptr::null_mut(), Ordering::AcqRel);
        if p.is_null() {
            return false;
        }
        // SAFETY: we took sole ownership of the live pointer.
        let _ = unsafe { self.nccl.abort(p) };
        true
    }
}

/// Polls `probe` until it reports Done, an error, or `deadline` passes (then Ok(false)).
pub fn poll_until(
    deadline: Option<Duration>,
    keepalive: &dyn Fn(),
    mut probe: impl FnMut() -> Result<Status, NcclError>,
) -> Result<bool, NcclError> {
    let start = Instant::now();
    let mut spins = 0u32;
    loop {
        if probe()? == Status::Done {
            return Ok(true);
        }
        keepalive();
        if deadline.is_some_and(|d| start.elapsed() >= d) {
            return Ok(false);
        }
        spins += 1;
        if spins < 1000 {
            std::thread::yield_now();
        } else {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

impl Comm {
    /// ncclCommInitRankConfig with `blocking = 0`, polled until ready under `deadline`; on a
    /// deadline or error the half-made communicator is aborted.
    pub fn init(
        nccl: Nccl,
        nranks: usize,
        rank: usize,
        id: &[u8; sys::NCCL_UNIQUE_ID_BYTES],
        deadline: Option<Duration>,
        keepalive: &dyn Fn(),
    ) -> Result<Comm, String> {
        let mut config = sys::ncclConfig_t::initializer();
        config.blocking = 0;
        let uid = sys::ncclUniqueId {
            internal: id.map(|b| b as std::ffi::c_char),
        };
        let mut raw: ncclComm_t = std::ptr::null_mut();
        // SAFETY: out-pointer and config valid for the call; NCCL copies the config.
        let r = unsafe {
            (nccl.lib.ncclCommInitRankConfig)(
                &mut raw,
                nranks as c_int,
                uid,
                rank as c_int,
                &mut config,
            )
        };
        let first = nccl.status("ncclCommInitRankConfig", r, raw);
        let comm = (!raw.is_null()).then(|| Comm {
            nccl,
            cell: Arc::new(CommCell(AtomicPtr::new(raw))),
            raw,
        });
        let abort = |comm: Option<Comm>| {
            if let Some(c) = comm {
                c.abort_handle().abort();
            }
        };
        match first {
            Err(e) => {
                abort(comm);
                Err(e.to_string())
            }
            Ok(_) => {
                let Some(c) = comm else {
                    return Err("ncclCommInitRankConfig returned no communicator".into());
                };
                // SAFETY: raw is live until aborted below.
                match poll_until(deadline, keepalive, || unsafe { nccl.async_error(raw) }) {
                    Ok(true) => Ok(c),
                    Ok(false) => {
                        abort(Some(c));
                        Err(format!(
                            "ncclCommInitRankConfig (rank {rank} of {nranks}) did not complete within {} \
                             (--timeout); communicator aborted",
                            deadline.map_or("-".into(), |d| humantime::format_duration(d).to_string())
                        ))
                    }
                    Err(e) => {
                        abort(Some(c));
                        Err(format!("initializing the communicator: {e}"))
                    }
                }
            }
        }
    }

    #[inline(always)]
    pub fn raw(&self) -> ncclComm_t {
        self.raw
    }

    pub fn nccl(&self) -> Nccl {
        self.nccl
    }

    pub fn abort_handle(&self) -> AbortHandle {
        AbortHandle {
            nccl: self.nccl,
            cell: self.cell.clone(),
        }
    }

    /// Aborts now (after an error or a deadline); the communicator must not be used afterwards.
    pub fn abort(&self) {
        self.abort_handle().abort();
    }
}

impl Drop for Comm {
    fn drop(&mut self) {
        let p = self.cell.0.swap(std::ptr::null_mut(), Ordering::AcqRel);
        if p.is_null() {
            return;
        }
        // SAFETY: we own the live pointer now.
        unsafe {
            let r = (self.nccl.lib.ncclCommFinalize)(p);
            let finalized = match self.nccl.status("ncclCommFinalize", r, p) {
                Ok(_) => poll_until(Some(Duration::from_secs(10)), &|| {}, || {
                    self.nccl.async_error(p)
                })
                .unwrap_or(false),
                Err(_) => false,
            };
            if finalized {
                (self.nccl.lib.ncclCommDestroy)(p);
            } else {
                (self.nccl.lib.ncclCommAbort)(p);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_result_code_has_its_own_name() {
        let names: Vec<&str> = ALL_RESULTS.iter().map(|&c| result_name(c)).collect();
        for (c, n) in ALL_RESULTS.iter().zip(&names) {
            assert!(n.starts_with("ncc") && !n.contains("unknown"), "{c}: {n}");
        }
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        assert_eq!(result_name(6), "ncclRemoteError");
        assert_eq!(result_name(7), "ncclInProgress");
        assert!(result_name(99).contains("unknown"));
    }

    #[test]
    fn errors_display_name_message_and_last_error() {
        let e = NcclError {
            call: "ncclAllReduce",
            code: sys::ncclRemoteError,
            message: "remote process exited or there was a network error".into(),
            last_error: "NET/Socket : peer 10.0.0.2 closed".into(),
        };
        assert_eq!(
            e.to_string(),
            "ncclAllReduce: ncclRemoteError (remote process exited or there was a network error): \
             NET/Socket : peer 10.0.0.2 closed"
        );
        let u = NcclError {
            call: "x",
            code: 42,
            message: String::new(),
            last_error: String::new(),
        };
        assert_eq!(u.to_string(), "x: ncclResult_t(unknown) 42");
    }

    #[test]
    fn version_codes_print_as_nccl_does() {
        assert_eq!(version_text(22809), "2.28.9");
        assert_eq!(version_text(21903), "2.19.3");
        assert_eq!(version_text(2708), "2.7.8");
    }

    #[test]
    fn config_matches_the_2_28_layout() {
        let c = sys::ncclConfig_t::initializer();
        // size, magic, version, 4 ints, netName, 2 ints, commName, 6 ints (x86_64).
        assert_eq!(c.size, 80);
        assert_eq!(c.magic, 0xcafebeef);
        assert_eq!(c.blocking, i32::MIN);
    }

    #[test]
    fn polling_stops_at_the_deadline_or_on_error() {
        let pinged = std::cell::Cell::new(0);
        let r = poll_until(
            Some(Duration::from_millis(30)),
            &|| pinged.set(pinged.get() + 1),
            || Ok(Status::InProgress),
        );
        assert_eq!(r, Ok(false));
        assert!(pinged.get() > 0);
        let mut n = 0;
        let r = poll_until(None, &|| {}, || {
            n += 1;
            Ok(if n < 5 {
                Status::InProgress
            } else {
                Status::Done
            })
        });
        assert_eq!(r, Ok(true));
        let e = poll_until(None, &|| {}, || {
            Err(NcclError {
                call: "c",
                code: 6,
                message: String::new(),
                last_error: String::new(),
            })
        });
        assert_eq!(e.unwrap_err().name(), "ncclRemoteError");
    }
}
