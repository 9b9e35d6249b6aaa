//! Collectives over the control connection, for ranks with no MPI world (collbench started them
//! itself for NCCL, or a non-MPI launcher did): the agent's side here, the controller's in `serve`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use base64::Engine;

use super::agent::{self, Shared};
use super::proto::{ExchangeOp, Reduce, ToController, MAX_FRAME};

/// The largest part one rank may contribute to one exchange (its base64 must fit a frame).
pub const MAX_PART: usize = MAX_FRAME / 2;
/// u64s per reduce exchange; longer arrays go in several.
const REDUCE_CHUNK: usize = MAX_PART / 8;

type Answer = Result<Vec<Vec<u8>>, String>;

/// The exchanges this rank waits on, by sequence number.
#[derive(Default)]
pub struct Pending {
    next: AtomicU64,
    waiting: Mutex<BTreeMap<u64, mpsc::SyncSender<Answer>>>,
    closed: Mutex<Option<String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Pending {
    /// Delivers the controller's answer to `seq` (an unknown seq is ignored).
    pub fn answer(&self, seq: u64, parts: Vec<String>, error: Option<String>) {
        let Some(tx) = lock(&self.waiting).remove(&seq) else {
            return;
        };
        let answer = match error {
            Some(e) => Err(e),
            None => parts
                .iter()
                .map(|p| base64::engine::general_purpose::STANDARD.decode(p))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("the controller's answer is not base64: {e}")),
        };
        let _ = tx.send(answer);
    }

    /// Fails every exchange waiting now or started later: the controller is gone.
    pub fn close(&self, why: &str) {
        *lock(&self.closed) = Some(why.to_string());
        for (_, tx) in std::mem::take(&mut *lock(&self.waiting)) {
            let _ = tx.send(Err(why.to_string()));
        }
    }
}

/// A rank's handle on the rendezvous: the same sequence of calls on every rank makes a collective.
#[derive(Clone)]
pub struct Rendezvous {
    shared: Arc<Shared>,
    pub rank: usize,
    pub world: usize,
}

impl Rendezvous {
    pub fn new(shared: Arc<Shared>) -> Rendezvous {
        let (rank, world) = (shared.identity.rank, shared.identity.world_size);
        Rendezvous {
            shared,
            rank,
            world,
        }
    }

    /// Contributes `data` to the next exchange; returns the answer where this rank gets one.
    pub fn exchange(&self, op: ExchangeOp, data: &[u8]) -> Result<Option<Vec<Vec<u8>>>, String> {
        if data.len() > MAX_PART {
            return Err(format!(
                "a part of {} bytes is over the rendezvous limit of {MAX_PART} bytes",
                data.len()
            ));
        }
        let pending = &self.shared.rendezvous;
        let seq = pending.next.fetch_add(1, Ordering::AcqRel);
        let wanted = op.answers(self.rank);
        let rx = wanted.then(|| {
            let (tx, rx) = mpsc::sync_channel(1);
            lock(&pending.waiting).insert(seq, tx);
            rx
        });
        if let Some(why) = lock(&pending.closed).clone() {
            lock(&pending.waiting).remove(&seq);
            return Err(why);
        }
        let msg = ToController::Exchange {
            seq,
            op,
            data: base64::engine::general_purpose::STANDARD.encode(data),
        };
        if !agent::try_send(&self.shared, &msg) {
            lock(&pending.waiting).remove(&seq);
            return Err("the connection to the controller is closed".into());
        }
        match rx {
            None => Ok(None),
            Some(rx) => match rx.recv() {
                Ok(answer) => answer.map(Some),
                Err(_) => Err("the agent stopped before the controller answered".into()),
            },
        }
    }

    /// Element-wise reduction of `values` (the same length on every rank), in frame-sized chunks.
    pub fn reduce(
        &self,
        root: Option<usize>,
        reduce: Reduce,
        values: &[u64],
    ) -> Result<Option<Vec<u64>>, String> {
        let mut out =
            (root.is_none_or(|r| r == self.rank)).then(|| Vec::with_capacity(values.len()));
        let mut chunks: Vec<&[u64]> = values.chunks(REDUCE_CHUNK).collect();
        if chunks.is_empty() {
            chunks.push(&[]);
        }
        for chunk in chunks {
            let bytes: Vec<u8> = chunk.iter().flat_map(|v| v.to_le_bytes()).collect();
            let answer = self.exchange(ExchangeOp::Reduce { root, reduce }, &bytes)?;
            if let (Some(out), Some(parts)) = (out.as_mut(), answer) {
                let part = parts
                    .first()
                    .ok_or("the controller's reduce answer is empty")?;
                out.extend(u64s(part)?);
            }
        }
        Ok(out)
    }
}

/// Little-endian u64s from bytes whose length is a multiple of 8.
pub fn u64s(bytes: &[u8]) -> Result<Vec<u64>, String> {
    if bytes.len() % 8 != 0 {
        return Err(format!("{} bytes are not whole u64s", bytes.len()));
    }
    Ok(bytes
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect())
}

/// The controller's side: combines the parts of one exchange once every rank gave its own.
pub fn combine(op: ExchangeOp, parts: &[Vec<u8>]) -> Result<Vec<Vec<u8>>, String> {
    match op {
        ExchangeOp::AllGather | ExchangeOp::Gather { .. } => Ok(parts.to_vec()),
        ExchangeOp::Bcast { root } => parts
            .get(root)
            .map(|p| vec![p.clone()])
            .ok_or_else(|| format!("bcast root {root} is not a rank")),
        ExchangeOp::Reduce { reduce, .. } => {
            let mut acc: Option<Vec<u64>> = None;
            for (rank, p) in parts.iter().enumerate() {
                let v = u64s(p).map_err(|e| format!("rank {rank}'s reduce part: {e}"))?;
                acc = Some(match acc {
                    None => v,
                    Some(a) if a.len() != v.len() => {
                        return Err(format!(
                            "reduce parts differ in length: {} u64s, and {} from rank {rank}",
                            a.len(),
                            v.len()
                        ))
                    }
                    Some(a) => a
                        .iter()
                        .zip(&v)
                        .map(|(&x, &y)| match reduce {
                            Reduce::Sum => x.wrapping_add(y),
                            Reduce::Max => x.max(y),
                            Reduce::Min => x.min(y),
                        })
                        .collect(),
                });
            }
            let bytes = acc
                .unwrap_or_default()
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect();
            Ok(vec![bytes])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn le(v: &[u64]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn reduces_element_wise() {
        let parts = vec![le(&[1, 9, 3]), le(&[4, 2, 6]), le(&[0, 5, 8])];
        let op = |reduce| ExchangeOp::Reduce { root: None, reduce };
        let got = |reduce| u64s(&combine(op(reduce), &parts).unwrap()[0]).unwrap();
        assert_eq!(got(Reduce::Sum), [5, 16, 17]);
        assert_eq!(got(Reduce::Max), [4, 9, 8]);
        assert_eq!(got(Reduce::Min), [0, 2, 3]);
    }

    #[test]
    fn refuses_uneven_parts() {
        let parts = vec![le(&[1, 2]), le(&[1])];
        let op = ExchangeOp::Reduce {
            root: Some(0),
            reduce: Reduce::Sum,
        };
        assert!(combine(op, &parts).unwrap_err().contains("rank 1"));
        assert!(combine(op, &[vec![1, 2, 3]])
            .unwrap_err()
            .contains("whole u64s"));
    }

    #[test]
    fn bcast_and_gather_pick_their_parts() {
        let parts = vec![b"a".to_vec(), b"bb".to_vec()];
        assert_eq!(
            combine(ExchangeOp::Bcast { root: 1 }, &parts).unwrap(),
            [b"bb".to_vec()]
        );
        assert_eq!(
            combine(ExchangeOp::Gather { root: 0 }, &parts).unwrap(),
            parts
        );
        assert!(combine(ExchangeOp::Bcast { root: 2 }, &parts).is_err());
        assert!(ExchangeOp::Gather { root: 1 }.answers(1));
        assert!(!ExchangeOp::Gather { root: 1 }.answers(0));
    }
}
