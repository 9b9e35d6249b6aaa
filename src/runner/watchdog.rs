//! A deadline on every blocking call: the timed loop bumps a counter per call (one relaxed
//! store); a thread ends the rank with a report when the counter stops moving for too long.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::plan::{Collective, Placement};

/// The call a deadline guards: op, bytes, placement.
pub type CallPoint = (Collective, u64, Placement);

struct Shared {
    progress: AtomicU64,
    armed: AtomicBool,
    stop: AtomicBool,
    activity: Mutex<(String, Option<CallPoint>)>,
    iteration: AtomicU64,
}

pub struct Watchdog {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// Lets a wait that polls (and enforces its own deadline) tell the watchdog it is alive.
#[derive(Clone)]
pub struct Progress(Arc<Shared>);

impl Default for Progress {
    fn default() -> Progress {
        Progress::new()
    }
}

impl Progress {
    /// Counters for a watchdog started later (`Watchdog::start_on`).
    pub fn new() -> Progress {
        Progress(Arc::new(Shared {
            progress: AtomicU64::new(0),
            armed: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            activity: Mutex::new((String::new(), None)),
            iteration: AtomicU64::new(0),
        }))
    }

    #[inline]
    pub fn keepalive(&self) {
        self.0.progress.fetch_add(1, Ordering::Relaxed);
    }

    /// Where the rank is now, for heartbeats: calls done so far, the phase, the call, the iteration.
    pub fn snapshot(&self) -> Snapshot {
        let (activity, point) = self
            .0
            .activity
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        Snapshot {
            ticks: self.0.progress.load(Ordering::Relaxed),
            armed: self.0.armed.load(Ordering::Acquire),
            activity,
            point,
            iteration: self.0.iteration.load(Ordering::Relaxed),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Snapshot {
    pub ticks: u64,
    /// Whether a blocking phase is in progress (false between phases and after the sweep).
    pub armed: bool,
    pub activity: String,
    pub point: Option<CallPoint>,
    pub iteration: u64,
}

/// What the watchdog does when a deadline passes (the default ends the process).
pub type OnExpiry = Box<dyn Fn(&str) + Send>;

impl Watchdog {
    /// Starts the watch thread; `None` timeout gives a watchdog that never fires.
    pub fn start(rank: usize, timeout: Option<Duration>, on_expiry: OnExpiry) -> Watchdog {
        Watchdog::start_on(Progress::new(), rank, timeout, on_expiry)
    }

    /// Starts the watch thread on counters already handed out (to an agent started earlier).
    pub fn start_on(
        progress: Progress,
        rank: usize,
        timeout: Option<Duration>,
        on_expiry: OnExpiry,
    ) -> Watchdog {
        let shared = progress.0;
        let thread = timeout.map(|timeout| {
            let s = shared.clone();
            std::thread::Builder::new()
                .name("collbench-watchdog".into())
                .spawn(move || watch(rank, timeout, &s, on_expiry))
                .expect("spawn watchdog thread")
        });
        Watchdog { shared, thread }
    }

    /// Arms the deadline for a blocking phase described by `what`.
    pub fn arm(&self, what: &str, point: Option<CallPoint>) {
        *self
            .shared
            .activity
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = (what.to_string(), point);
        self.shared.iteration.store(0, Ordering::Relaxed);
        self.shared.progress.fetch_add(1, Ordering::Relaxed);
        self.shared.armed.store(true, Ordering::Release);
    }

    /// One call finished; the next one gets a fresh deadline.
    #[inline(always)]
    pub fn tick(&self, iteration: u64) {
        self.shared.iteration.store(iteration, Ordering::Relaxed);
        self.shared.progress.fetch_add(1, Ordering::Relaxed);
    }

    pub fn progress(&self) -> Progress {
        Progress(self.shared.clone())
    }

    pub fn disarm(&self) {
        self.shared.armed.store(false, Ordering::Release);
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn watch(rank: usize, timeout: Duration, s: &Shared, on_expiry: OnExpiry) {
    let poll = (timeout / 20).clamp(Duration::from_millis(5), Duration::from_millis(100));
    let mut last = s.progress.load(Ordering::Relaxed);
    let mut since = Instant::now();
    while !s.stop.load(Ordering::Acquire) {
        std::thread::sleep(poll);
        let now = s.progress.load(Ordering::Relaxed);
        if now != last || !s.armed.load(Ordering::Acquire) {
            last = now;
            since = Instant::now();
            continue;
        }
        if since.elapsed() >= timeout {
            let (what, point) = s.activity.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let where_ = match point {
                Some((op, size, placement)) => format!(
                    " ({} {} B {} iteration {})",
                    op.name(),
                    size,
                    placement.label(),
                    s.iteration.load(Ordering::Relaxed)
                ),
                None => String::new(),
            };
            on_expiry(&format!(
                "rank {rank}: {what}{where_} did not complete within {} (watchdog deadline, --timeout)",
                humantime::format_duration(timeout)
            ));
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn fires_when_progress_stops_and_names_the_call() {
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        let w = Watchdog::start(
            3,
            Some(Duration::from_millis(100)),
            Box::new(move |m| tx.lock().unwrap().send(m.to_string()).unwrap()),
        );
        w.arm(
            "timed loop",
            Some((Collective::AllReduce, 1024, Placement::InPlace)),
        );
        w.tick(5);
        let msg = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(msg.contains("rank 3"), "{msg}");
        assert!(
            msg.contains("all_reduce 1024 B in-place iteration 5"),
            "{msg}"
        );
    }

    #[test]
    fn quiet_while_progressing_or_disarmed() {
        let (tx, rx) = mpsc::channel::<String>();
        let tx = Mutex::new(tx);
        let w = Watchdog::start(
            0,
            Some(Duration::from_millis(200)),
            Box::new(move |m| tx.lock().unwrap().send(m.to_string()).unwrap()),
        );
        w.arm("loop", None);
        for i in 0..20 {
            std::thread::sleep(Duration::from_millis(20));
            w.tick(i);
        }
        w.disarm();
        std::thread::sleep(Duration::from_millis(400));
        drop(w);
        assert!(rx.try_recv().is_err());
    }
}
