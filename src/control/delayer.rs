//! The userspace delayer behind a delay fault where the kernel has no netem: it takes the packets
//! an nftables rule queues to one NFQUEUE, holds each for the delay, then lets it go on.
//!
//! The rule says `bypass`, so if this process is gone the packets pass undelayed. It ends on
//! SIGTERM/SIGINT or when its parent (the rank's agent) is gone, releasing what it holds.

use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::cli::DelayerArgs;
use crate::control::link::{DAEMON_READY, QUEUE_BASE};
use crate::{Failure, Outcome};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Packets waiting, earliest deadline first (ties in arrival order).
struct Held {
    due: Instant,
    seq: u64,
    msg: nfq::Message,
}

impl PartialEq for Held {
    fn eq(&self, o: &Self) -> bool {
        (self.due, self.seq) == (o.due, o.seq)
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Held {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (o.due, o.seq).cmp(&(self.due, self.seq))
    }
}

/// The longest the loop sleeps: the delay's resolution, and how fast new packets are taken.
const TICK: Duration = Duration::from_micros(200);

pub fn run(args: &DelayerArgs) -> Result<Outcome, Failure> {
    let bad = |m: String| Failure::BadInput(m);
    if !(QUEUE_BASE..=QUEUE_BASE | 0xff).contains(&args.queue) {
        return Err(bad(format!(
            "--queue: {} is not one of collbench's queues ({QUEUE_BASE}..={})",
            args.queue,
            QUEUE_BASE | 0xff
        )));
    }
    if args.delay_us == 0 || args.delay_us > 10_000_000 {
        return Err(bad("--delay-us: must be 1..=10000000".into()));
    }
    let delay = Duration::from_micros(args.delay_us);
    let jitter = Duration::from_micros(args.jitter_us.unwrap_or(0));
    if jitter > delay {
        return Err(bad("--jitter-us: must not exceed --delay-us".into()));
    }
    let q = args.queue;
    let nf = |what: &str, e: std::io::Error| {
        Failure::CouldNotRun(format!(
            "NFQUEUE {q}: {what}: {e} (needs root and the kernel's nfnetlink_queue)"
        ))
    };
    let mut queue = nfq::Queue::open().map_err(|e| nf("open", e))?;
    queue.bind(q).map_err(|e| nf("bind", e))?;
    queue
        .set_copy_range(q, 0)
        .map_err(|e| nf("copy range", e))?;
    queue
        .set_queue_max_len(q, 1 << 16)
        .map_err(|e| nf("queue length", e))?;
    // A full queue lets packets through rather than dropping them: a delay, never a loss.
    queue
        .set_fail_open(q, true)
        .map_err(|e| nf("fail open", e))?;
    let _ = queue.set_recv_gso(q, true);
    queue.set_nonblocking(true);
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
    }
    // SAFETY: getppid has no preconditions.
    let parent = unsafe { libc::getppid() };
    println!("{DAEMON_READY}");
    use std::io::Write;
    let _ = std::io::stdout().flush();

    let mut held = BinaryHeap::new();
    let mut seq = 0u64;
    let mut rng = (std::process::id() as u64) << 32 | 0x9e37_79b9;
    let span = 2 * jitter.as_nanos() as u64 + 1;
    let result = loop {
        // SAFETY: as above.
        if STOP.load(Ordering::SeqCst) || unsafe { libc::getppid() } != parent {
            break Ok(());
        }
        let got = loop {
            match queue.recv() {
                Ok(mut msg) => {
                    msg.set_verdict(nfq::Verdict::Accept);
                    let mut due = Instant::now() + delay;
                    if !jitter.is_zero() {
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        due = due - jitter + Duration::from_nanos(rng % span);
                    }
                    seq += 1;
                    held.push(Held { due, seq, msg });
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => break Ok(()),
                Err(e) => break Err(nf("receive", e)),
            }
        };
        if got.is_err() {
            break got;
        }
        let now = Instant::now();
        while held.peek().is_some_and(|h: &Held| h.due <= now) {
            let h = held.pop().expect("peeked");
            // A verdict for a packet the kernel already let go (queue flushed) is not an error.
            let _ = queue.verdict(h.msg);
        }
        let nap = held.peek().map_or(TICK, |h: &Held| {
            h.due.saturating_duration_since(now).min(TICK)
        });
        std::thread::sleep(nap);
    };
    // Whatever is held goes on now.
    while let Some(h) = held.pop() {
        let _ = queue.verdict(h.msg);
    }
    let _ = queue.unbind(q);
    result.map(|()| Outcome::Success)
}
