//! Compiles the one-line C shim that exports MPI_IN_PLACE (a macro mpi-sys does not bind).

fn main() {
    println!("cargo:rerun-if-changed=csrc/mpi_shim.c");
    println!("cargo:rerun-if-env-changed=MPICC");
    let mpicc = std::env::var("MPICC").unwrap_or_else(|_| "mpicc".to_string());
    cc::Build::new()
        .compiler(mpicc)
        .file("csrc/mpi_shim.c")
        .compile("collbench_mpi_shim");
}
