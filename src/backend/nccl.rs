//! The NCCL backend: ncclAllReduce and grouped ncclSend/ncclRecv all-to-all on device buffers of
//! one non-blocking communicator, CUDA events as marks, every wait polled under the deadline.
//!
//! Marks: `mark(slot)` records a CUDA event on the stream; a mark that directly follows another
//! with no launch in between reuses that event, so back-to-back iterations cost one event record
//! each. Marks run in their own loop (the batched loop has none). In the check and warmup each
//! launch records a completion event, so a wait knows which iteration it is stuck at. A wait polls cuStreamQuery and ncclCommGetAsyncError; on an error,
//! or when nothing completes for `--timeout`, it aborts the communicator and names op, size,
//! phase, iteration and the NCCL error.

use std::ffi::c_void;
use std::time::{Duration, Instant};

use super::{Backend, BackendError, Call, Phase};
use crate::bootstrap::group::Group;
use crate::ffi::cuda::{self, Context, DeviceBuffer, Event, Stream};
use crate::ffi::nccl::{self as nccl, AbortHandle, Comm, Nccl, Status};
use crate::ffi::nccl_sys::{self as sys, ncclDataType_t, ncclRedOp_t, NCCL_UNIQUE_ID_BYTES};
use crate::plan::{Collective, DType, RedOp};
use crate::runner::watchdog::Progress;

/// NCCL's type for `d` (NCCL has all ten).
pub fn nccl_dtype(d: DType) -> ncclDataType_t {
    match d {
        DType::Int8 => sys::ncclInt8,
        DType::Uint8 => sys::ncclUint8,
        DType::Int32 => sys::ncclInt32,
        DType::Uint32 => sys::ncclUint32,
        DType::Int64 => sys::ncclInt64,
        DType::Uint64 => sys::ncclUint64,
        DType::Half => sys::ncclFloat16,
        DType::Float => sys::ncclFloat32,
        DType::Double => sys::ncclFloat64,
        DType::Bfloat16 => sys::ncclBfloat16,
    }
}

pub fn nccl_op(r: RedOp) -> ncclRedOp_t {
    match r {
        RedOp::Sum => sys::ncclSum,
        RedOp::Prod => sys::ncclProd,
        RedOp::Min => sys::ncclMin,
        RedOp::Max => sys::ncclMax,
        RedOp::Avg => sys::ncclAvg,
    }
}

#[derive(Clone, Copy)]
struct Prepared {
    call: Call,
    send: *const c_void,
    recv: *mut c_void,
    count: usize,
    dtype: ncclDataType_t,
    redop: ncclRedOp_t,
    bytes: usize,
    /// Bytes of one peer's block (all-to-all).
    block: usize,
}

/// Where a rank's communicator comes from.
pub struct CommSpec<'a> {
    pub rank: usize,
    pub nranks: usize,
    pub unique_id: &'a [u8; NCCL_UNIQUE_ID_BYTES],
    /// The ranks' host-side group, for the barrier.
    pub group: Group,
    /// All-to-all as one ncclAlltoAll call instead of grouped ncclSend/ncclRecv.
    pub native_alltoall: bool,
}

pub struct NcclBackend {
    // Field order is drop order: the communicator goes first, the context last.
    comm: Comm,
    send: DeviceBuffer,
    recv: DeviceBuffer,
    events: Vec<Event>,
    stream: Stream,
    ctx: Context,
    /// Event index each mark slot refers to.
    alias: Vec<u32>,
    host: Vec<u64>,
    nccl: Nccl,
    group: Group,
    nranks: usize,
    native_alltoall: bool,
    timeout: Option<Duration>,
    progress: Option<Progress>,
    prepared: Option<Prepared>,
    phase: Phase,
    /// Launches in this phase, and how many of them are known to be complete.
    launches: usize,
    completed: usize,
    /// The event of the latest mark, while no launch has followed it.
    last_mark: Option<u32>,
    mark_error: Option<String>,
    version: String,
}

impl NcclBackend {
    /// Creates the communicator (non-blocking, under `timeout`) and allocates send and receive
    /// buffers of `max_bytes` and events for `max_iterations` marks on the context's device.
    pub fn new(
        nccl: Nccl,
        ctx: Context,
        spec: CommSpec<'_>,
        max_bytes: u64,
        max_iterations: u32,
        timeout: Option<Duration>,
        progress: Option<Progress>,
    ) -> Result<NcclBackend, String> {
        ctx.make_current().map_err(|e| e.to_string())?;
        if spec.native_alltoall && !nccl.has_alltoall() {
            return Err(format!(
                "--a2a-call alltoall: {} has no ncclAlltoAll (NCCL 2.28 or newer); drop --a2a-call \
                 or point LD_LIBRARY_PATH at a newer libnccl.so.2",
                nccl.path()
            ));
        }
        let keep = progress.clone();
        let keepalive = move || {
            if let Some(p) = &keep {
                p.keepalive()
            }
        };
        let comm = Comm::init(
            nccl,
            spec.nranks,
            spec.rank,
            spec.unique_id,
            timeout,
            &keepalive,
        )?;
        let on_gpu =
            |e: cuda::CudaError| format!("GPU {} [{}]: {e}", ctx.info.ordinal, ctx.info.pci_bus_id);
        let bytes =
            usize::try_from(max_bytes).map_err(|_| "-e exceeds the address space".to_string())?;
        let send = DeviceBuffer::new(bytes).map_err(on_gpu)?;
        let recv = DeviceBuffer::new(bytes).map_err(on_gpu)?;
        let stream = Stream::new().map_err(on_gpu)?;
        let slots = 2 * max_iterations.max(1) as usize;
        let events = (0..slots)
            .map(|_| Event::new(true))
            .collect::<Result<Vec<_>, _>>()
            .map_err(on_gpu)?;
        let version = nccl
            .version()
            .map(nccl::version_text)
            .unwrap_or_else(|_| "unknown".into());
        let driver = cuda::driver_version()
            .map(|(a, b)| format!("{a}.{b}"))
            .unwrap_or_else(|_| "unknown".into());
        Ok(NcclBackend {
            comm,
            send,
            recv,
            events,
            stream,
            alias: (0..slots as u32).collect(),
            host: vec![0u64; bytes.div_ceil(8).max(1)],
            nccl,
            group: spec.group,
            nranks: spec.nranks,
            native_alltoall: spec.native_alltoall,
            timeout,
            progress,
            prepared: None,
            phase: Phase::Check,
            launches: 0,
            completed: 0,
            last_mark: None,
            mark_error: None,
            version: format!(
                "NCCL {version} ({}), CUDA driver {driver}, {} [{}]",
                nccl.path(),
                ctx.info.name,
                ctx.info.pci_bus_id
            ),
            ctx,
        })
    }

    /// A handle the watchdog thread can abort the communicator with.
    pub fn abort_handle(&self) -> AbortHandle {
        self.comm.abort_handle()
    }

    pub fn device(&self) -> &cuda::DeviceInfo {
        &self.ctx.info
    }

    /// Aborts the communicator and describes the failure with the call it happened in.
    #[cold]
    fn fail(&mut self, what: &str) -> BackendError {
        self.comm.abort();
        let at = match &self.prepared {
            Some(p) => {
                let it = if self.phase == Phase::Timed {
                    // The batched loop has no completion events.
                    format!("one of iterations 0..{}", self.launches)
                } else {
                    format!("iteration {}", self.completed)
                };
                format!(
                    "{} {} B {} {} {it}",
                    p.call.op.name(),
                    p.bytes,
                    p.call.placement.label(),
                    self.phase.label(),
                )
            }
            None => self.phase.label().to_string(),
        };
        BackendError::Device(format!("{at}: {what}; communicator aborted"))
    }

    #[inline]
    fn comm_state(&self) -> Result<Status, nccl::NcclError> {
        // SAFETY: the communicator is live until `fail` aborts it, after which this backend only
        // returns the error (the watchdog's abort is followed by the end of the process).
        unsafe { self.nccl.async_error(self.comm.raw()) }
    }

    fn keepalive(&self) {
        if let Some(p) = &self.progress {
            p.keepalive();
        }
    }

    /// The completion event of launch `k` of this phase, if there is one.
    fn completion_event(&self, k: usize) -> Option<&Event> {
        let slot = 2 * k + 1;
        self.alias
            .get(slot)
            .and_then(|&e| self.events.get(e as usize))
    }

    /// Polls until the stream is idle; an NCCL error or `timeout` without any completed launch
    /// aborts the communicator.
    fn wait(&mut self) -> Result<(), BackendError> {
        if let Some(e) = self.mark_error.take() {
            return Err(self.fail(&e));
        }
        let mut last_progress = Instant::now();
        let mut last_scan = Instant::now();
        let mut spins = 0u32;
        loop {
            match self.stream.is_done() {
                Ok(true) => {
                    if let Err(e) = self.comm_state() {
                        return Err(self.fail(&e.to_string()));
                    }
                    self.completed = self.launches;
                    return Ok(());
                }
                Ok(false) => {}
                Err(e) => return Err(self.fail(&e.to_string())),
            }
            if let Err(e) = self.comm_state() {
                return Err(self.fail(&e.to_string()));
            }
            self.keepalive();
            if last_scan.elapsed() >= Duration::from_millis(1) {
                last_scan = Instant::now();
                while self.completed < self.launches {
                    match self.completion_event(self.completed).map(Event::is_done) {
                        Some(Ok(true)) => {
                            self.completed += 1;
                            last_progress = last_scan;
                        }
                        Some(Err(e)) => return Err(self.fail(&e.to_string())),
                        _ => break,
                    }
                }
                if let Some(t) = self.timeout {
                    if last_progress.elapsed() >= t {
                        let state = match self.comm_state() {
                            Ok(Status::Done) => "ncclSuccess",
                            Ok(Status::InProgress) => "ncclInProgress",
                            Err(_) => "error",
                        };
                        return Err(self.fail(&format!(
                            "no progress within {} (--timeout); NCCL async state {state}",
                            humantime::format_duration(t)
                        )));
                    }
                }
            }
            spins += 1;
            if spins < 20_000 {
                std::hint::spin_loop();
            } else {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
    }

    /// A call left work in the background (non-blocking communicator): poll until it is enqueued.
    #[cold]
    fn finish_enqueue(&mut self) -> Result<(), BackendError> {
        let comm = self.comm.raw();
        let nccl = self.nccl;
        let progress = self.progress.clone();
        let keepalive = move || {
            if let Some(p) = &progress {
                p.keepalive()
            }
        };
        // SAFETY: as in `comm_state`.
        match nccl::poll_until(self.timeout, &keepalive, || unsafe {
            nccl.async_error(comm)
        }) {
            Ok(true) => Ok(()),
            Ok(false) => Err(self.fail("enqueueing did not finish within --timeout")),
            Err(e) => Err(self.fail(&e.to_string())),
        }
    }

    /// # Safety
    /// `p` was made by `prepare` for this backend's buffers.
    #[inline(always)]
    unsafe fn all_to_all(&self, p: &Prepared) -> Result<Status, nccl::NcclError> {
        let (comm, s) = (self.comm.raw(), self.stream.raw() as sys::cudaStream_t);
        if p.count == 0 {
            return Ok(Status::Done);
        }
        self.nccl.group_start()?;
        for peer in 0..self.nranks {
            let off = peer * p.block;
            self.nccl.send(
                (p.send as *const u8).add(off) as *const c_void,
                p.count,
                p.dtype,
                peer as i32,
                comm,
                s,
            )?;
            self.nccl.recv(
                (p.recv as *mut u8).add(off) as *mut c_void,
                p.count,
                p.dtype,
                peer as i32,
                comm,
                s,
            )?;
        }
        self.nccl.group_end(comm)
    }

    fn host_bytes(&mut self, n: usize) -> &mut [u8] {
        // SAFETY: u64 storage has no padding and every byte pattern is a valid u8.
        let all = unsafe {
            std::slice::from_raw_parts_mut(self.host.as_mut_ptr() as *mut u8, self.host.len() * 8)
        };
        &mut all[..n]
    }
}

impl Backend for NcclBackend {
    fn name(&self) -> &'static str {
        "nccl"
    }

    fn library_version(&self) -> String {
        self.version.clone()
    }

    fn prepare(&mut self, call: &Call) -> Result<(), BackendError> {
        let esz = call.dtype.size() as usize;
        let bytes = call.buffer_elems as usize * esz;
        if bytes > self.send.len() {
            return Err(BackendError::Unsupported(format!(
                "{bytes} bytes exceed the {} allocated",
                self.send.len()
            )));
        }
        let recv = self.recv.as_ptr();
        let send = if call.placement.is_in_place() {
            recv as *const c_void
        } else {
            self.send.as_ptr() as *const c_void
        };
        self.prepared = Some(Prepared {
            call: *call,
            send,
            recv,
            count: call.count as usize,
            dtype: nccl_dtype(call.dtype),
            redop: nccl_op(call.redop.unwrap_or(RedOp::Sum)),
            bytes,
            block: call.count as usize * esz,
        });
        Ok(())
    }

    #[inline]
    fn launch(&mut self) -> Result<(), BackendError> {
        let Some(p) = self.prepared else {
            return Err(BackendError::Unsupported("launch before prepare".into()));
        };
        // SAFETY: prepare checked that both buffers hold the call's elements.
        let r = unsafe {
            match p.call.op {
                Collective::AllReduce => self.nccl.all_reduce(
                    p.send,
                    p.recv,
                    p.count,
                    p.dtype,
                    p.redop,
                    self.comm.raw(),
                    self.stream.raw() as sys::cudaStream_t,
                ),
                Collective::AllToAll if self.native_alltoall && p.count > 0 => self.nccl.alltoall(
                    p.send,
                    p.recv,
                    p.count,
                    p.dtype,
                    self.comm.raw(),
                    self.stream.raw() as sys::cudaStream_t,
                ),
                Collective::AllToAll => self.all_to_all(&p),
            }
        };
        match r {
            Ok(Status::Done) => {}
            Ok(Status::InProgress) => self.finish_enqueue()?,
            Err(e) => return Err(self.fail(&e.to_string())),
        }
        if matches!(self.phase, Phase::Check | Phase::Warmup) {
            let slot = 2 * self.launches + 1;
            if let Some(ev) = self.events.get(slot) {
                if let Err(e) = ev.record(&self.stream) {
                    return Err(self.fail(&e.to_string()));
                }
                self.alias[slot] = slot as u32;
            }
        }
        self.launches += 1;
        self.last_mark = None;
        Ok(())
    }

    #[inline(always)]
    fn mark(&mut self, slot: usize) {
        if slot >= self.alias.len() {
            return;
        }
        if let Some(e) = self.last_mark {
            self.alias[slot] = e;
            return;
        }
        if let Err(e) = self.events[slot].record(&self.stream) {
            self.mark_error.get_or_insert(e.to_string());
        }
        self.alias[slot] = slot as u32;
        self.last_mark = Some(slot as u32);
    }

    fn synchronize(&mut self) -> Result<(), BackendError> {
        self.wait()
    }

    fn elapsed_ns(&self, from: usize, to: usize) -> u64 {
        let (Some(&a), Some(&b)) = (self.alias.get(from), self.alias.get(to)) else {
            return 0;
        };
        if a == b {
            return 0;
        }
        self.events[b as usize]
            .elapsed_ms_since(&self.events[a as usize])
            .map_or(0, |ms| (ms as f64 * 1e6).max(0.0) as u64)
    }

    fn write_input(&mut self, fill: &mut dyn FnMut(&mut [u8])) -> Result<(), BackendError> {
        let Some(p) = self.prepared else {
            return Ok(());
        };
        let n = p.bytes;
        fill(self.host_bytes(n));
        if n == 0 {
            return Ok(());
        }
        let in_place = p.call.placement.is_in_place();
        // SAFETY: the host buffer outlives the wait below, which ends the copy.
        let host = unsafe { std::slice::from_raw_parts(self.host.as_ptr() as *const u8, n) };
        let queued = if in_place {
            self.recv.copy_from_host_async(host, &self.stream)
        } else {
            // A poisoned receive buffer: a call that writes nothing cannot pass the check.
            self.recv
                .fill_async(0xff, n, &self.stream)
                .and_then(|_| self.send.copy_from_host_async(host, &self.stream))
        };
        if let Err(e) = queued {
            return Err(self.fail(&e.to_string()));
        }
        self.wait()
    }

    fn read_output(&mut self, check: &mut dyn FnMut(&[u8])) -> Result<(), BackendError> {
        let Some(p) = self.prepared else {
            return Ok(());
        };
        let n = p.bytes;
        if n > 0 {
            // SAFETY: the host buffer is not read until the wait below ends the copy.
            let host =
                unsafe { std::slice::from_raw_parts_mut(self.host.as_mut_ptr() as *mut u8, n) };
            if let Err(e) = self.recv.copy_to_host_async(host, &self.stream) {
                return Err(self.fail(&e.to_string()));
            }
            self.wait()?;
        }
        check(self.host_bytes(n));
        Ok(())
    }

    fn barrier(&mut self) -> Result<(), BackendError> {
        Ok(self.group.barrier()?)
    }

    fn begin_phase(&mut self, phase: Phase) {
        self.phase = phase;
        self.launches = 0;
        self.completed = 0;
        self.last_mark = None;
    }

    fn checks(&self, call: &Call) -> bool {
        !(call.op == Collective::AllToAll && call.placement.is_in_place())
    }

    /// An event record costs about a microsecond of host time, as much as a small collective.
    fn separate_marked_loop(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_and_op_maps_to_its_nccl_h_value() {
        let types: Vec<(DType, i32)> = DType::ALL.iter().map(|&d| (d, nccl_dtype(d))).collect();
        assert_eq!(
            types,
            vec![
                (DType::Int8, 0),
                (DType::Uint8, 1),
                (DType::Int32, 2),
                (DType::Uint32, 3),
                (DType::Int64, 4),
                (DType::Uint64, 5),
                (DType::Half, 6),
                (DType::Float, 7),
                (DType::Double, 8),
                (DType::Bfloat16, 9),
            ]
        );
        // nccl.h orders max before min.
        let ops: Vec<i32> = RedOp::ALL.iter().map(|&r| nccl_op(r)).collect();
        assert_eq!(ops, vec![0, 1, 3, 2, 4]);
    }
}
