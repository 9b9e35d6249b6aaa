//! Result layers over C libraries: every call returns a `Result` whose error names the call and
//! the library's own error name, so nothing fails silently and nothing panics across FFI.

pub mod cuda;
pub mod mpi;
pub mod nccl;
pub mod nccl_sys;
