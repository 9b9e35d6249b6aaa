//! Who am I: rank, world, local rank and host, from the MPI world or collbench's own launcher's
//! environment; plus that launcher (`local`), which starts ranks with mpirun or one by one.

pub mod gpu;
pub mod group;
pub mod local;

use std::ffi::CStr;

use serde::Serialize;

use crate::ffi::mpi::{self as mpic, MPI_Comm, MpiError};

/// The launcher that started this process, as its environment tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Launcher {
    OpenMpi,
    Slurm,
    Pmi,
    TorchStyle,
    /// `collbench local` itself, one process per rank (NCCL without mpirun).
    Collbench,
    None,
}

/// The variables `collbench local` gives each rank it starts without mpirun.
pub const ENV_RANK: &str = "COLLBENCH_RANK";
pub const ENV_WORLD_SIZE: &str = "COLLBENCH_WORLD_SIZE";
pub const ENV_LOCAL_RANK: &str = "COLLBENCH_LOCAL_RANK";
pub const ENV_LOCAL_SIZE: &str = "COLLBENCH_LOCAL_SIZE";

/// What the environment says before MPI is started (used to validate input and to print once).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LauncherEnv {
    pub launcher: Launcher,
    pub rank: Option<usize>,
    pub world: Option<usize>,
    pub local_rank: Option<usize>,
    pub local_size: Option<usize>,
}

impl LauncherEnv {
    pub fn from_env() -> Self {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads OpenMPI, Slurm, PMI and torchrun-style variables, first match wins.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Self {
        let num = |k: &str| get(k).and_then(|v| v.trim().parse::<usize>().ok());
        let sets: [(Launcher, [&str; 4]); 5] = [
            (
                Launcher::Collbench,
                [ENV_RANK, ENV_WORLD_SIZE, ENV_LOCAL_RANK, ENV_LOCAL_SIZE],
            ),
            (
                Launcher::OpenMpi,
                [
                    "OMPI_COMM_WORLD_RANK",
                    "OMPI_COMM_WORLD_SIZE",
                    "OMPI_COMM_WORLD_LOCAL_RANK",
                    "OMPI_COMM_WORLD_LOCAL_SIZE",
                ],
            ),
            (
                Launcher::Slurm,
                [
                    "SLURM_PROCID",
                    "SLURM_NTASKS",
                    "SLURM_LOCALID",
                    "SLURM_NTASKS_PER_NODE",
                ],
            ),
            (
                Launcher::Pmi,
                ["PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "MPI_LOCALNRANKS"],
            ),
            (
                Launcher::TorchStyle,
                ["RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"],
            ),
        ];
        for (launcher, [r, w, lr, ls]) in sets {
            if let (Some(rank), Some(world)) = (num(r), num(w)) {
                return LauncherEnv {
                    launcher,
                    rank: Some(rank),
                    world: Some(world),
                    local_rank: num(lr),
                    local_size: num(ls),
                };
            }
        }
        LauncherEnv {
            launcher: Launcher::None,
            rank: None,
            world: None,
            local_rank: None,
            local_size: None,
        }
    }

    /// Whether the ranks have no MPI world and meet through the controller instead: collbench
    /// started them, or a launcher that is not MPI's did (torchrun-style variables only).
    pub fn without_mpi(&self) -> bool {
        match self.launcher {
            Launcher::Collbench => true,
            Launcher::TorchStyle => self.world.unwrap_or(1) > 1,
            _ => false,
        }
    }

    /// Whether this process should print job-wide messages (rank 0, or not launched at all).
    pub fn is_leader(&self) -> bool {
        self.rank.unwrap_or(0) == 0
    }
}

/// One rank as the results record it.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct RankInfo {
    pub rank: usize,
    pub local_rank: usize,
    pub hostname: String,
    pub pid: u32,
    /// The GPU this rank drives (nccl backend only): CUDA ordinal, PCI bus id, product name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pci_bus_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_name: Option<String>,
}

/// The ranks of this run and this rank's place among them. Dropping it finalizes MPI, where the
/// world is an MPI one.
pub struct World {
    _universe: Option<mpi::environment::Universe>,
    group: group::Group,
    pub rank: usize,
    pub size: usize,
    pub local_rank: usize,
    pub local_size: usize,
    pub hostname: String,
    pub launcher: Launcher,
}

impl World {
    /// Starts MPI (a world of 1 when no launcher is present) with errors returned, not fatal.
    ///
    /// Thread level SINGLE, as MPI_Init (IMB, nccl-tests): only this thread ever calls MPI (the
    /// watchdog, agent and relay threads never do). Open MPI turns its internal locking and its
    /// multi-threaded request wait on for any level above SINGLE, which cost 0.1-0.2 us per
    /// all-reduce on 2 bound ranks and up to 1.5x at 8 B on 4 oversubscribed ones (2 vCPUs).
    pub fn init(env: LauncherEnv) -> Result<World, MpiError> {
        let (universe, _threading) =
            mpi::initialize_with_threading(mpi::Threading::Single).ok_or(MpiError {
                call: "MPI_Init_thread",
                code: -1,
                class: -1,
                message: "MPI was already initialized".into(),
            })?;
        // SAFETY: reading the predefined world handle after MPI_Init.
        let comm = unsafe { mpi::ffi::RSMPI_COMM_WORLD };
        mpic::set_errors_return(comm)?;
        let rank = mpic::comm_rank(comm)?;
        let size = mpic::comm_size(comm)?;
        let hostname = hostname();
        // Local rank: ranks sharing this host, counted in rank order.
        let names = mpic::gather_bytes(comm, 0, hostname.as_bytes())?;
        let (local_rank, local_size) = local_position(comm, rank, names)?;
        Ok(World {
            _universe: Some(universe),
            group: group::Group::Mpi(comm),
            rank,
            size,
            local_rank: env.local_rank.unwrap_or(local_rank),
            local_size: env.local_size.unwrap_or(local_size),
            hostname,
            launcher: env.launcher,
        })
    }

    /// Ends this rank's part without MPI_Finalize: Open MPI's finalize waits at a fence for
    /// every rank, and after a failure a peer may never come (stopped, or stuck in a collective
    /// until its own deadline). The launcher sees the rank exit and tears the job down.
    pub fn leave_without_finalize(mut self) {
        if let Some(u) = self._universe.take() {
            std::mem::forget(u);
        }
    }

    /// A world of ranks collbench started itself, which meet through the controller.
    pub fn without_mpi(
        env: LauncherEnv,
        rendezvous: crate::control::rendezvous::Rendezvous,
    ) -> World {
        World {
            _universe: None,
            rank: rendezvous.rank,
            size: rendezvous.world,
            local_rank: env.local_rank.unwrap_or(0),
            local_size: env.local_size.unwrap_or(1),
            hostname: hostname(),
            launcher: env.launcher,
            group: group::Group::Controller(rendezvous),
        }
    }

    pub fn group(&self) -> &group::Group {
        &self.group
    }

    pub fn is_root(&self) -> bool {
        self.rank == 0
    }

    pub fn info(&self) -> RankInfo {
        RankInfo {
            rank: self.rank,
            local_rank: self.local_rank,
            hostname: self.hostname.clone(),
            pid: std::process::id(),
            gpu: None,
            pci_bus_id: None,
            gpu_name: None,
        }
    }
}

/// Rank 0 numbers ranks per host from the gathered host names and scatters the answer back.
fn local_position(
    comm: MPI_Comm,
    rank: usize,
    names: Option<Vec<Vec<u8>>>,
) -> Result<(usize, usize), MpiError> {
    let size = mpic::comm_size(comm)?;
    let mut mine = vec![0u64; 2 * size];
    if let Some(names) = names {
        for (r, name) in names.iter().enumerate() {
            let before = names[..r].iter().filter(|n| *n == name).count();
            let total = names.iter().filter(|n| *n == name).count();
            mine[2 * r] = before as u64;
            mine[2 * r + 1] = total as u64;
        }
    }
    // Broadcast via a sum: only rank 0 contributes non-zero values.
    let mut all = vec![0u64; 2 * size];
    // SAFETY: both buffers hold 2*size u64.
    unsafe {
        mpic::allreduce(
            mine.as_ptr() as *const _,
            all.as_mut_ptr() as *mut _,
            (2 * size) as i32,
            mpi::ffi::RSMPI_UINT64_T,
            mpi::ffi::RSMPI_SUM,
            comm,
        )?;
    }
    Ok((all[2 * rank] as usize, all[2 * rank + 1] as usize))
}

pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: buf is writable for its length; gethostname NUL-terminates within it on success.
    let ok =
        unsafe { libc::gethostname(buf.as_mut_ptr() as *mut libc::c_char, buf.len() - 1) } == 0;
    if ok {
        if let Ok(c) = CStr::from_bytes_until_nul(&buf) {
            return c.to_string_lossy().into_owned();
        }
    }
    "unknown-host".into()
}

/// Bytes the kernel reports as available for new allocations (MemAvailable), if readable.
pub fn mem_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_mem_available(&text)
}

fn parse_mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> LauncherEnv {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        LauncherEnv::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn reads_each_launcher() {
        let o = env(&[
            ("OMPI_COMM_WORLD_RANK", "3"),
            ("OMPI_COMM_WORLD_SIZE", "8"),
            ("OMPI_COMM_WORLD_LOCAL_RANK", "1"),
            ("OMPI_COMM_WORLD_LOCAL_SIZE", "4"),
        ]);
        assert_eq!(o.launcher, Launcher::OpenMpi);
        assert_eq!(
            (o.rank, o.world, o.local_rank, o.local_size),
            (Some(3), Some(8), Some(1), Some(4))
        );
        assert!(!o.is_leader());
        let s = env(&[
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "16"),
            ("SLURM_LOCALID", "0"),
        ]);
        assert_eq!(s.launcher, Launcher::Slurm);
        assert!(s.is_leader());
        let t = env(&[("RANK", "2"), ("WORLD_SIZE", "4"), ("LOCAL_RANK", "2")]);
        assert_eq!(t.launcher, Launcher::TorchStyle);
        let n = env(&[("RANK", "x")]);
        assert_eq!(n.launcher, Launcher::None);
        assert!(n.is_leader());
    }

    #[test]
    fn parses_meminfo() {
        let m = "MemTotal:       24000000 kB\nMemFree:  1 kB\nMemAvailable:   2048 kB\n";
        assert_eq!(parse_mem_available(m), Some(2048 * 1024));
        assert_eq!(parse_mem_available("nothing"), None);
    }
}
