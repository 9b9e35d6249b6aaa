//! The host-side collectives every rank takes part in (agreements, result gathers, the barrier):
//! over MPI when mpirun started the ranks, through the controller when collbench started them.

use crate::control::proto::{ExchangeOp, Reduce};
use crate::control::rendezvous::Rendezvous;
use crate::ffi::mpi::{self as mpic, MPI_Comm, MpiError};

/// How the ranks of this run reach each other on the host side.
#[derive(Clone)]
pub enum Group {
    Mpi(MPI_Comm),
    Controller(Rendezvous),
}

#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error("{0}")]
    Mpi(#[from] MpiError),
    #[error("rendezvous through the controller: {0}")]
    Controller(String),
}

/// Which end of each element a reduction keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Extreme {
    Max,
    Min,
}

impl Group {
    /// The MPI communicator, where the ranks have one.
    pub fn mpi(&self) -> Option<MPI_Comm> {
        match self {
            Group::Mpi(c) => Some(*c),
            Group::Controller(_) => None,
        }
    }

    pub fn allreduce_sum_u64(&self, value: u64) -> Result<u64, GroupError> {
        match self {
            Group::Mpi(c) => Ok(mpic::allreduce_sum_u64(*c, value)?),
            Group::Controller(r) => {
                let all = r
                    .reduce(None, Reduce::Sum, &[value])
                    .map_err(GroupError::Controller)?
                    .unwrap_or_default();
                all.first()
                    .copied()
                    .ok_or_else(|| GroupError::Controller("an empty sum came back".into()))
            }
        }
    }

    /// Every rank's bytes, in rank order, on `root`; None elsewhere.
    pub fn gather_bytes(
        &self,
        root: usize,
        bytes: &[u8],
    ) -> Result<Option<Vec<Vec<u8>>>, GroupError> {
        match self {
            Group::Mpi(c) => Ok(mpic::gather_bytes(*c, root, bytes)?),
            Group::Controller(r) => r
                .exchange(ExchangeOp::Gather { root }, bytes)
                .map_err(GroupError::Controller),
        }
    }

    /// `root`'s bytes on every rank (`bytes` is replaced on the others).
    pub fn bcast_bytes(&self, root: usize, bytes: &mut Vec<u8>) -> Result<(), GroupError> {
        match self {
            Group::Mpi(c) => Ok(mpic::bcast_bytes(*c, root, bytes)?),
            Group::Controller(r) => {
                let mine = if r.rank == root {
                    bytes.as_slice()
                } else {
                    &[]
                };
                let answer = r
                    .exchange(ExchangeOp::Bcast { root }, mine)
                    .map_err(GroupError::Controller)?;
                *bytes = answer
                    .and_then(|mut a| a.pop())
                    .ok_or_else(|| GroupError::Controller("an empty broadcast came back".into()))?;
                Ok(())
            }
        }
    }

    /// The element-wise maximum or minimum of every rank's `values`, on `root`.
    pub fn reduce_u64(
        &self,
        root: usize,
        values: &[u64],
        extreme: Extreme,
    ) -> Result<Option<Vec<u64>>, GroupError> {
        match self {
            Group::Mpi(c) => {
                // SAFETY: reading MPI's predefined op handles.
                let op = unsafe {
                    match extreme {
                        Extreme::Max => mpi::ffi::RSMPI_MAX,
                        Extreme::Min => mpi::ffi::RSMPI_MIN,
                    }
                };
                Ok(mpic::reduce_u64(*c, root, values, op)?)
            }
            Group::Controller(r) => {
                let reduce = match extreme {
                    Extreme::Max => Reduce::Max,
                    Extreme::Min => Reduce::Min,
                };
                r.reduce(Some(root), reduce, values)
                    .map_err(GroupError::Controller)
            }
        }
    }

    pub fn barrier(&self) -> Result<(), GroupError> {
        match self {
            Group::Mpi(c) => Ok(mpic::barrier(*c)?),
            Group::Controller(r) => r
                .exchange(ExchangeOp::AllGather, &[])
                .map(|_| ())
                .map_err(GroupError::Controller),
        }
    }
}
