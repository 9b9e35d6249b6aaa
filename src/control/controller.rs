//! The controller: admits agents that present the run's secret, tracks their heartbeats and progress,
//! applies the plan's faults on time or at points, detects and attributes failures, and tears a lost job down.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::proto::{
    self, Action, Detection, FaultEvent, Hello, LinkSpec, Mechanism, ToController, ToRank,
    MAX_FRAME,
};
use crate::plan::faults::{Fault, FaultKind, FaultPlan, Start, Target};

const ACCEPT_BACKLOG: libc::c_int = 4096;

/// How long a new connection has to present its registration.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Config {
    pub plan: FaultPlan,
    pub secret: String,
    /// Link faults run privileged commands on hosts; they need this explicit opt-in.
    pub allow_privileged: bool,
    /// Without a job of its own: end once `world` ranks registered and every one has left.
    pub end_when_all_gone: bool,
}

/// One rank as the controller knows it.
struct RankState {
    hello: Hello,
    tx: Option<RankTx>,
    /// The node relay this rank speaks through (None: its own connection).
    relay: Option<usize>,
    last_heartbeat: Instant,
    progress: proto::Progress,
    goodbye: Option<String>,
    /// The controller can signal this pid itself (same kernel, same pid namespace).
    local_pid: bool,
    missing_since: Option<Instant>,
    /// The control connection's socket (a relay's, for the ranks it speaks for); valid while `tx` is.
    fd: std::os::fd::RawFd,
    /// Retransmissions per peer address at the last heartbeat.
    retrans: BTreeMap<String, u64>,
    /// When its connection ended (None while connected, or before it registered).
    left_at: Option<Instant>,
}

impl RankState {
    fn leave(&mut self) {
        if self.tx.take().is_some() {
            self.left_at = Some(Instant::now());
        }
    }
}

/// The way to a rank's agent: its own connection, or its node relay's, where every command is
/// wrapped as `Relayed` for it (so any command, of any kind, reaches a relayed rank).
#[derive(Clone)]
struct RankTx {
    tx: mpsc::UnboundedSender<ToRank>,
    relayed: Option<usize>,
}

impl RankTx {
    /// As `UnboundedSender::send`, so code written for a rank's sender works unchanged.
    #[allow(clippy::result_large_err)]
    fn send(&self, msg: ToRank) -> Result<(), mpsc::error::SendError<ToRank>> {
        match self.relayed {
            None => self.tx.send(msg),
            Some(rank) => self.tx.send(ToRank::Relayed {
                rank,
                msg: Box::new(msg),
            }),
        }
    }
}

/// One detection, with when (seconds since the sweep started) and who.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct DetectionRecord {
    pub at_s: f64,
    pub rank: Option<usize>,
    pub host: Option<String>,
    /// The rank's GPU (PCI bus id), when it registered with one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    pub mechanism: Mechanism,
    pub detail: String,
}

/// The fault timeline of a run: what the controller hands back at the end.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Timeline {
    pub sweep_start_unix_s: Option<f64>,
    pub faults: Vec<FaultEvent>,
    pub detections: Vec<DetectionRecord>,
    /// Whether the controller tore the job down, and why.
    pub torn_down: Option<String>,
    /// Connections refused (wrong secret, malformed or oversized registration).
    pub refused: u64,
    pub out_dir: Option<String>,
    pub world_size: Option<usize>,
    /// Every rank registered and said it completed the sweep (possibly with a failed test).
    pub all_completed: bool,
    /// (pid, parent pid) of the ranks this process can signal, to make sure none outlives the job.
    #[serde(skip)]
    pub local_pids: Vec<(u32, u32)>,
    /// The ranks' uploaded histograms, merged per sweep row.
    #[serde(skip)]
    pub results: Vec<MergedResult>,
    /// Ranks that ever registered.
    #[serde(skip)]
    pub registered: usize,
}

/// One sweep row merged over every rank that uploaded it.
#[derive(Clone, Debug)]
pub struct MergedResult {
    pub key: proto::ResultKey,
    /// Ranks merged in (a relay's upload counts the ranks it merged).
    pub ranks: u64,
    pub uploads: u64,
    pub hist: crate::metrics::LatencyHistogram,
}

/// At most this many distinct sweep rows are merged (each holds a histogram).
const MAX_RESULT_KEYS: usize = 1024;
/// How long agents may take to say a fault holds before its duration counts anyway.
const AGENT_APPLY_WAIT: Duration = Duration::from_secs(10);
/// Registrations are logged one by one up to this world size, then in tenths.
const LOG_EACH_RANK_UP_TO: usize = 256;

struct FaultState {
    fault: Fault,
    event: FaultEvent,
    applied_at: Option<Instant>,
    /// Pids the controller stopped itself (hang), to continue at the end.
    stopped_pids: Vec<u32>,
    /// Ranks whose agents hold the fault (they revert it).
    agent_ranks: Vec<usize>,
    /// Agents that said the fault is in effect on their host.
    confirmed: Vec<usize>,
    revert_at: Option<Instant>,
    /// When it was reverted; detections long after that are not its doing.
    reverted_at: Option<Instant>,
    done: bool,
    armed: bool,
}

struct State {
    ranks: BTreeMap<usize, RankState>,
    faults: Vec<FaultState>,
    timeline: Timeline,
    started: Option<Instant>,
    /// Progress stall bookkeeping: the tick sum and since when it has not moved.
    ticks: (u64, Instant),
    stalled: bool,
    /// When the job first looked lost (a rank gone or missing, or a stall); cleared on recovery.
    lost_since: Option<Instant>,
    /// Teardown decided at this time: faults are reverted first, the kill follows.
    aborting: Option<Instant>,
    killed: bool,
    /// Recent retransmissions: (when, host that saw them, peer host, count).
    retrans: std::collections::VecDeque<(Instant, String, String, u64)>,
    probe: Option<Probe>,
    last_probe: Option<Instant>,
    /// How long after its revert a detection may still be a fault's: the slowest detector's delay.
    grace: Duration,
    ended: bool,
    results: BTreeMap<proto::ResultKey, MergedResult>,
    /// Ranks whose missing_since is set.
    missing: usize,
    /// Every heartbeat (and registration) as (when, rank), oldest first: the monitor looks only at
    /// the ones older than the timeout instead of scanning every rank.
    deadlines: std::collections::VecDeque<(Instant, usize)>,
    /// Ranks past their deadline whose connection had unread messages: judged again next tick.
    recheck: Vec<usize>,
    /// Whether the queue was rebuilt from every rank at the sweep's start.
    deadlines_from_start: bool,
    /// The tick sum and count of live ranks (connected, no goodbye), kept as they change.
    live_ticks: u64,
    live: usize,
    /// Rendezvous collectives still missing some rank's part, by sequence number.
    exchanges: BTreeMap<u64, PendingExchange>,
}

/// One rendezvous collective while parts arrive.
struct PendingExchange {
    op: proto::ExchangeOp,
    parts: Vec<Option<Vec<u8>>>,
    missing: usize,
}

/// At most this many exchanges may be open at once (ranks run at most a few apart).
const MAX_OPEN_EXCHANGES: usize = 64;

/// A live rank's ticks (connected and no goodbye), for the running tick sum.
fn live_ticks(r: &RankState) -> Option<u64> {
    (r.tx.is_some() && r.goodbye.is_none()).then_some(r.progress.ticks)
}

impl State {
    /// Applies `f` to `rank`'s state, keeping the live tick sum and count current.
    fn with_rank<T>(&mut self, rank: usize, f: impl FnOnce(&mut RankState) -> T) -> Option<T> {
        let r = self.ranks.get_mut(&rank)?;
        let before = live_ticks(r);
        let out = f(r);
        let after = live_ticks(r);
        self.account(before, after);
        Some(out)
    }

    fn account(&mut self, before: Option<u64>, after: Option<u64>) {
        self.live_ticks = self
            .live_ticks
            .wrapping_sub(before.unwrap_or(0))
            .wrapping_add(after.unwrap_or(0));
        self.live = self.live + after.is_some() as usize - before.is_some() as usize;
    }

    /// Registers (or re-registers) a rank, keeping the counters current.
    fn insert_rank(&mut self, rank: usize, rs: RankState) {
        let after = live_ticks(&rs);
        self.deadlines.push_back((rs.last_heartbeat, rank));
        let replaced = self.ranks.insert(rank, rs);
        let before = replaced.as_ref().and_then(live_ticks);
        if replaced.is_some_and(|r| r.missing_since.is_some()) {
            self.missing -= 1;
        }
        self.account(before, after);
    }

    fn since_start(&self, t: Instant) -> f64 {
        self.started
            .map_or(0.0, |s| t.saturating_duration_since(s).as_secs_f64())
    }

    fn detect(&mut self, rank: Option<usize>, mechanism: Mechanism, detail: String, fatal: bool) {
        let now = Instant::now();
        let at_s = self.since_start(now);
        let hello = rank.and_then(|r| self.ranks.get(&r)).map(|s| &s.hello);
        let host = hello.map(|h| h.host.clone());
        let device = hello.and_then(|h| h.device.clone());
        crate::say(&format!(
            "collbench controller: {at_s:7.3}s detected {}{}: {detail}",
            mechanism.name(),
            match (&rank, &host) {
                (Some(r), Some(h)) => format!(" (rank {r} on {h}{})", gpu_suffix(&device)),
                (Some(r), None) => format!(" (rank {r})"),
                _ => String::new(),
            }
        ));
        let rec = DetectionRecord {
            at_s,
            rank,
            host: host.clone(),
            device: device.clone(),
            mechanism,
            detail: detail.clone(),
        };
        self.timeline.detections.push(rec);
        // The first detection after a fault was applied that such a fault can cause is its detection.
        if let Some(f) = self
            .faults
            .iter_mut()
            .filter(|f| {
                f.applied_at.is_some_and(|a| a <= now)
                    && f.reverted_at.is_none_or(|r| now <= r + self.grace)
                    && f.event.detected.is_none()
                    && explains(f.fault.kind, mechanism)
            })
            .max_by_key(|f| f.applied_at)
        {
            let applied = f.event.applied_at_s.unwrap_or(at_s);
            f.event.detected = Some(Detection {
                at_s,
                after_s: at_s - applied,
                rank,
                host,
                device,
                mechanism,
                detail,
            });
        }
        if fatal && self.lost_since.is_none() {
            self.lost_since = Some(now);
        }
    }
}

/// ", GPU 0000:19:00.0" for a rank that registered with its GPU, else nothing.
pub fn gpu_suffix(device: &Option<String>) -> String {
    device
        .as_deref()
        .map_or(String::new(), |d| format!(", GPU {d}"))
}

/// Whether a fault of `kind` can be what `mechanism` noticed.
fn explains(kind: FaultKind, mechanism: Mechanism) -> bool {
    use FaultKind as K;
    use Mechanism as M;
    match kind {
        K::Corrupt => mechanism == M::WrongData,
        K::Slow => matches!(
            mechanism,
            M::Straggler | M::ProgressStall | M::WatchdogDeadline
        ),
        K::Exit => matches!(mechanism, M::EarlyExit | M::ConnectionLost),
        K::Kill | K::Hang => matches!(
            mechanism,
            M::ConnectionLost
                | M::MissedHeartbeat
                | M::ProgressStall
                | M::WatchdogDeadline
                | M::JobEnded
        ),
        K::Rate | K::Delay => matches!(
            mechanism,
            M::Straggler
                | M::Retransmits
                | M::ProgressStall
                | M::WatchdogDeadline
                | M::MissedHeartbeat
        ),
        K::Down | K::Loss | K::Partition | K::Flap => matches!(
            mechanism,
            M::LinkDown
                | M::Retransmits
                | M::ProgressStall
                | M::WatchdogDeadline
                | M::MissedHeartbeat
                | M::ConnectionLost
                | M::CollectiveError
        ),
    }
}

impl State {
    /// The job moves again: every detected, unrecovered fault records when.
    fn note_recovery(&mut self, now: Instant) {
        let at = self.since_start(now);
        for f in &mut self.faults {
            if f.event.detected.is_some() && f.event.recovered_at_s.is_none() {
                f.event.recovered_at_s = Some(at);
            }
        }
    }
}

type Shared = Arc<Mutex<State>>;

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

/// A listening socket, TCP or unix.
pub enum Listener {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener, std::path::PathBuf),
}

impl Listener {
    /// Binds `addr`; TCP port 0 picks a free port. Must run inside the runtime.
    pub async fn bind(addr: &proto::Addr) -> std::io::Result<Listener> {
        use std::os::fd::AsRawFd;
        let l = match addr {
            proto::Addr::Tcp(a) => Listener::Tcp(tokio::net::TcpListener::bind(a).await?),
            proto::Addr::Unix(p) => {
                let _ = std::fs::remove_file(p);
                let l = tokio::net::UnixListener::bind(p)?;
                Listener::Unix(l, p.clone())
            }
        };
        let fd = match &l {
            Listener::Tcp(t) => t.as_raw_fd(),
            Listener::Unix(u, _) => u.as_raw_fd(),
        };
        // A deeper accept queue than the default 128, so thousands of ranks registering at once
        // are not dropped into SYN retries (the kernel caps it at net.core.somaxconn).
        // SAFETY: listen again on a socket this listener owns; Linux only resizes the queue.
        unsafe {
            libc::listen(fd, ACCEPT_BACKLOG);
        }
        Ok(l)
    }

    /// The address ranks connect to.
    pub fn addr(&self) -> proto::Addr {
        match self {
            Listener::Tcp(l) => proto::Addr::Tcp(
                l.local_addr()
                    .map_or_else(|_| "127.0.0.1:0".into(), |a| a.to_string()),
            ),
            Listener::Unix(_, p) => proto::Addr::Unix(p.clone()),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, p) = self {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// What ends a controller's watch: the job it launched exited (with this status), or a signal.
pub enum JobEnd {
    Exited(i32),
    Signal(&'static str),
}

/// Runs the controller until `job_end` resolves; `teardown` kills the job (by process group)
/// when the controller declares it lost. Returns the timeline.
pub async fn run(
    config: Config,
    listener: Listener,
    job_end: impl std::future::Future<Output = JobEnd>,
    teardown: impl Fn() + Send + Sync + 'static,
) -> (Timeline, JobEnd) {
    let now = Instant::now();
    let faults = config
        .plan
        .faults
        .iter()
        .map(|f| FaultState {
            fault: f.clone(),
            event: FaultEvent::planned(f),
            applied_at: None,
            stopped_pids: Vec::new(),
            agent_ranks: Vec::new(),
            confirmed: Vec::new(),
            revert_at: None,
            reverted_at: None,
            done: false,
            armed: false,
        })
        .collect();
    let state: Shared = Arc::new(Mutex::new(State {
        ranks: BTreeMap::new(),
        faults,
        timeline: Timeline::default(),
        started: None,
        ticks: (0, now),
        stalled: false,
        lost_since: None,
        aborting: None,
        killed: false,
        retrans: Default::default(),
        probe: None,
        last_probe: None,
        grace: config.plan.stall.max(config.plan.heartbeat_timeout) + Duration::from_secs(1),
        ended: false,
        results: BTreeMap::new(),
        missing: 0,
        deadlines: Default::default(),
        deadlines_from_start: false,
        recheck: Vec::new(),
        live_ticks: 0,
        live: 0,
        exchanges: BTreeMap::new(),
    }));
    let config = Arc::new(config);
    let teardown: Arc<dyn Fn() + Send + Sync> = Arc::new(teardown);

    let accept = {
        let state = state.clone();
        let config = config.clone();
        async move {
            loop {
                let accepted: std::io::Result<(Box<dyn Conn>, String)> = match &listener {
                    Listener::Tcp(l) => l
                        .accept()
                        .await
                        .map(|(s, a)| (Box::new(s) as Box<dyn Conn>, a.to_string())),
                    Listener::Unix(l, p) => l.accept().await.map(|(s, _)| {
                        (
                            Box::new(s) as Box<dyn Conn>,
                            format!("unix:{}", p.display()),
                        )
                    }),
                };
                match accepted {
                    Ok((conn, peer)) => {
                        tokio::spawn(serve_conn(conn, peer, state.clone(), config.clone()));
                    }
                    Err(e) => {
                        crate::say(&format!("collbench controller: accept failed: {e}"));
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }
    };
    let watch = {
        let state = state.clone();
        let config = config.clone();
        let teardown = teardown.clone();
        async move {
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            loop {
                tick.tick().await;
                monitor(&state, &config, &*teardown);
                if config.end_when_all_gone {
                    let st = lock(&state);
                    let world = st.timeline.world_size.unwrap_or(usize::MAX);
                    if st.ranks.len() >= world && st.ranks.values().all(|r| r.tx.is_none()) {
                        let clean = st.ranks.values().all(|r| {
                            r.goodbye
                                .as_deref()
                                .is_some_and(|g| g.starts_with("complete"))
                        });
                        return JobEnd::Exited(if clean { 0 } else { 1 });
                    }
                }
            }
        }
    };
    let end = tokio::select! {
        e = job_end => e,
        _ = accept => unreachable!("the accept loop never ends"),
        e = watch => e,
    };
    // The job is over (or we were told to stop): undo what is still applied, agents first
    // (they get up to 2s to confirm), then the job is killed.
    {
        let mut st = lock(&state);
        st.ended = true;
        if let JobEnd::Signal(sig) = &end {
            crate::say(&format!(
                "collbench controller: {sig}: reverting faults and tearing the job down"
            ));
            st.timeline
                .torn_down
                .get_or_insert(format!("{sig} received"));
        }
        let now = Instant::now();
        for i in 0..st.faults.len() {
            if st.faults[i].applied_at.is_some() && !st.faults[i].done {
                revert(&mut st, i, now);
            }
        }
    }
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(2)
        && lock(&state)
            .faults
            .iter()
            .any(|f| !f.done && !f.agent_ranks.is_empty())
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if matches!(end, JobEnd::Signal(_)) {
        teardown();
    }
    let mut st = lock(&state);
    for f in st
        .faults
        .iter()
        .filter(|f| f.fault.kind.is_link() && f.applied_at.is_some() && !f.done)
    {
        backstop_heal(&f.fault);
    }
    let mut timeline = std::mem::take(&mut st.timeline);
    timeline.results = std::mem::take(&mut st.results).into_values().collect();
    timeline.registered = st.ranks.len();
    timeline.local_pids = st
        .ranks
        .values()
        .filter(|r| r.local_pid)
        .map(|r| (r.hello.pid, r.hello.ppid))
        .collect();
    timeline.faults = st.faults.iter().map(|f| f.event.clone()).collect();
    let world = timeline.world_size.unwrap_or(usize::MAX);
    timeline.all_completed = st.ranks.len() >= world
        && st.ranks.values().all(|r| {
            r.goodbye
                .as_deref()
                .is_some_and(|g| g.starts_with("complete"))
        });
    let job_ok = timeline.all_completed;
    for (f, fs) in timeline.faults.iter_mut().zip(&st.faults) {
        if fs.armed && f.applied_at_s.is_none() && f.error.is_none() {
            f.error = Some(format!("its start ({}) was never reached", fs.fault.start));
        }
    }
    for f in &mut timeline.faults {
        if f.applied_at_s.is_some() {
            f.outcome = if timeline.torn_down.is_some() {
                "aborted".into()
            } else if job_ok && f.recovered_at_s.is_some() {
                "recovered".into()
            } else if job_ok {
                "completed".into()
            } else {
                "job_failed".into()
            };
        }
    }
    (timeline, end)
}

/// A control connection on either socket type.
trait Conn: AsyncRead + AsyncWrite + Unpin + Send + std::os::fd::AsRawFd {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + std::os::fd::AsRawFd> Conn for T {}

/// Whether bytes from the peer wait unread on `fd` (the controller is behind, the rank is not silent).
fn unread(fd: std::os::fd::RawFd) -> bool {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD into an int on a socket this process holds open (the rank is connected).
    unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) == 0 && n > 0 }
}

async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<ToController, proto::FrameError> {
    let len = r.read_u32().await? as usize;
    if len > MAX_FRAME {
        return Err(proto::FrameError::TooLarge(len, MAX_FRAME));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    proto::decode(&body)
}

async fn serve_conn(conn: Box<dyn Conn>, peer: String, state: Shared, config: Arc<Config>) {
    let fd = conn.as_raw_fd();
    let (mut rd, mut wr) = tokio::io::split(conn);
    let refuse = |why: String| {
        crate::say(&format!(
            "collbench controller: refused connection from {peer}: {why}"
        ));
        lock(&state).timeline.refused += 1;
    };
    let hello = match tokio::time::timeout(HELLO_TIMEOUT, read_frame(&mut rd)).await {
        Err(_) => return refuse("no registration within 5s".into()),
        Ok(Err(e)) => return refuse(e.to_string()),
        Ok(Ok(ToController::Hello(h))) => h,
        Ok(Ok(_)) => return refuse("first message is not a registration".into()),
    };
    if !proto::secret_matches(&hello.secret, &config.secret) {
        return refuse(format!(
            "wrong secret (claimed rank {} on {})",
            hello.rank, hello.host
        ));
    }
    let rank = hello.rank;
    let (tx, mut rx) = mpsc::unbounded_channel::<ToRank>();
    {
        let mut st = lock(&state);
        if st.ranks.get(&rank).is_some_and(|r| r.tx.is_some()) {
            drop(st);
            return refuse(format!("rank {rank} is already registered"));
        }
        admit(
            &mut st,
            hello,
            RankTx {
                tx: tx.clone(),
                relayed: None,
            },
            None,
            fd,
        );
        let _ = tx.send(ToRank::Welcome {
            heartbeat_ms: config.plan.heartbeat.as_millis() as u64,
        });
        arm_points_for(&mut st, rank, &config);
    }
    let writer = tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            if wr.write_all(&proto::encode(&msg)).await.is_err() {
                break;
            }
        }
    });
    // Ranks of this node a relay registered on this connection.
    let mut members: Vec<usize> = Vec::new();
    let why = loop {
        match read_frame(&mut rd).await {
            Ok(ToController::Members { hellos }) => {
                register_members(&state, &config, rank, fd, &tx, hellos, &mut members)
            }
            Ok(ToController::NodeHeartbeat { ranks, mut retrans }) => {
                let mut st = lock(&state);
                let now = Instant::now();
                for (r, progress) in ranks {
                    if r == rank {
                        heartbeat(&mut st, r, progress, std::mem::take(&mut retrans), now);
                    } else if members.binary_search(&r).is_ok() {
                        heartbeat(&mut st, r, progress, Vec::new(), now);
                    }
                }
            }
            Ok(ToController::Relayed { rank: m, msg }) if members.binary_search(&m).is_ok() => {
                relayed(&state, m, *msg)
            }
            Ok(ToController::MemberLost { rank: m, detail })
                if members.binary_search(&m).is_ok() =>
            {
                let mut st = lock(&state);
                let said = st.ranks.get(&m).is_some_and(|r| r.goodbye.is_some());
                st.with_rank(m, |r| r.leave());
                if !said && !st.ended {
                    let relay = rank;
                    st.detect(
                        Some(m),
                        Mechanism::ConnectionLost,
                        format!("{detail} (seen by its node relay, rank {relay})"),
                        true,
                    );
                }
            }
            Ok(msg) => {
                if let Some(done) = on_message(&state, rank, msg) {
                    break done;
                }
            }
            Err(e) => break Err(e),
        }
    };
    writer.abort();
    let mut st = lock(&state);
    let said = st.ranks.get(&rank).and_then(|r| r.goodbye.clone());
    // A relay that dies takes the ranks it spoke for with it: they are no longer watched.
    let mut lost_with = Vec::new();
    for &m in &members {
        st.with_rank(m, |r| {
            if r.tx.is_some() && r.goodbye.is_none() {
                lost_with.push(m);
            }
            r.leave();
            if r.goodbye.is_none() {
                r.goodbye.clone_from(&said);
            }
        });
    }
    st.with_rank(rank, |r| r.leave());
    fail_exchanges_of_departed(&mut st);
    match (why, said) {
        (Ok(()), _) | (_, Some(_)) => {}
        (Err(proto::FrameError::Io(_)), None) if !st.ended => {
            let with = if lost_with.is_empty() {
                String::new()
            } else {
                format!(
                    "; it relayed rank(s) {lost_with:?} of its node, lost with it (no longer watched)"
                )
            };
            st.detect(
                Some(rank),
                Mechanism::ConnectionLost,
                format!("the rank's control connection closed without a goodbye (the process died){with}"),
                true,
            );
        }
        (Err(e), None) if !st.ended => {
            crate::say(&format!(
                "collbench controller: closed rank {rank}'s connection: {e}"
            ));
        }
        _ => {}
    }
}

/// One message a relay passed on from rank `m` of its node: handled as if `m` had sent it.
fn relayed(state: &Shared, m: usize, msg: ToController) {
    match msg {
        ToController::Hello(_)
        | ToController::Members { .. }
        | ToController::NodeHeartbeat { .. }
        | ToController::Relayed { .. }
        | ToController::MemberLost { .. } => {}
        msg => {
            if let Some(Ok(())) = on_message(state, m, msg) {
                lock(state).with_rank(m, |r| r.leave());
            }
        }
    }
}

/// This host's identity, read once.
fn identity() -> &'static (String, String) {
    static ID: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();
    ID.get_or_init(proto::host_identity)
}

/// Merges one uploaded histogram into its key (decoded before the lock is taken).
fn on_results(state: &Shared, rank: usize, key: proto::ResultKey, ranks: u64, histogram: &str) {
    use base64::Engine;
    let bytes = match base64::engine::general_purpose::STANDARD.decode(histogram) {
        Ok(b) => b,
        Err(e) => {
            return crate::say(&format!(
                "collbench controller: rank {rank}'s results for {key} are not base64: {e}"
            ))
        }
    };
    let mut st = lock(state);
    let keys = st.results.len();
    let entry = match st.results.entry(key) {
        std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
        std::collections::btree_map::Entry::Vacant(v) if keys < MAX_RESULT_KEYS => {
            let key = v.key().clone();
            v.insert(MergedResult {
                key,
                ranks: 0,
                uploads: 0,
                hist: Default::default(),
            })
        }
        std::collections::btree_map::Entry::Vacant(v) => {
            return crate::say(&format!(
                "collbench controller: rank {rank}'s results for {} dropped: over {MAX_RESULT_KEYS} sweep rows",
                v.key()
            ))
        }
    };
    match entry.hist.merge_bytes(&bytes) {
        Ok(()) => {
            entry.ranks += ranks;
            entry.uploads += 1;
        }
        Err(e) => crate::say(&format!(
            "collbench controller: rank {rank}'s results for {} do not merge: {e}",
            entry.key
        )),
    }
}

/// Handles one message; Some(Ok) when the rank said goodbye.
fn on_message(
    state: &Shared,
    rank: usize,
    msg: ToController,
) -> Option<Result<(), proto::FrameError>> {
    if let ToController::Results {
        key,
        ranks,
        histogram,
    } = msg
    {
        on_results(state, rank, key, ranks, &histogram);
        return None;
    }
    if let ToController::Exchange { seq, op, data } = msg {
        on_exchange(state, rank, seq, op, &data);
        return None;
    }
    let mut st = lock(state);
    let now = Instant::now();
    match msg {
        ToController::Hello(_)
        | ToController::Exchange { .. }
        | ToController::Results { .. }
        | ToController::Members { .. }
        | ToController::NodeHeartbeat { .. }
        | ToController::Relayed { .. }
        | ToController::MemberLost { .. } => {}
        ToController::Heartbeat { progress, retrans } => {
            heartbeat(&mut st, rank, progress, retrans, now)?;
        }
        ToController::SweepStarted { unix_s } => {
            if st.started.is_none() {
                st.started = Some(now);
                st.ticks = (0, now);
                st.timeline.sweep_start_unix_s = Some(unix_s);
                crate::say("collbench controller: sweep started; fault clock running");
            }
        }
        ToController::Detected {
            mechanism,
            detail,
            culprit,
        } => {
            st.detect(culprit.or(Some(rank)), mechanism, detail, false);
        }
        ToController::FaultApplied { id, unix_s, revert } => {
            let at = st.timeline.sweep_start_unix_s.map(|s| unix_s - s);
            if let Some(f) = st.faults.get_mut(id) {
                f.event.revert = Some(revert);
                if f.applied_at.is_none() {
                    f.applied_at = Some(now);
                    f.revert_at = f.fault.duration.map(|d| now + d);
                }
                if !f.confirmed.contains(&rank) {
                    f.confirmed.push(rank);
                }
                // Sent is not in effect: an agent may take a while (a rule to install, a delayer
                // to start, a busy host). The fault is in effect once every agent holding it said
                // so, and its duration counts from there.
                let everywhere = f.agent_ranks.iter().all(|r| f.confirmed.contains(r));
                if everywhere && f.reverted_at.is_none() {
                    if let Some(at) = at {
                        f.event.applied_at_s = Some(f.event.applied_at_s.map_or(at, |a| a.max(at)));
                    }
                    if f.revert_at.is_some() {
                        f.revert_at = f.fault.duration.map(|d| now + d);
                    }
                    if let (Some(sent), Some(at)) = (f.event.sent_at_s, at) {
                        crate::say(&format!(
                            "collbench controller: {at:7.3}s fault {id} in effect ({:.3}s after it was sent)",
                            (at - sent).max(0.0)
                        ));
                    }
                }
                f.event.applied_at_s = f.event.applied_at_s.or(at);
                if !f.event.ranks.contains(&rank) {
                    f.event.ranks.push(rank);
                }
                f.event.outcome = "applied".into();
                // One-shot faults have nothing to revert.
                if matches!(
                    f.fault.kind,
                    FaultKind::Corrupt | FaultKind::Exit | FaultKind::Kill
                ) {
                    f.agent_ranks.clear();
                    f.revert_at = None;
                    f.done = true;
                }
            }
        }
        ToController::PointReached { id, unix_s } => {
            let at = st.timeline.sweep_start_unix_s.map(|s| unix_s - s);
            if let Some(f) = st.faults.get_mut(id) {
                if f.applied_at.is_none() {
                    f.applied_at = Some(now);
                    f.event.applied_at_s = at;
                    f.revert_at = f.fault.duration.map(|d| now + d);
                    crate::say(&format!(
                        "collbench controller: fault {id} ({} {}) reached its point on rank {rank}",
                        f.fault.kind.name(),
                        f.fault.target
                    ));
                }
            }
        }
        ToController::FaultReverted {
            id,
            unix_s,
            began_unix_s,
        } => {
            let since = |t: f64| st.timeline.sweep_start_unix_s.map(|s| t - s);
            let (at, began) = (since(unix_s), began_unix_s.and_then(since));
            if let Some(f) = st.faults.get_mut(id) {
                f.event.reverted_at_s = f.event.reverted_at_s.or(at);
                f.event.revert_began_at_s = f.event.revert_began_at_s.or(began);
                f.reverted_at.get_or_insert(now);
                f.agent_ranks.retain(|&r| r != rank);
                if f.agent_ranks.is_empty() && f.stopped_pids.is_empty() {
                    f.done = true;
                }
            }
        }
        ToController::FaultFailed { id, error } => {
            crate::say(&format!(
                "collbench controller: fault {id} failed on rank {rank}: {error}"
            ));
            if let Some(f) = st.faults.get_mut(id) {
                f.event.error = Some(error);
                if f.applied_at.is_none() {
                    f.event.outcome = "failed".into();
                    f.done = true;
                }
            }
        }
        ToController::ProbeResult { loss } => {
            let from = st.ranks.get(&rank)?.hello.host.clone();
            let res: Vec<(String, f64)> = loss
                .into_iter()
                .take(4096)
                .map(|(a, l)| (host_of_addr(&st, &a).unwrap_or(a), l))
                .collect();
            if let Some(p) = st.probe.as_mut() {
                p.results.insert(from, res);
            }
            finish_probe(&mut st, now);
        }
        ToController::Goodbye { reason } => {
            st.with_rank(rank, |r| r.goodbye = Some(reason.clone()));
            if reason.starts_with("exit fault") {
                st.detect(Some(rank), Mechanism::EarlyExit, reason, true);
            }
            return Some(Ok(()));
        }
    }
    None
}

/// One rank's heartbeat: progress, recovery from a missed heartbeat, retransmissions.
fn heartbeat(
    st: &mut State,
    rank: usize,
    progress: proto::Progress,
    retrans: Vec<(String, u64)>,
    now: Instant,
) -> Option<()> {
    let (recovered, deltas) = st.with_rank(rank, |r| {
        r.last_heartbeat = now;
        r.progress = progress;
        let mut deltas = Vec::new();
        for (peer, total) in retrans.into_iter().take(4096) {
            let before = r.retrans.insert(peer.clone(), total);
            // A peer seen for the first time counts from here, not from its whole history.
            if let Some(b) = before {
                if total > b {
                    deltas.push((peer, total - b));
                }
            }
        }
        (r.missing_since.take(), deltas)
    })?;
    st.deadlines.push_back((now, rank));
    if recovered.is_some() {
        st.missing -= 1;
    }
    if !deltas.is_empty() {
        note_retransmits(st, rank, deltas, now);
    }
    if let Some(since) = recovered {
        let host = st.ranks[&rank].hello.host.clone();
        crate::say(&format!(
            "collbench controller: {:7.3}s rank {rank} on {host} is back after {:.2}s without heartbeats",
            st.since_start(now),
            now.duration_since(since).as_secs_f64()
        ));
        if st.missing == 0 && !st.stalled {
            st.lost_since = None;
            st.note_recovery(now);
        }
    }
    Some(())
}

/// Records a registered rank (its own connection, or its node relay's when `relay` is set) and
/// logs it: one by one in small worlds, in tenths in large ones.
fn admit(st: &mut State, hello: Hello, tx: RankTx, relay: Option<usize>, fd: std::os::fd::RawFd) {
    let rank = hello.rank;
    let n = st.ranks.len() + 1;
    let tenth = (hello.world_size / 10).max(1);
    if hello.world_size <= LOG_EACH_RANK_UP_TO {
        let through = relay.map_or(String::new(), |r| format!(" through relay rank {r}"));
        crate::say(&format!(
            "collbench controller: rank {rank} registered from {} (pid {}){through}",
            hello.host, hello.pid
        ));
    } else if n % tenth == 0 || n == hello.world_size {
        crate::say(&format!(
            "collbench controller: {n} of {} ranks registered",
            hello.world_size
        ));
    }
    if rank == 0 {
        st.timeline.out_dir = hello.out_dir.clone();
    }
    st.timeline.world_size = Some(hello.world_size);
    // The controller signals a rank's pid itself only on its own kernel and pid namespace, and
    // never its own process (ranks hosted in it, as in tests).
    let (boot, ns) = identity();
    let local_pid = !boot.is_empty()
        && hello.boot_id == *boot
        && hello.pid_ns == *ns
        && hello.pid != std::process::id();
    st.insert_rank(
        rank,
        RankState {
            hello,
            tx: Some(tx),
            relay,
            last_heartbeat: Instant::now(),
            progress: Default::default(),
            goodbye: None,
            local_pid,
            fd,
            missing_since: None,
            left_at: None,
            retrans: BTreeMap::new(),
        },
    );
}

/// Registers the ranks a node relay speaks for on its connection (each with the run's secret).
fn register_members(
    state: &Shared,
    config: &Config,
    relay: usize,
    fd: std::os::fd::RawFd,
    tx: &mpsc::UnboundedSender<ToRank>,
    hellos: Vec<Hello>,
    members: &mut Vec<usize>,
) {
    let mut st = lock(state);
    for hello in hellos.into_iter().take(4096) {
        let rank = hello.rank;
        if !proto::secret_matches(&hello.secret, &config.secret) {
            st.timeline.refused += 1;
            crate::say(&format!(
                "collbench controller: relay rank {relay} presented a wrong secret for rank {rank}"
            ));
            continue;
        }
        if st.ranks.get(&rank).is_some_and(|r| r.tx.is_some()) {
            st.timeline.refused += 1;
            continue;
        }
        admit(
            &mut st,
            hello,
            RankTx {
                tx: tx.clone(),
                relayed: Some(rank),
            },
            Some(relay),
            fd,
        );
        arm_points_for(&mut st, rank, config);
        members.push(rank);
    }
    members.sort_unstable();
}

/// Sends the point-armed faults that concern `rank` as soon as it registers.
fn arm_points_for(st: &mut State, rank: usize, config: &Config) {
    for i in 0..st.faults.len() {
        let f = &st.faults[i].fault;
        let Start::At {
            op,
            size,
            iteration,
        } = &f.start
        else {
            continue;
        };
        let targets = target_ranks(st, f);
        if !targets.contains(&rank) {
            continue;
        }
        let Some(action) = action_for(st, f, config) else {
            continue;
        };
        let msg = ToRank::ArmAt {
            id: f.id,
            op: op.name().to_string(),
            size: *size,
            iteration: *iteration,
            action,
            duration_ms: f.duration.map(|d| d.as_millis() as u64),
        };
        if let Some(tx) = st.ranks.get(&rank).and_then(|r| r.tx.as_ref()) {
            let _ = tx.send(msg);
        }
        st.faults[i].armed = true;
        st.faults[i].agent_ranks.push(rank);
    }
}

/// The ranks a fault acts on: the rank, every rank on the node, or the applying rank of a link's
/// node (the lowest rank there).
fn target_ranks(st: &State, f: &Fault) -> Vec<usize> {
    let on = |host: &str| -> Vec<usize> {
        st.ranks
            .iter()
            .filter(|(_, r)| r.hello.host == host)
            .map(|(&k, _)| k)
            .collect()
    };
    match &f.target {
        Target::Rank(r) => vec![*r],
        Target::Node(n) if !f.kind.is_link() => on(n),
        Target::Node(n) | Target::Link { node: n, .. } | Target::Pair(n, _) => {
            on(n).into_iter().min().into_iter().collect()
        }
    }
}

/// The agent action for a fault on `rank`.
fn action_for(st: &State, f: &Fault, config: &Config) -> Option<Action> {
    Some(match f.kind {
        FaultKind::Kill => Action::Kill,
        FaultKind::Hang => Action::Hang,
        FaultKind::Exit => Action::Exit,
        FaultKind::Corrupt => Action::Corrupt,
        FaultKind::Slow => Action::Slow {
            delay_ns: f.delay.map_or(1_000_000, |d| d.as_nanos() as u64),
        },
        _ if !config.allow_privileged => return None,
        _ => {
            let (iface, peers) = match &f.target {
                Target::Link { iface, .. } => (Some(iface.clone()), Vec::new()),
                Target::Pair(_, b) => (None, addrs_where(st, |h| h == b)),
                _ => (None, Vec::new()),
            };
            Action::Link(LinkSpec::of(f, iface, peers))
        }
    })
}

/// Adds `rank`'s part to exchange `seq`; once every rank's part is in, answers the ranks that
/// want the result. A part that cannot belong (bad base64, unknown rank, an op that differs from
/// the other ranks') fails the exchange for every rank, which ends their wait with that error.
fn on_exchange(state: &Shared, rank: usize, seq: u64, op: proto::ExchangeOp, data: &str) {
    use base64::Engine;
    let part = base64::engine::general_purpose::STANDARD.decode(data);
    let mut st = lock(state);
    let Some(world) = st.timeline.world_size else {
        return;
    };
    let fail = |st: &State, why: String| fail_exchange(st, seq, &why);
    let part = match part {
        Ok(p) if rank < world => p,
        Ok(_) => return fail(&st, format!("rank {rank} is outside a world of {world}")),
        Err(e) => return fail(&st, format!("rank {rank}'s part is not base64: {e}")),
    };
    if !st.exchanges.contains_key(&seq) && st.exchanges.len() >= MAX_OPEN_EXCHANGES {
        return fail(
            &st,
            format!("more than {MAX_OPEN_EXCHANGES} exchanges open at once (ranks out of step)"),
        );
    }
    let pending = st.exchanges.entry(seq).or_insert_with(|| PendingExchange {
        op,
        parts: vec![None; world],
        missing: world,
    });
    if pending.op != op {
        let why = format!(
            "rank {rank} called {op:?} where other ranks called {:?} (the ranks are out of step)",
            pending.op
        );
        st.exchanges.remove(&seq);
        return fail(&st, why);
    }
    if pending.parts[rank].is_some() {
        st.exchanges.remove(&seq);
        return fail(&st, format!("rank {rank} gave two parts"));
    }
    pending.parts[rank] = Some(part);
    pending.missing -= 1;
    if pending.missing > 0 {
        fail_exchanges_of_departed(&mut st);
        return;
    }
    let done = st.exchanges.remove(&seq).expect("present");
    let parts: Vec<Vec<u8>> = done
        .parts
        .into_iter()
        .map(Option::unwrap_or_default)
        .collect();
    match super::rendezvous::combine(op, &parts) {
        Err(why) => fail(&st, why),
        Ok(answer) => {
            let encoded: Vec<String> = answer
                .iter()
                .map(|p| base64::engine::general_purpose::STANDARD.encode(p))
                .collect();
            for r in (0..world).filter(|&r| op.answers(r)) {
                send_to(
                    &st,
                    r,
                    ToRank::Exchanged {
                        seq,
                        parts: encoded.clone(),
                        error: None,
                    },
                );
            }
        }
    }
}

/// Fails every open exchange that waits on a rank whose connection is gone: its part can never
/// come, and the others must not wait for their deadline to learn that.
fn fail_exchanges_of_departed(st: &mut State) {
    let mut failed = Vec::new();
    for (&seq, pending) in &st.exchanges {
        // The first rank to leave is the one to name: the others may have left after it, on the
        // error its leaving gave them.
        let gone = pending
            .parts
            .iter()
            .enumerate()
            .filter(|(_, p)| p.is_none())
            .filter_map(|(r, _)| {
                let rs = st.ranks.get(&r)?;
                rs.tx.is_none().then_some((rs.left_at, r))
            })
            .min();
        if let Some((_, r)) = gone {
            failed.push((seq, format!("rank {r} left before giving its part")));
        }
    }
    for (seq, why) in failed {
        st.exchanges.remove(&seq);
        fail_exchange(st, seq, &why);
    }
}

/// Ends exchange `seq` with an error on every connected rank (a rank not waiting on it ignores it).
fn fail_exchange(st: &State, seq: u64, why: &str) {
    crate::say(&format!(
        "collbench controller: rendezvous {seq} failed: {why}"
    ));
    for (&to, rs) in &st.ranks {
        if rs.tx.is_some() {
            send_to(
                st,
                to,
                ToRank::Exchanged {
                    seq,
                    parts: Vec::new(),
                    error: Some(why.to_string()),
                },
            );
        }
    }
}

fn send_to(st: &State, rank: usize, msg: ToRank) -> bool {
    st.ranks
        .get(&rank)
        .and_then(|r| r.tx.as_ref())
        .is_some_and(|tx| tx.send(msg).is_ok())
}

fn signal(pid: u32, sig: libc::c_int) -> bool {
    // SAFETY: kill with a pid the rank registered and a fixed signal.
    unsafe { libc::kill(pid as libc::pid_t, sig) == 0 }
}

/// Applies fault `i` now (time-based start).
fn apply(st: &mut State, i: usize, config: &Config, now: Instant) {
    let f = st.faults[i].fault.clone();
    let targets = target_ranks(st, &f);
    let at_s = st.since_start(now);
    let missing: Vec<usize> = targets
        .iter()
        .copied()
        .filter(|r| st.ranks.get(r).is_none_or(|s| s.tx.is_none()))
        .collect();
    if targets.is_empty() || !missing.is_empty() {
        let why = if targets.is_empty() {
            format!("no registered rank matches {}", f.target)
        } else {
            format!("rank(s) {missing:?} of {} are not connected", f.target)
        };
        crate::say(&format!(
            "collbench controller: fault {} not applied: {why}",
            f.id
        ));
        let fs = &mut st.faults[i];
        fs.event.error = Some(why);
        fs.event.outcome = "not_applied".into();
        fs.done = true;
        return;
    }
    if f.kind.is_link() && !config.allow_privileged {
        let why = "link faults run privileged commands; pass --allow-privileged".to_string();
        crate::say(&format!(
            "collbench controller: fault {} not applied: {why}",
            f.id
        ));
        let fs = &mut st.faults[i];
        fs.event.error = Some(why);
        fs.done = true;
        return;
    }
    let duration_ms = f.duration.map(|d| d.as_millis() as u64);
    let mut revert = Vec::new();
    let mut stopped = Vec::new();
    let mut agents = Vec::new();
    for &r in &targets {
        let rs = &st.ranks[&r];
        let (pid, local) = (rs.hello.pid, rs.local_pid);
        match f.kind {
            FaultKind::Kill if local => {
                signal(pid, libc::SIGKILL);
                revert.push(format!("none: pid {pid} killed"));
            }
            FaultKind::Hang if local => {
                // The revert is recorded before the stop.
                stopped.push(pid);
                st.faults[i].stopped_pids.push(pid);
                signal(pid, libc::SIGSTOP);
                revert.push(format!("SIGCONT to pid {pid}"));
            }
            _ => {
                if let Some(action) = action_for(st, &f, config) {
                    send_to(
                        st,
                        r,
                        ToRank::Apply {
                            id: f.id,
                            action,
                            duration_ms,
                        },
                    );
                    agents.push(r);
                }
            }
        }
    }
    let fs = &mut st.faults[i];
    fs.applied_at = Some(now);
    // With agents, the duration counts from when they all say the fault holds; this deadline is
    // only for agents that never answer.
    let wait = if agents.is_empty() {
        Duration::ZERO
    } else {
        AGENT_APPLY_WAIT
    };
    fs.revert_at = f.duration.map(|d| now + wait + d);
    fs.event.sent_at_s = (!agents.is_empty()).then_some(at_s);
    fs.agent_ranks = agents;
    fs.event.applied_at_s = Some(at_s);
    fs.event.ranks = targets.clone();
    fs.event.outcome = "applied".into();
    if !revert.is_empty() {
        fs.event.revert = Some(revert.join("; "));
    }
    if fs.agent_ranks.is_empty() && stopped.is_empty() {
        fs.done = true;
    }
    let what = if fs.agent_ranks.is_empty() {
        "applied"
    } else {
        "sent to the agents"
    };
    crate::say(&format!(
        "collbench controller: {at_s:7.3}s fault {} {what}: {} {} (ranks {targets:?})",
        f.id,
        f.kind.name(),
        f.target
    ));
}

/// Reverts fault `i`: continues stopped pids, tells agents to revert theirs.
fn revert(st: &mut State, i: usize, now: Instant) {
    let pids = std::mem::take(&mut st.faults[i].stopped_pids);
    for &pid in &pids {
        signal(pid, libc::SIGCONT);
    }
    let id = st.faults[i].fault.id;
    let agents = st.faults[i].agent_ranks.clone();
    for r in agents {
        send_to(st, r, ToRank::Revert { id });
    }
    let at_s = st.since_start(now);
    let fs = &mut st.faults[i];
    fs.reverted_at.get_or_insert(now);
    if !pids.is_empty() {
        fs.event.reverted_at_s = Some(at_s);
    }
    fs.revert_at = None;
    if fs.agent_ranks.is_empty() {
        fs.done = true;
    }
    crate::say(&format!(
        "collbench controller: {at_s:7.3}s fault {id} reverted ({})",
        fs.fault.kind.name()
    ));
}

/// The periodic checks: fault schedule, heartbeats, stalls, abort.
fn monitor(state: &Shared, config: &Config, teardown: &dyn Fn()) {
    let mut st = lock(state);
    if st.ended {
        return;
    }
    let now = Instant::now();
    let Some(started) = st.started else {
        // Rebuilt at the start; until then only the recent part is kept.
        let timeout = config.plan.heartbeat_timeout;
        while st
            .deadlines
            .front()
            .is_some_and(|&(at, _)| now.duration_since(at) > timeout)
        {
            st.deadlines.pop_front();
        }
        return;
    };
    for i in 0..st.faults.len() {
        let fs = &st.faults[i];
        if fs.applied_at.is_none() && !fs.done && !fs.armed {
            if let Start::After(d) = fs.fault.start {
                if now >= started + d {
                    apply(&mut st, i, config, now);
                }
            }
        }
        let fs = &st.faults[i];
        if fs.revert_at.is_some_and(|t| now >= t) {
            revert(&mut st, i, now);
        }
    }
    finish_probe(&mut st, now);
    // Heartbeats.
    let timeout = config.plan.heartbeat_timeout;
    if !st.deadlines_from_start {
        // Heartbeats before the start are not judged; from here on, each rank's latest counts.
        st.deadlines_from_start = true;
        let mut all: Vec<(Instant, usize)> = st
            .ranks
            .iter()
            .map(|(&r, rs)| (rs.last_heartbeat, r))
            .collect();
        all.sort_unstable();
        st.deadlines = all.into();
    }
    let mut missing = Vec::new();
    let mut due = std::mem::take(&mut st.recheck);
    while let Some(&(at, r)) = st.deadlines.front() {
        if now.duration_since(at) <= timeout {
            break;
        }
        st.deadlines.pop_front();
        due.push(r);
    }
    for r in due {
        let Some(rs) = st.ranks.get_mut(&r) else {
            continue;
        };
        if rs.tx.is_some()
            && rs.goodbye.is_none()
            && rs.missing_since.is_none()
            && now.duration_since(rs.last_heartbeat) > timeout
        {
            if unread(rs.fd) {
                // Messages on its connection wait for this controller to read them: judge the
                // rank once they are read, not before.
                st.recheck.push(r);
                continue;
            }
            rs.missing_since = Some(now);
            missing.push((r, now.duration_since(rs.last_heartbeat)));
        }
    }
    st.missing += missing.len();
    for (r, gap) in missing {
        // A silent relay silences its node: one detection, the relay's, stands for them all.
        if relay_silent(&st, r) {
            continue;
        }
        let relayed = st
            .ranks
            .values()
            .filter(|x| x.relay == Some(r) && x.tx.is_some())
            .count();
        st.detect(
            Some(r),
            Mechanism::MissedHeartbeat,
            format!(
                "no heartbeat for {:.2}s (timeout {}){}",
                gap.as_secs_f64(),
                humantime::format_duration(timeout),
                if relayed > 0 {
                    format!("; the {relayed} rank(s) it relays go unheard with it")
                } else {
                    String::new()
                }
            ),
            true,
        );
    }
    // Progress: the sum of every live rank's calls must keep moving.
    let total = st.live_ticks;
    if total != st.ticks.0 {
        st.ticks = (total, now);
        if st.stalled {
            st.stalled = false;
            crate::say(&format!(
                "collbench controller: {:7.3}s progress resumed",
                st.since_start(now)
            ));
            if st.missing == 0 {
                st.lost_since = None;
                st.note_recovery(now);
            }
        }
    } else if !st.stalled && st.live > 0 && now.duration_since(st.ticks.1) > config.plan.stall {
        st.stalled = true;
        let (rank, detail, known) = stall_culprit(&st, now.duration_since(st.ticks.1));
        st.detect(rank, Mechanism::ProgressStall, detail.clone(), true);
        // A stall nobody explains: find the links that lose packets.
        if !known && first_rank_per_host(&st).len() >= 2 {
            start_probe(&mut st, Mechanism::ProgressStall, detail, now);
        }
    }
    // A job that stays lost is torn down: faults reverted first (agents get up to 2s to
    // confirm), then every rank's pid and the job's process group are killed.
    if let Some(since) = st.lost_since {
        if st.aborting.is_none() && now.duration_since(since) > config.plan.abort_after {
            let why = format!(
                "no recovery within {} of the first detection",
                humantime::format_duration(config.plan.abort_after)
            );
            crate::say(&format!(
                "collbench controller: {:7.3}s tearing the job down: {why}",
                st.since_start(now)
            ));
            st.timeline.torn_down = Some(why);
            st.aborting = Some(now);
            for i in 0..st.faults.len() {
                if st.faults[i].applied_at.is_some() && !st.faults[i].done {
                    revert(&mut st, i, now);
                }
            }
        }
    }
    if let (Some(t), false) = (st.aborting, st.killed) {
        let pending = st
            .faults
            .iter()
            .any(|f| !f.done && !f.agent_ranks.is_empty());
        if !pending || now.duration_since(t) > Duration::from_secs(2) {
            st.killed = true;
            for rs in st.ranks.values() {
                if rs.local_pid {
                    signal(rs.hello.pid, libc::SIGCONT);
                    signal(rs.hello.pid, libc::SIGKILL);
                }
            }
            teardown();
        }
    }
}

/// Whether rank `r` is heard through a relay that is itself missing.
fn relay_silent(st: &State, r: usize) -> bool {
    st.ranks
        .get(&r)
        .and_then(|x| x.relay)
        .and_then(|q| st.ranks.get(&q))
        .is_some_and(|q| q.missing_since.is_some())
}

/// A link fault whose agent never confirmed its revert (killed with the job): heal the host it
/// was on where this process can reach it (a network namespace here, or this host).
fn backstop_heal(f: &Fault) {
    let host = match &f.target {
        Target::Link { node, .. } | Target::Node(node) | Target::Pair(node, _) => node.clone(),
        Target::Rank(_) => return,
    };
    let at = match super::link::NetnsName::parse(&host) {
        Ok(ns) if ns.exists() => super::link::Where::Netns(ns),
        _ if host == crate::bootstrap::hostname() => super::link::Where::Local,
        _ => {
            crate::say(&format!(
                "collbench controller: fault {} on {host} was not confirmed reverted; run `collbench heal` on {host}",
                f.id
            ));
            return;
        }
    };
    match super::link::heal(&at) {
        Ok(ran) => crate::say(&format!(
            "collbench controller: fault {} on {host} was not confirmed reverted; healed it ({} command(s))",
            f.id,
            ran.len()
        )),
        Err(e) => crate::say(&format!(
            "collbench controller: healing {host} after fault {}: {e}; run `collbench heal` there",
            f.id
        )),
    }
}

/// Window over which retransmissions are attributed, and the least that counts.
const RETRANS_WINDOW: Duration = Duration::from_secs(3);
const RETRANS_MIN: u64 = 30;

/// Retransmissions per pair of hosts over the window; when they concentrate on some pairs, every
/// host probes every other (ICMP loss), and the host whose links to several peers lose packets is
/// named. With two hosts, or probes that see no loss, the pair is named.
fn note_retransmits(st: &mut State, rank: usize, deltas: Vec<(String, u64)>, now: Instant) {
    let host = st.ranks[&rank].hello.host.clone();
    for (peer, d) in deltas {
        let peer_host = host_of_addr(st, &peer).unwrap_or(peer);
        st.retrans.push_back((now, host.clone(), peer_host, d));
    }
    while st
        .retrans
        .front()
        .is_some_and(|(t, ..)| now.duration_since(*t) > RETRANS_WINDOW)
    {
        st.retrans.pop_front();
    }
    let total: u64 = st.retrans.iter().map(|e| e.3).sum();
    if total < RETRANS_MIN || st.probe.is_some() {
        return;
    }
    if st
        .last_probe
        .is_some_and(|t| now.duration_since(t) < Duration::from_secs(5))
    {
        return;
    }
    let mut pairs: BTreeMap<(String, String), u64> = BTreeMap::new();
    for (_, a, b, d) in &st.retrans {
        let key = if a < b {
            (a.clone(), b.clone())
        } else {
            (b.clone(), a.clone())
        };
        *pairs.entry(key).or_default() += d;
    }
    let lossy: Vec<((String, String), u64)> = pairs
        .into_iter()
        .filter(|(_, n)| *n >= (total / 10).max(3))
        .collect();
    let hosts = first_rank_per_host(st);
    let summary = lossy
        .iter()
        .map(|((a, b), n)| format!("{a}-{b}: {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    let detail = format!(
        "{total} TCP retransmissions in the last {}s ({summary})",
        RETRANS_WINDOW.as_secs()
    );
    if hosts.len() < 3 {
        st.last_probe = Some(now);
        st.detect(
            None,
            Mechanism::Retransmits,
            format!("{detail}; with two hosts the link between them is to blame"),
            false,
        );
        return;
    }
    start_probe(st, Mechanism::Retransmits, detail, now);
}

/// Asks every host to probe every other one; `finish_probe` judges the answers.
fn start_probe(st: &mut State, mechanism: Mechanism, detail: String, now: Instant) {
    if st.probe.is_some() {
        return;
    }
    let hosts = first_rank_per_host(st);
    for (h, r) in &hosts {
        let peers = addrs_where(st, |x| x != h);
        send_to(st, *r, ToRank::Probe { peers });
    }
    crate::say(&format!(
        "collbench controller: {:7.3}s {detail}; probing every host pair",
        st.since_start(now)
    ));
    st.last_probe = Some(now);
    st.probe = Some(Probe {
        started: now,
        mechanism,
        detail,
        results: BTreeMap::new(),
        expected: hosts.len(),
    });
}

/// The IPv4 addresses (no prefix) the registered hosts matching `host` reported, each once.
fn addrs_where(st: &State, host: impl Fn(&str) -> bool) -> Vec<String> {
    st.ranks
        .values()
        .filter(|r| host(&r.hello.host))
        .flat_map(|r| r.hello.addrs.iter())
        .map(|(_, a)| a.split('/').next().unwrap_or("").to_string())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

fn host_of_addr(st: &State, addr: &str) -> Option<String> {
    st.ranks
        .values()
        .find(|r| {
            r.hello
                .addrs
                .iter()
                .any(|(_, a)| a.split('/').next() == Some(addr))
        })
        .map(|r| r.hello.host.clone())
}

/// Host name to its lowest connected rank.
fn first_rank_per_host(st: &State) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for (&r, rs) in &st.ranks {
        if rs.tx.is_some() {
            m.entry(rs.hello.host.clone()).or_insert(r);
        }
    }
    m
}

/// A round of probes in flight.
struct Probe {
    started: Instant,
    /// What made the controller probe; the verdict is reported under it.
    mechanism: Mechanism,
    detail: String,
    /// Prober host -> (peer host, loss percent).
    results: BTreeMap<String, Vec<(String, f64)>>,
    expected: usize,
}

/// Judges a finished (or timed out) probe round.
fn finish_probe(st: &mut State, now: Instant) {
    let Some(p) = st.probe.as_ref() else { return };
    if p.results.len() < p.expected && now.duration_since(p.started) < Duration::from_secs(4) {
        return;
    }
    let p = st.probe.take().expect("checked above");
    let mut bad: BTreeMap<(String, String), f64> = BTreeMap::new();
    for (from, res) in &p.results {
        for (to, loss) in res {
            if *loss > 0.0 {
                let key = if from < to {
                    (from.clone(), to.clone())
                } else {
                    (to.clone(), from.clone())
                };
                let e = bad.entry(key).or_default();
                *e = e.max(*loss);
            }
        }
    }
    let mut degree: BTreeMap<&str, usize> = BTreeMap::new();
    for (a, b) in bad.keys() {
        *degree.entry(a).or_default() += 1;
        *degree.entry(b).or_default() += 1;
    }
    let mut ranked: Vec<(&str, usize)> = degree.into_iter().collect();
    ranked.sort_by_key(|x| std::cmp::Reverse(x.1));
    let seen = bad
        .iter()
        .map(|((a, b), l)| format!("{a}-{b} {l:.1}%"))
        .collect::<Vec<_>>()
        .join(", ");
    let (culprit_host, verdict) = match ranked.as_slice() {
        [] => {
            crate::say(&format!(
                "collbench controller: {}; the probes saw no loss (congestion, not a lossy link)",
                p.detail
            ));
            return;
        }
        [(h, n), rest @ ..] if *n >= 2 && rest.first().is_none_or(|x| x.1 < *n) => (
            Some(h.to_string()),
            format!("probes lost packets on {n} of {h}'s links ({seen}): {h}'s link loses packets"),
        ),
        _ => (
            None,
            format!("probes lost packets on {seen}: the link between them is to blame"),
        ),
    };
    let rank = culprit_host
        .as_ref()
        .and_then(|h| first_rank_per_host(st).get(h).copied());
    st.detect(rank, p.mechanism, format!("{}; {verdict}", p.detail), false);
}

/// Who to blame for a stall: a host whose link went down recently, else ranks in a different call
/// than the rest, else nobody in particular.
fn stall_culprit(st: &State, for_: Duration) -> (Option<usize>, String, bool) {
    let head = format!("no rank advanced for {:.2}s", for_.as_secs_f64());
    if let Some(d) = st
        .timeline
        .detections
        .iter()
        .rev()
        .find(|d| d.mechanism == Mechanism::LinkDown)
    {
        return (
            d.rank,
            format!(
                "{head}; host {} reported: {}",
                d.host.as_deref().unwrap_or("?"),
                d.detail
            ),
            true,
        );
    }
    let missing: Vec<usize> = st
        .ranks
        .iter()
        .filter(|(&k, r)| r.missing_since.is_some() && r.tx.is_some() && !relay_silent(st, k))
        .map(|(&k, _)| k)
        .collect();
    if let [r] = missing[..] {
        return (
            Some(r),
            format!(
                "{head}; rank {r} on {} sends no heartbeats (stopped or its host is gone)",
                st.ranks[&r].hello.host
            ),
            true,
        );
    }
    let live: Vec<(usize, &proto::Progress)> = st
        .ranks
        .iter()
        .filter(|(_, r)| r.tx.is_some() && r.goodbye.is_none())
        .map(|(&k, r)| (k, &r.progress))
        .collect();
    let key = |p: &proto::Progress| (p.op.clone(), p.size, p.activity.clone());
    let mut counts: BTreeMap<_, usize> = BTreeMap::new();
    for (_, p) in &live {
        *counts.entry(key(p)).or_default() += 1;
    }
    if counts.len() > 1 {
        let common = counts
            .iter()
            .max_by_key(|(_, &n)| n)
            .map(|(k, _)| k.clone());
        let odd: Vec<usize> = live
            .iter()
            .filter(|(_, p)| Some(key(p)) != common)
            .map(|(r, _)| *r)
            .collect();
        if odd.len() == 1 {
            let p = live.iter().find(|(r, _)| *r == odd[0]).map(|(_, p)| *p);
            return (
                Some(odd[0]),
                format!(
                    "{head}; rank {} is in a different call ({}) than the others",
                    odd[0],
                    p.map_or(String::new(), describe)
                ),
                false,
            );
        }
    }
    let at = live.first().map_or(String::new(), |(_, p)| describe(p));
    (None, format!("{head}; every rank waits in {at}"), false)
}

fn describe(p: &proto::Progress) -> String {
    match (&p.op, p.size) {
        (Some(op), Some(size)) => format!("{} {op} {size} B iteration {}", p.activity, p.iteration),
        _ => p.activity.clone(),
    }
}
