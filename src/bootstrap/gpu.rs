//! Which GPU each rank drives (local rank, or `--gpu`), whether ranks share one (then each gets
//! its own NCCL_HOSTID before NCCL starts), and the NCCL unique id's trip from rank 0 (over MPI, or
//! through the controller for ranks started without mpirun).
//!
//! NCCL_HOSTID must be set before the first NCCL call of the process: NCCL reads it to decide
//! which ranks are on one host. Ranks that share a GPU must look like separate hosts, or NCCL
//! refuses them ("duplicate GPU"); collbench sets `<host>-collbench-rank<N>` where it is unset.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::World;
use crate::ffi::cuda::{self, Context};
use crate::ffi::nccl::Nccl;
use crate::ffi::nccl_sys::NCCL_UNIQUE_ID_BYTES;

pub const HOSTID_ENV: &str = "NCCL_HOSTID";

/// Loads NCCL and the driver and finds a GPU, touching no communicator: what `--backend auto`
/// asks and what `--backend nccl` needs. The error is one line naming what is missing.
pub fn probe() -> Result<Nccl, String> {
    let driver = cuda::probe_driver();
    let nccl = Nccl::load();
    match (driver, &nccl) {
        (Err(d), Err(n)) => return Err(format!("{d}; and {n}")),
        (Err(d), Ok(_)) => return Err(d),
        _ => {}
    }
    cuda::init().map_err(|e| {
        format!("no usable GPU: {e}; check nvidia-smi, CUDA_VISIBLE_DEVICES, or use --backend mpi")
    })?;
    let n = cuda::device_count().map_err(|e| e.to_string())?;
    if n == 0 {
        return Err(format!(
            "no GPU visible to CUDA (CUDA_VISIBLE_DEVICES={}); use --backend mpi",
            std::env::var("CUDA_VISIBLE_DEVICES").unwrap_or_else(|_| "unset".into())
        ));
    }
    nccl
}

/// The GPU a rank uses: `--gpu` if given, else its local rank (wrapping when ranks outnumber GPUs).
pub fn select_gpu(
    local_rank: usize,
    devices: usize,
    requested: Option<u32>,
) -> Result<u32, String> {
    if devices == 0 {
        return Err("no GPU visible to CUDA".into());
    }
    match requested {
        Some(g) if g as usize >= devices => Err(format!(
            "--gpu {g}: this host has {devices} GPU(s), numbered 0..{}; pass a smaller index",
            devices - 1
        )),
        Some(g) => Ok(g),
        None => Ok((local_rank % devices) as u32),
    }
}

/// One rank's GPU as rank 0 learns it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seat {
    pub rank: usize,
    pub hostname: String,
    pub gpu: u32,
    pub pci_bus_id: String,
    pub name: String,
    /// NCCL_HOSTID as the rank found it.
    pub hostid: Option<String>,
}

pub fn default_hostid(hostname: &str, rank: usize) -> String {
    format!("{hostname}-collbench-rank{rank}")
}

/// Rank 0's decision, sent to every rank.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sharing {
    /// Per rank: whether another rank drives the same GPU.
    pub shared: Vec<bool>,
    /// The "functional, not performance" note, when any GPU is shared.
    pub note: Option<String>,
    /// Why the run cannot start (some rank failed, or NCCL would see one host twice).
    pub error: Option<String>,
}

/// Groups ranks by (host, PCI bus id); a group of several shares a GPU and each of its ranks
/// needs a distinct NCCL_HOSTID.
pub fn plan_sharing(seats: &[Seat]) -> Sharing {
    let mut groups: BTreeMap<(&str, &str), Vec<&Seat>> = BTreeMap::new();
    for s in seats {
        groups
            .entry((s.hostname.as_str(), s.pci_bus_id.as_str()))
            .or_default()
            .push(s);
    }
    let mut shared = vec![false; seats.iter().map(|s| s.rank + 1).max().unwrap_or(0)];
    let mut parts = Vec::new();
    for ((host, bus), g) in &groups {
        if g.len() < 2 {
            continue;
        }
        let mut ids: BTreeMap<String, usize> = BTreeMap::new();
        for s in g {
            shared[s.rank] = true;
            let id = s
                .hostid
                .clone()
                .unwrap_or_else(|| default_hostid(&s.hostname, s.rank));
            if let Some(other) = ids.insert(id.clone(), s.rank) {
                return Sharing {
                    shared,
                    note: None,
                    error: Some(format!(
                        "ranks {other} and {} share GPU {} [{bus}] on {host} with the same {HOSTID_ENV}={id}; \
                         give each rank its own {HOSTID_ENV}, or leave it unset so collbench sets one per rank",
                        s.rank, s.gpu
                    )),
                };
            }
        }
        let ranks: Vec<String> = g.iter().map(|s| s.rank.to_string()).collect();
        parts.push(format!(
            "{host} GPU {} [{bus}]: ranks {}",
            g[0].gpu,
            ranks.join(",")
        ));
    }
    let note = (!parts.is_empty()).then(|| {
        format!(
            "functional, not performance: ranks share a GPU ({}); each rank has its own {HOSTID_ENV}, \
             so NCCL treats them as separate hosts (socket transport) and the GPU time-slices between \
             them: times measure that, not the GPU or the fabric",
            parts.join("; ")
        )
    });
    Sharing {
        shared,
        note,
        error: None,
    }
}

/// What a rank has once its GPU is chosen and the unique id has arrived.
pub struct GpuSetup {
    pub nccl: Nccl,
    pub ctx: Context,
    pub seat: Seat,
    /// Every rank's seat, on rank 0.
    pub seats: Option<Vec<Seat>>,
    pub sharing: Sharing,
    pub unique_id: [u8; NCCL_UNIQUE_ID_BYTES],
}

fn open_seat(world: &World, requested: Option<u32>) -> Result<(Nccl, Context, Seat), String> {
    let nccl = probe()?;
    let devices = cuda::device_count().map_err(|e| e.to_string())?;
    let gpu = select_gpu(world.local_rank, devices, requested)?;
    let ctx = Context::open(gpu).map_err(|e| format!("opening GPU {gpu}: {e}"))?;
    let seat = Seat {
        rank: world.rank,
        hostname: world.hostname.clone(),
        gpu,
        pci_bus_id: ctx.info.pci_bus_id.clone(),
        name: ctx.info.name.clone(),
        hostid: std::env::var(HOSTID_ENV).ok().filter(|s| !s.is_empty()),
    };
    Ok((nccl, ctx, seat))
}

/// Every rank picks its GPU; rank 0 checks the seats and decides on sharing; each sharing rank
/// gets its NCCL_HOSTID; rank 0 makes the unique id and broadcasts it. Every rank takes part in
/// every exchange, so a failure on one rank ends all of them with the same message.
pub fn setup(world: &World, requested: Option<u32>) -> Result<GpuSetup, String> {
    let group = world.group();
    let mpi_err = |e: super::group::GroupError| e.to_string();
    let local = open_seat(world, requested);
    let mine: Result<Seat, String> = match &local {
        Ok((_, _, s)) => Ok(s.clone()),
        Err(e) => Err(format!("rank {} on {}: {e}", world.rank, world.hostname)),
    };
    let payload = serde_json::to_vec(&mine).map_err(|e| e.to_string())?;
    let gathered = group.gather_bytes(0, &payload).map_err(mpi_err)?;
    let mut seats = None;
    let mut decision = Vec::new();
    if let Some(all) = gathered {
        let parsed: Vec<Result<Seat, String>> = all
            .iter()
            .map(|b| serde_json::from_slice(b).unwrap_or_else(|e| Err(e.to_string())))
            .collect();
        let sharing = match parsed.iter().find_map(|r| r.as_ref().err()) {
            Some(e) => Sharing {
                error: Some(e.clone()),
                ..Sharing::default()
            },
            None => {
                let s: Vec<Seat> = parsed.into_iter().filter_map(Result::ok).collect();
                let plan = plan_sharing(&s);
                seats = Some(s);
                plan
            }
        };
        decision = serde_json::to_vec(&sharing).map_err(|e| e.to_string())?;
    }
    group.bcast_bytes(0, &mut decision).map_err(mpi_err)?;
    let sharing: Sharing = serde_json::from_slice(&decision).map_err(|e| e.to_string())?;
    if let Some(e) = &sharing.error {
        return Err(e.clone());
    }
    let (nccl, ctx, seat) = local?;
    if sharing.shared.get(world.rank).copied().unwrap_or(false) && seat.hostid.is_none() {
        // Before any NCCL call in this process (NCCL reads it at init).
        std::env::set_var(HOSTID_ENV, default_hostid(&seat.hostname, seat.rank));
    }

    // Byte 0: 1 when rank 0 made an id; then the id, or rank 0's error text.
    let mut id_msg = Vec::new();
    if world.is_root() {
        match nccl.unique_id() {
            Ok(id) => {
                id_msg.push(1);
                id_msg.extend_from_slice(&id);
            }
            Err(e) => {
                id_msg.push(0);
                id_msg.extend_from_slice(format!("rank 0: {e}").as_bytes());
            }
        }
    }
    group.bcast_bytes(0, &mut id_msg).map_err(mpi_err)?;
    match id_msg.split_first() {
        Some((1, id)) if id.len() == NCCL_UNIQUE_ID_BYTES => {
            let mut unique_id = [0u8; NCCL_UNIQUE_ID_BYTES];
            unique_id.copy_from_slice(id);
            Ok(GpuSetup {
                nccl,
                ctx,
                seat,
                seats,
                sharing,
                unique_id,
            })
        }
        Some((_, text)) => Err(String::from_utf8_lossy(text).into_owned()),
        None => Err("no NCCL unique id arrived from rank 0".into()),
    }
}

/// Whether every rank reached the same point without error; the first failing rank's message
/// otherwise (each rank passes its own result).
pub fn agree(world: &World, mine: Result<(), String>) -> Result<(), String> {
    let group = world.group();
    let failed = group
        .allreduce_sum_u64(mine.is_err() as u64)
        .map_err(|e| e.to_string())?;
    if failed == 0 {
        return Ok(());
    }
    let text = match &mine {
        Err(e) => format!("rank {}: {e}", world.rank),
        Ok(()) => String::new(),
    };
    let all = group
        .gather_bytes(0, text.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut first = all
        .and_then(|v| v.into_iter().find(|b| !b.is_empty()))
        .unwrap_or_default();
    group
        .bcast_bytes(0, &mut first)
        .map_err(|e| e.to_string())?;
    Err(String::from_utf8_lossy(&first).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seat(rank: usize, host: &str, gpu: u32, hostid: Option<&str>) -> Seat {
        Seat {
            rank,
            hostname: host.into(),
            gpu,
            pci_bus_id: format!("0000:{:02x}:00.0", 0x19 + gpu),
            name: "NVIDIA H200".into(),
            hostid: hostid.map(str::to_string),
        }
    }

    #[test]
    fn local_rank_picks_the_gpu_and_wraps_when_ranks_outnumber_gpus() {
        assert_eq!(select_gpu(0, 8, None), Ok(0));
        assert_eq!(select_gpu(7, 8, None), Ok(7));
        assert_eq!(select_gpu(3, 1, None), Ok(0));
        assert_eq!(select_gpu(5, 4, None), Ok(1));
        assert_eq!(select_gpu(5, 4, Some(2)), Ok(2));
        let e = select_gpu(0, 2, Some(2)).unwrap_err();
        assert!(e.starts_with("--gpu 2:") && e.contains("0..1"), "{e}");
        assert!(select_gpu(0, 0, None).is_err());
    }

    #[test]
    fn one_rank_per_gpu_shares_nothing() {
        let s = plan_sharing(&[
            seat(0, "a", 0, None),
            seat(1, "a", 1, None),
            seat(2, "b", 0, None),
        ]);
        assert_eq!(s.shared, vec![false, false, false]);
        assert_eq!((s.note, s.error), (None, None));
    }

    #[test]
    fn ranks_on_one_gpu_are_labelled_functional_only() {
        let seats: Vec<Seat> = (0..4).map(|r| seat(r, "h200", 0, None)).collect();
        let s = plan_sharing(&seats);
        assert_eq!(s.shared, vec![true; 4]);
        let note = s.note.unwrap();
        assert!(note.starts_with("functional, not performance"), "{note}");
        assert!(
            note.contains("h200 GPU 0 [0000:19:00.0]: ranks 0,1,2,3"),
            "{note}"
        );
        assert_eq!(s.error, None);
    }

    #[test]
    fn the_same_hostid_on_ranks_sharing_a_gpu_is_refused() {
        let s = plan_sharing(&[seat(0, "h", 0, Some("x")), seat(1, "h", 0, Some("x"))]);
        let e = s.error.unwrap();
        assert!(
            e.contains("ranks 0 and 1 share GPU 0") && e.contains("NCCL_HOSTID=x"),
            "{e}"
        );
        // Distinct ids (explicit or collbench's own) are fine.
        let s = plan_sharing(&[seat(0, "h", 0, Some("x")), seat(1, "h", 0, None)]);
        assert_eq!(s.error, None);
    }
}
