//! NCCL's C ABI as collbench uses it (types of nccl.h 2.28) and the dlopen'd function table.
//! Loaded once from libnccl.so.2 (the soname pip wheels and distro packages ship); never panics.
#![allow(non_camel_case_types, non_upper_case_globals, non_snake_case)]

use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::OnceLock;

/// Result codes are plain ints here so a value from a newer NCCL is never undefined behaviour.
pub type ncclResult_t = c_int;
pub const ncclSuccess: ncclResult_t = 0;
pub const ncclUnhandledCudaError: ncclResult_t = 1;
pub const ncclSystemError: ncclResult_t = 2;
pub const ncclInternalError: ncclResult_t = 3;
pub const ncclInvalidArgument: ncclResult_t = 4;
pub const ncclInvalidUsage: ncclResult_t = 5;
pub const ncclRemoteError: ncclResult_t = 6;
pub const ncclInProgress: ncclResult_t = 7;
/// Added in NCCL 2.30.
pub const ncclTimeout: ncclResult_t = 8;

pub type ncclDataType_t = c_int;
pub const ncclInt8: ncclDataType_t = 0;
pub const ncclUint8: ncclDataType_t = 1;
pub const ncclInt32: ncclDataType_t = 2;
pub const ncclUint32: ncclDataType_t = 3;
pub const ncclInt64: ncclDataType_t = 4;
pub const ncclUint64: ncclDataType_t = 5;
pub const ncclFloat16: ncclDataType_t = 6;
pub const ncclFloat32: ncclDataType_t = 7;
pub const ncclFloat64: ncclDataType_t = 8;
pub const ncclBfloat16: ncclDataType_t = 9;

pub type ncclRedOp_t = c_int;
pub const ncclSum: ncclRedOp_t = 0;
pub const ncclProd: ncclRedOp_t = 1;
pub const ncclMax: ncclRedOp_t = 2;
pub const ncclMin: ncclRedOp_t = 3;
pub const ncclAvg: ncclRedOp_t = 4;

#[repr(C)]
pub struct ncclComm {
    _opaque: [u8; 0],
}
pub type ncclComm_t = *mut ncclComm;
pub type cudaStream_t = *mut c_void;

pub const NCCL_UNIQUE_ID_BYTES: usize = 128;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct ncclUniqueId {
    pub internal: [c_char; NCCL_UNIQUE_ID_BYTES],
}

/// NCCL_CONFIG_UNDEF_INT.
pub const NCCL_CONFIG_UNDEF_INT: c_int = c_int::MIN;
pub const NCCL_CONFIG_MAGIC: u32 = 0xcafe_beef;
/// The config version this layout is (NCCL_VERSION(2,28,0)); a newer NCCL resets the fields it
/// added after this version to "undefined", an older one reads only the prefix it knows.
pub const NCCL_CONFIG_VERSION: u32 = 22800;

/// ncclConfig_v22800, followed by zeroed room so a newer library that copies its own, larger
/// struct size never reads past our allocation.
#[repr(C)]
pub struct ncclConfig_t {
    pub size: usize,
    pub magic: u32,
    pub version: u32,
    pub blocking: c_int,
    pub cgaClusterSize: c_int,
    pub minCTAs: c_int,
    pub maxCTAs: c_int,
    pub netName: *const c_char,
    pub splitShare: c_int,
    pub trafficClass: c_int,
    pub commName: *const c_char,
    pub collnetEnable: c_int,
    pub CTAPolicy: c_int,
    pub shrinkShare: c_int,
    pub nvlsCTAs: c_int,
    pub nChannelsPerNetPeer: c_int,
    pub nvlinkCentricSched: c_int,
    pub _room: [u64; 32],
}

impl ncclConfig_t {
    /// NCCL_CONFIG_INITIALIZER, with `size` counting only the fields NCCL 2.28 defines.
    pub fn initializer() -> ncclConfig_t {
        const U: c_int = NCCL_CONFIG_UNDEF_INT;
        ncclConfig_t {
            size: std::mem::offset_of!(ncclConfig_t, _room),
            magic: NCCL_CONFIG_MAGIC,
            version: NCCL_CONFIG_VERSION,
            blocking: U,
            cgaClusterSize: U,
            minCTAs: U,
            maxCTAs: U,
            netName: std::ptr::null(),
            splitShare: U,
            trafficClass: U,
            commName: std::ptr::null(),
            collnetEnable: U,
            CTAPolicy: U,
            shrinkShare: U,
            nvlsCTAs: U,
            nChannelsPerNetPeer: U,
            nvlinkCentricSched: U,
            _room: [0; 32],
        }
    }
}

/// The library's file name as the dynamic loader looks it up.
pub const NCCL_LIB: &str = "libnccl.so.2";
/// Names an explicit library file, tried before the loader's search.
pub const NCCL_LIB_ENV: &str = "COLLBENCH_NCCL_LIB";

/// The NCCL entry points collbench calls, resolved once.
pub struct NcclLib {
    _lib: libloading::Library,
    pub path: String,
    pub ncclGetVersion: unsafe extern "C" fn(*mut c_int) -> ncclResult_t,
    pub ncclGetUniqueId: unsafe extern "C" fn(*mut ncclUniqueId) -> ncclResult_t,
    pub ncclCommInitRankConfig: unsafe extern "C" fn(
        *mut ncclComm_t,
        c_int,
        ncclUniqueId,
        c_int,
        *mut ncclConfig_t,
    ) -> ncclResult_t,
    pub ncclCommFinalize: unsafe extern "C" fn(ncclComm_t) -> ncclResult_t,
    pub ncclCommDestroy: unsafe extern "C" fn(ncclComm_t) -> ncclResult_t,
    pub ncclCommAbort: unsafe extern "C" fn(ncclComm_t) -> ncclResult_t,
    pub ncclCommGetAsyncError: unsafe extern "C" fn(ncclComm_t, *mut ncclResult_t) -> ncclResult_t,
    pub ncclGetErrorString: unsafe extern "C" fn(ncclResult_t) -> *const c_char,
    pub ncclGetLastError: unsafe extern "C" fn(ncclComm_t) -> *const c_char,
    pub ncclAllReduce: unsafe extern "C" fn(
        *const c_void,
        *mut c_void,
        usize,
        ncclDataType_t,
        ncclRedOp_t,
        ncclComm_t,
        cudaStream_t,
    ) -> ncclResult_t,
    pub ncclSend: unsafe extern "C" fn(
        *const c_void,
        usize,
        ncclDataType_t,
        c_int,
        ncclComm_t,
        cudaStream_t,
    ) -> ncclResult_t,
    pub ncclRecv: unsafe extern "C" fn(
        *mut c_void,
        usize,
        ncclDataType_t,
        c_int,
        ncclComm_t,
        cudaStream_t,
    ) -> ncclResult_t,
    pub ncclGroupStart: unsafe extern "C" fn() -> ncclResult_t,
    pub ncclGroupEnd: unsafe extern "C" fn() -> ncclResult_t,
    /// NCCL 2.28 and newer only.
    pub ncclAlltoAll: Option<
        unsafe extern "C" fn(
            *const c_void,
            *mut c_void,
            usize,
            ncclDataType_t,
            ncclComm_t,
            cudaStream_t,
        ) -> ncclResult_t,
    >,
}

// SAFETY: the table holds plain function pointers into a library that stays loaded for the
// process's life; NCCL's own entry points are thread-safe as documented.
unsafe impl Send for NcclLib {}
unsafe impl Sync for NcclLib {}

fn open() -> Result<(libloading::Library, String), String> {
    let mut tried = Vec::new();
    let explicit = std::env::var(NCCL_LIB_ENV).ok().filter(|s| !s.is_empty());
    let names: Vec<String> = match &explicit {
        Some(p) => vec![p.clone()],
        None => vec![NCCL_LIB.to_string(), "libnccl.so".to_string()],
    };
    for name in &names {
        match super::cuda::dl_open(name) {
            Ok(lib) => return Ok((lib, name.clone())),
            Err(e) => tried.push(e),
        }
    }
    let how = match explicit {
        Some(p) => format!("{NCCL_LIB_ENV}={p} could not be loaded"),
        None => format!("{NCCL_LIB} not found"),
    };
    Err(format!(
        "{how} ({}); install NCCL or point at it: LD_LIBRARY_PATH=/path/to/site-packages/nvidia/nccl/lib \
         (a pip nvidia-nccl-cu12/cu13 install) or {NCCL_LIB_ENV}=/path/to/libnccl.so.2",
        tried.first().map_or("", String::as_str)
    ))
}

fn resolve() -> Result<NcclLib, String> {
    let (lib, name) = open()?;
    macro_rules! sym {
        ($n:ident) => {
            // SAFETY: the field's type is the signature nccl.h declares for this symbol.
            *unsafe { lib.get(concat!(stringify!($n), "\0").as_bytes()) }.map_err(|_| {
                format!(
                    "{name} has no {}: collbench needs NCCL 2.14 or newer; point LD_LIBRARY_PATH at a newer libnccl.so.2",
                    stringify!($n)
                )
            })?
        };
    }
    let ncclGetVersion: unsafe extern "C" fn(*mut c_int) -> ncclResult_t = sym!(ncclGetVersion);
    let path = loaded_path(ncclGetVersion as *const c_void).unwrap_or(name.clone());
    Ok(NcclLib {
        ncclGetVersion,
        ncclGetUniqueId: sym!(ncclGetUniqueId),
        ncclCommInitRankConfig: sym!(ncclCommInitRankConfig),
        ncclCommFinalize: sym!(ncclCommFinalize),
        ncclCommDestroy: sym!(ncclCommDestroy),
        ncclCommAbort: sym!(ncclCommAbort),
        ncclCommGetAsyncError: sym!(ncclCommGetAsyncError),
        ncclGetErrorString: sym!(ncclGetErrorString),
        ncclGetLastError: sym!(ncclGetLastError),
        ncclAllReduce: sym!(ncclAllReduce),
        ncclSend: sym!(ncclSend),
        ncclRecv: sym!(ncclRecv),
        ncclGroupStart: sym!(ncclGroupStart),
        ncclGroupEnd: sym!(ncclGroupEnd),
        // SAFETY: the signature nccl.h 2.28 declares for ncclAlltoAll.
        ncclAlltoAll: unsafe { lib.get(b"ncclAlltoAll\0") }.ok().map(|s| *s),
        path,
        _lib: lib,
    })
}

/// The file the loader actually mapped for the symbol at `addr`.
fn loaded_path(addr: *const c_void) -> Option<String> {
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: addr points into a loaded object; info is a valid out-pointer.
    if unsafe { libc::dladdr(addr, &mut info) } == 0 || info.dli_fname.is_null() {
        return None;
    }
    // SAFETY: dladdr returns a NUL-terminated path owned by the loader.
    Some(
        unsafe { CStr::from_ptr(info.dli_fname) }
            .to_string_lossy()
            .into_owned(),
    )
}

/// The process-wide NCCL table, loaded on first use; the error is one line naming what is
/// missing and how to point at it.
pub fn lib() -> Result<&'static NcclLib, String> {
    static LIB: OnceLock<Result<NcclLib, String>> = OnceLock::new();
    LIB.get_or_init(resolve).as_ref().map_err(Clone::clone)
}
