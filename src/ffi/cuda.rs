//! The CUDA driver API (cudarc's dlopen'd `sys`) as checked calls and owners that free on Drop:
//! driver probe, primary context, stream, events, device buffers. No CUDA toolkit at build time.

use std::ffi::{c_char, c_void, CStr};
use std::fmt;
use std::mem::MaybeUninit;

use cudarc::driver::sys::{self, CUresult};

/// A failed driver call: which call, CUDA's error name and its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CudaError {
    pub call: &'static str,
    pub code: i32,
    pub name: String,
    pub message: String,
}

impl fmt::Display for CudaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} failed: {} ({})", self.call, self.name, self.message)
    }
}

impl std::error::Error for CudaError {}

fn driver_text(
    f: unsafe fn(CUresult, *mut *const c_char) -> CUresult,
    r: CUresult,
) -> Option<String> {
    let mut p: *const c_char = std::ptr::null();
    // SAFETY: p is a valid out-pointer; the driver returns a static string.
    let ok = unsafe { f(r, &mut p) } == CUresult::CUDA_SUCCESS;
    // SAFETY: non-null results point at NUL-terminated static strings.
    (ok && !p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}

#[inline]
fn check(call: &'static str, r: CUresult) -> Result<(), CudaError> {
    if r == CUresult::CUDA_SUCCESS {
        Ok(())
    } else {
        Err(error(call, r))
    }
}

#[cold]
fn error(call: &'static str, r: CUresult) -> CudaError {
    CudaError {
        call,
        code: r as i32,
        name: driver_text(sys::cuGetErrorName, r)
            .unwrap_or_else(|| format!("CUresult({})", r as i32)),
        message: driver_text(sys::cuGetErrorString, r).unwrap_or_else(|| "no message".into()),
    }
}

/// dlopen(RTLD_NOW | RTLD_LOCAL) with the loader's own message (dlerror) on failure.
pub fn dl_open(name: &str) -> Result<libloading::Library, String> {
    let c = std::ffi::CString::new(name).map_err(|_| format!("{name:?}: not a file name"))?;
    // SAFETY: loading a library runs its initializers only; dlerror is read right after.
    unsafe {
        let h = libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
        if h.is_null() {
            let e = libc::dlerror();
            return Err(if e.is_null() {
                format!("{name}: dlopen failed")
            } else {
                CStr::from_ptr(e).to_string_lossy().into_owned()
            });
        }
        Ok(libloading::os::unix::Library::from_raw(h).into())
    }
}

/// The driver library's file name, as the dynamic loader looks it up.
pub const DRIVER_LIB: &str = "libcuda.so.1";

/// Every driver symbol this module calls; the probe refuses a driver that lacks one, so
/// cudarc's lazy loader never meets a missing symbol (it would panic).
const DRIVER_SYMBOLS: &[&str] = &[
    "cuInit",
    "cuDriverGetVersion",
    "cuGetErrorName",
    "cuGetErrorString",
    "cuDeviceGetCount",
    "cuDeviceGet",
    "cuDeviceGetName",
    "cuDeviceGetPCIBusId",
    "cuDevicePrimaryCtxRetain",
    "cuDevicePrimaryCtxRelease_v2",
    "cuCtxSetCurrent",
    "cuStreamCreate",
    "cuStreamQuery",
    "cuStreamDestroy_v2",
    "cuEventCreate",
    "cuEventRecord",
    "cuEventQuery",
    "cuEventElapsedTime",
    "cuEventDestroy_v2",
    "cuMemAlloc_v2",
    "cuMemFree_v2",
    "cuMemcpyHtoDAsync_v2",
    "cuMemcpyDtoHAsync_v2",
    "cuMemsetD8Async",
];

/// Loads the driver library and checks its symbols, without touching a device. The error is one
/// line saying what is missing.
pub fn probe_driver() -> Result<(), String> {
    let lib = dl_open(DRIVER_LIB).map_err(|e| {
        format!(
            "{DRIVER_LIB} (the NVIDIA driver) not found ({e}); run on a host with an NVIDIA GPU and driver, \
             or add the driver's folder to LD_LIBRARY_PATH"
        )
    })?;
    for s in DRIVER_SYMBOLS {
        // SAFETY: only the symbol's presence is checked.
        if unsafe { lib.get::<*const c_void>(s.as_bytes()) }.is_err() {
            return Err(format!(
                "{DRIVER_LIB} has no {s}: the NVIDIA driver is too old; install driver 525 or newer"
            ));
        }
    }
    // Keep it loaded: cudarc opens it again by name.
    std::mem::forget(lib);
    Ok(())
}

/// cuInit(0). Only after `probe_driver` succeeded.
pub fn init() -> Result<(), CudaError> {
    // SAFETY: plain driver call.
    check("cuInit", unsafe { sys::cuInit(0) })
}

/// The driver's CUDA version as (major, minor).
pub fn driver_version() -> Result<(i32, i32), CudaError> {
    let mut v = 0;
    // SAFETY: out-pointer valid.
    check("cuDriverGetVersion", unsafe {
        sys::cuDriverGetVersion(&mut v)
    })?;
    Ok((v / 1000, (v % 1000) / 10))
}

pub fn device_count() -> Result<usize, CudaError> {
    let mut n = 0;
    // SAFETY: out-pointer valid.
    check("cuDeviceGetCount", unsafe { sys::cuDeviceGetCount(&mut n) })?;
    Ok(n.max(0) as usize)
}

/// What identifies a GPU to a person: ordinal, product name, PCI bus id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    pub ordinal: u32,
    pub name: String,
    pub pci_bus_id: String,
}

fn c_buf_string(buf: &[c_char]) -> String {
    let bytes: Vec<u8> = buf
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The primary context of one device, current on the creating thread; released on Drop.
pub struct Context {
    dev: sys::CUdevice,
    ctx: sys::CUcontext,
    pub info: DeviceInfo,
}

impl Context {
    /// Retains device `ordinal`'s primary context and makes it current on this thread.
    pub fn open(ordinal: u32) -> Result<Context, CudaError> {
        let mut dev = MaybeUninit::uninit();
        // SAFETY: out-pointers are valid for the lengths passed.
        unsafe {
            check(
                "cuDeviceGet",
                sys::cuDeviceGet(dev.as_mut_ptr(), ordinal as i32),
            )?;
            let dev = dev.assume_init();
            let mut name = [0 as c_char; 256];
            check(
                "cuDeviceGetName",
                sys::cuDeviceGetName(name.as_mut_ptr(), 255, dev),
            )?;
            let mut bus = [0 as c_char; 64];
            check(
                "cuDeviceGetPCIBusId",
                sys::cuDeviceGetPCIBusId(bus.as_mut_ptr(), 63, dev),
            )?;
            let mut ctx = MaybeUninit::uninit();
            check(
                "cuDevicePrimaryCtxRetain",
                sys::cuDevicePrimaryCtxRetain(ctx.as_mut_ptr(), dev),
            )?;
            let ctx = ctx.assume_init();
            let c = Context {
                dev,
                ctx,
                info: DeviceInfo {
                    ordinal,
                    name: c_buf_string(&name),
                    pci_bus_id: c_buf_string(&bus),
                },
            };
            c.make_current()?;
            Ok(c)
        }
    }

    pub fn make_current(&self) -> Result<(), CudaError> {
        // SAFETY: ctx is a retained primary context.
        check("cuCtxSetCurrent", unsafe { sys::cuCtxSetCurrent(self.ctx) })
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: releases the reference taken in `open`.
        unsafe {
            sys::cuDevicePrimaryCtxRelease_v2(self.dev);
        }
    }
}

/// A non-blocking stream (no implicit sync with the legacy default stream), destroyed on Drop.
pub struct Stream(sys::CUstream);

impl Stream {
    pub fn new() -> Result<Stream, CudaError> {
        let mut s = MaybeUninit::uninit();
        // SAFETY: out-pointer valid; a context is current.
        unsafe {
            check(
                "cuStreamCreate",
                sys::cuStreamCreate(
                    s.as_mut_ptr(),
                    sys::CUstream_flags::CU_STREAM_NON_BLOCKING as u32,
                ),
            )?;
            Ok(Stream(s.assume_init()))
        }
    }

    pub fn raw(&self) -> sys::CUstream {
        self.0
    }

    /// Whether all work queued so far has finished (cuStreamQuery; never blocks).
    #[inline]
    pub fn is_done(&self) -> Result<bool, CudaError> {
        // SAFETY: a live stream.
        query("cuStreamQuery", unsafe { sys::cuStreamQuery(self.0) })
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        // SAFETY: destroys the stream created in `new`.
        unsafe {
            sys::cuStreamDestroy_v2(self.0);
        }
    }
}

#[inline]
fn query(call: &'static str, r: CUresult) -> Result<bool, CudaError> {
    match r {
        CUresult::CUDA_SUCCESS => Ok(true),
        CUresult::CUDA_ERROR_NOT_READY => Ok(false),
        e => Err(error(call, e)),
    }
}

/// A CUDA event (with timing, or without for pure progress marks), destroyed on Drop.
pub struct Event(sys::CUevent);

impl Event {
    pub fn new(timing: bool) -> Result<Event, CudaError> {
        let flags = if timing {
            sys::CUevent_flags::CU_EVENT_DEFAULT
        } else {
            sys::CUevent_flags::CU_EVENT_DISABLE_TIMING
        };
        let mut e = MaybeUninit::uninit();
        // SAFETY: out-pointer valid; a context is current.
        unsafe {
            check(
                "cuEventCreate",
                sys::cuEventCreate(e.as_mut_ptr(), flags as u32),
            )?;
            Ok(Event(e.assume_init()))
        }
    }

    /// Records the event on `stream` (the hot loop's one call per mark).
    #[inline(always)]
    pub fn record(&self, stream: &Stream) -> Result<(), CudaError> {
        // SAFETY: live event and stream of the same context.
        check("cuEventRecord", unsafe {
            sys::cuEventRecord(self.0, stream.0)
        })
    }

    #[inline]
    pub fn is_done(&self) -> Result<bool, CudaError> {
        // SAFETY: a live event.
        query("cuEventQuery", unsafe { sys::cuEventQuery(self.0) })
    }

    /// Milliseconds from `start` to `self`, both recorded and complete.
    pub fn elapsed_ms_since(&self, start: &Event) -> Result<f32, CudaError> {
        let mut ms = 0f32;
        // SAFETY: out-pointer valid; both events are live.
        check("cuEventElapsedTime", unsafe {
            sys::cuEventElapsedTime(&mut ms, start.0, self.0)
        })?;
        Ok(ms)
    }
}

impl Drop for Event {
    fn drop(&mut self) {
        // SAFETY: destroys the event created in `new`.
        unsafe {
            sys::cuEventDestroy_v2(self.0);
        }
    }
}

/// Device memory of a fixed size, freed on Drop.
pub struct DeviceBuffer {
    ptr: sys::CUdeviceptr,
    bytes: usize,
}

impl DeviceBuffer {
    pub fn new(bytes: usize) -> Result<DeviceBuffer, CudaError> {
        let mut p = MaybeUninit::uninit();
        // SAFETY: out-pointer valid; a context is current. At least 1 byte so the pointer is real.
        unsafe {
            check(
                "cuMemAlloc",
                sys::cuMemAlloc_v2(p.as_mut_ptr(), bytes.max(1)),
            )?;
            Ok(DeviceBuffer {
                ptr: p.assume_init(),
                bytes,
            })
        }
    }

    pub fn len(&self) -> usize {
        self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.bytes == 0
    }

    pub fn as_ptr(&self) -> *mut c_void {
        self.ptr as usize as *mut c_void
    }

    /// Queues `value` into the first `n` bytes.
    pub fn fill_async(&self, value: u8, n: usize, s: &Stream) -> Result<(), CudaError> {
        assert!(n <= self.bytes, "fill past the buffer");
        // SAFETY: in bounds (checked).
        check("cuMemsetD8Async", unsafe {
            sys::cuMemsetD8Async(self.ptr, value, n, s.0)
        })
    }

    /// Queues a copy of `src` to the start of the buffer; `src` must stay untouched until the
    /// stream has passed the copy.
    pub fn copy_from_host_async(&self, src: &[u8], s: &Stream) -> Result<(), CudaError> {
        assert!(src.len() <= self.bytes, "copy past the buffer");
        // SAFETY: in bounds (checked); the caller keeps `src` alive until the stream is done.
        check("cuMemcpyHtoDAsync", unsafe {
            sys::cuMemcpyHtoDAsync_v2(self.ptr, src.as_ptr() as *const c_void, src.len(), s.0)
        })
    }

    /// Queues a copy of the buffer's first `dst.len()` bytes into `dst`.
    pub fn copy_to_host_async(&self, dst: &mut [u8], s: &Stream) -> Result<(), CudaError> {
        assert!(dst.len() <= self.bytes, "copy past the buffer");
        // SAFETY: in bounds (checked); the caller does not read `dst` until the stream is done.
        check("cuMemcpyDtoHAsync", unsafe {
            sys::cuMemcpyDtoHAsync_v2(dst.as_mut_ptr() as *mut c_void, self.ptr, dst.len(), s.0)
        })
    }
}

impl Drop for DeviceBuffer {
    fn drop(&mut self) {
        // SAFETY: frees the allocation made in `new`.
        unsafe {
            sys::cuMemFree_v2(self.ptr);
        }
    }
}
