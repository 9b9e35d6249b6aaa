//! The controller's agent inside a rank: registers with the run's secret, sends heartbeats with the
//! rank's progress, and carries out typed fault actions (node faults on itself, link faults on its host).

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::link::{self, BitRate, IfaceName, Ipv4Cidr, LinkState, Percent, Where};
use super::proto::{self, Action, Addr, Hello, LinkSpec, Mechanism, ToController, ToRank};
use crate::runner::watchdog::Progress as WatchProgress;

/// A control connection over TCP or a unix socket.
enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Conn {
    fn connect(addr: &Addr, timeout: Duration) -> io::Result<Conn> {
        match addr {
            Addr::Unix(p) => UnixStream::connect(p).map(Conn::Unix),
            Addr::Tcp(a) => {
                let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
                for sa in a.to_socket_addrs()? {
                    match TcpStream::connect_timeout(&sa, timeout) {
                        Ok(s) => {
                            let _ = s.set_nodelay(true);
                            return Ok(Conn::Tcp(s));
                        }
                        Err(e) => last = e,
                    }
                }
                Err(last)
            }
        }
    }

    fn try_clone(&self) -> io::Result<Conn> {
        Ok(match self {
            Conn::Tcp(s) => Conn::Tcp(s.try_clone()?),
            Conn::Unix(s) => Conn::Unix(s.try_clone()?),
        })
    }

    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => s.set_read_timeout(t),
            Conn::Unix(s) => s.set_read_timeout(t),
        }
    }

    fn shutdown(&self) {
        let _ = match self {
            Conn::Tcp(s) => s.shutdown(std::net::Shutdown::Both),
            Conn::Unix(s) => s.shutdown(std::net::Shutdown::Both),
        };
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.read(buf),
            Conn::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.write(buf),
            Conn::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => s.flush(),
            Conn::Unix(s) => s.flush(),
        }
    }
}

/// Who this rank is, for the registration.
#[derive(Clone, Debug)]
pub struct Identity {
    pub rank: usize,
    pub world_size: usize,
    pub host: String,
    pub local_rank: usize,
    pub device: Option<String>,
    pub out_dir: Option<String>,
}

/// A fault that waits for this rank to reach a call.
struct ArmedPoint {
    id: usize,
    op: String,
    size: u64,
    iteration: u64,
    action: Action,
    duration_ms: Option<u64>,
}

/// How much later than the controller's revert an agent reverts a timed fault by itself.
const SELF_REVERT_MARGIN: Duration = Duration::from_secs(2);

/// Something applied that must be undone: at its deadline, on Revert, or when the agent ends.
struct Held {
    id: usize,
    until: Option<Instant>,
    what: HeldKind,
}

enum HeldKind {
    Slow,
    /// A link fault, with the process it needs while it holds (the delayer), stopped after the
    /// revert.
    Link(link::Lease, Option<link::Daemon>),
    /// A down/up schedule on one interface; `next` indexes the next event.
    Flap {
        lease: link::Lease,
        start: Instant,
        events: Vec<(Duration, LinkState)>,
        next: usize,
    },
}

/// State shared by the agent's threads and the runner's fault hooks.
pub struct Shared {
    /// Nanoseconds to sleep before each collective (0: none).
    pub slow_ns: AtomicU64,
    /// Corrupt the input of the next checked iteration.
    pub corrupt: AtomicBool,
    /// Leave the run at the next call.
    pub exit: AtomicBool,
    /// Whether any point is armed (the hooks look at the list only then).
    pub armed: AtomicBool,
    points: Mutex<Vec<ArmedPoint>>,
    held: Mutex<Vec<Held>>,
    writer: Mutex<Option<Conn>>,
    stop: AtomicBool,
    said_goodbye: AtomicBool,
    pub(super) identity: Identity,
    /// Collectives through the controller that this rank waits on.
    pub rendezvous: super::rendezvous::Pending,
    /// The controller's heartbeat interval.
    pub(super) heartbeat_ms: u64,
    /// This rank relays its node (`relay.rs`): heartbeats, uploads and commands pass through it.
    pub(super) relay: std::sync::OnceLock<Arc<super::relay::Relay>>,
}

pub struct Agent {
    shared: Arc<Shared>,
    reader_conn: Option<Conn>,
    threads: Vec<JoinHandle<()>>,
}

fn say(shared: &Shared, msg: &str) {
    crate::say(&format!(
        "collbench agent (rank {} on {}): {msg}",
        shared.identity.rank, shared.identity.host
    ));
}

impl Agent {
    /// Connects, registers and waits for the controller's welcome; then starts the heartbeat and
    /// command threads.
    pub fn start(
        addr: &Addr,
        secret: &str,
        identity: Identity,
        progress: WatchProgress,
    ) -> Result<Agent, String> {
        let mut conn = Conn::connect(addr, Duration::from_secs(5))
            .map_err(|e| format!("cannot reach the controller at {addr}: {e}"))?;
        let (boot_id, pid_ns) = proto::host_identity();
        let hello = Hello {
            secret: secret.to_string(),
            rank: identity.rank,
            world_size: identity.world_size,
            host: identity.host.clone(),
            local_rank: identity.local_rank,
            pid: std::process::id(),
            // SAFETY: getppid has no preconditions.
            ppid: unsafe { libc::getppid() } as u32,
            device: identity.device.clone(),
            boot_id,
            pid_ns,
            out_dir: identity.out_dir.clone(),
            addrs: host_addrs(),
        };
        proto::write_frame(&mut conn, &ToController::Hello(hello))
            .map_err(|e| format!("registering with the controller at {addr}: {e}"))?;
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        let heartbeat_ms = match proto::read_frame::<ToRank>(&mut conn) {
            Ok(ToRank::Welcome { heartbeat_ms }) => heartbeat_ms.clamp(10, 60_000),
            Ok(other) => return Err(format!("the controller at {addr} answered {other:?} before its welcome")),
            Err(e) => {
                return Err(format!(
                    "the controller at {addr} refused this rank ({e}); is COLLBENCH_SECRET (or COLLBENCH_SECRET_FILE) the run's secret?"
                ))
            }
        };
        conn.set_read_timeout(None).map_err(|e| e.to_string())?;
        let reader = conn.try_clone().map_err(|e| e.to_string())?;
        let reader_conn = conn.try_clone().ok();
        let shared = Arc::new(Shared {
            slow_ns: AtomicU64::new(0),
            corrupt: AtomicBool::new(false),
            exit: AtomicBool::new(false),
            armed: AtomicBool::new(false),
            points: Mutex::new(Vec::new()),
            held: Mutex::new(Vec::new()),
            writer: Mutex::new(Some(conn)),
            stop: AtomicBool::new(false),
            said_goodbye: AtomicBool::new(false),
            identity,
            rendezvous: Default::default(),
            heartbeat_ms,
            relay: std::sync::OnceLock::new(),
        });
        let mut threads = Vec::new();
        let s = shared.clone();
        threads.push(
            std::thread::Builder::new()
                .name("collbench-agent-rx".into())
                .spawn(move || read_commands(&s, reader))
                .map_err(|e| e.to_string())?,
        );
        let s = shared.clone();
        threads.push(
            std::thread::Builder::new()
                .name("collbench-agent-hb".into())
                .spawn(move || beat(&s, progress, Duration::from_millis(heartbeat_ms)))
                .map_err(|e| e.to_string())?,
        );
        Ok(Agent {
            shared,
            reader_conn,
            threads,
        })
    }

    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    pub fn send(&self, msg: &ToController) {
        send(&self.shared, msg);
    }

    pub fn detected(&self, mechanism: Mechanism, detail: String, culprit: Option<usize>) {
        self.send(&ToController::Detected {
            mechanism,
            detail,
            culprit,
        });
    }

    /// Ends the agent: reverts what it holds, says goodbye and closes the connection.
    pub fn finish(mut self, reason: &str) {
        self.stop(reason);
    }

    fn stop(&mut self, reason: &str) {
        if let Some(r) = self.shared.relay.get() {
            // Heartbeats go on while the node's other ranks finish through this relay.
            r.finish();
        }
        self.shared.stop.store(true, Ordering::Release);
        self.shared.rendezvous.close("the agent stopped");
        revert_all(&self.shared, "the rank is ending");
        goodbye(&self.shared, reason);
        if let Some(c) = self.reader_conn.take() {
            c.shutdown();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.stop("rank ended");
        }
    }
}

/// Sends one message to the controller (dropped once the connection is gone).
pub fn notify(shared: &Shared, msg: &ToController) {
    send(shared, msg)
}

fn send(shared: &Shared, msg: &ToController) {
    try_send(shared, msg);
}

/// Sends one message; false when the connection is (now) gone.
pub fn try_send(shared: &Shared, msg: &ToController) -> bool {
    let mut w = shared.writer.lock().unwrap_or_else(|e| e.into_inner());
    let Some(conn) = w.as_mut() else {
        return false;
    };
    if proto::write_frame(conn, msg).is_ok() {
        return true;
    }
    *w = None;
    false
}

/// The last message of this rank; sent once.
pub fn goodbye(shared: &Shared, reason: &str) {
    if !shared.said_goodbye.swap(true, Ordering::AcqRel) {
        send(
            shared,
            &ToController::Goodbye {
                reason: reason.to_string(),
            },
        );
    }
}

fn read_commands(shared: &Arc<Shared>, mut conn: Conn) {
    loop {
        match proto::read_frame_up_to::<ToRank>(&mut conn, proto::MAX_ANSWER_FRAME) {
            Ok(msg) => handle(shared, msg),
            Err(e) => {
                shared
                    .rendezvous
                    .close(&format!("lost the controller ({e})"));
                if !shared.stop.load(Ordering::Acquire) {
                    say(
                        shared,
                        &format!("lost the controller ({e}); reverting this agent's faults and running on"),
                    );
                    revert_all(shared, "the controller is gone");
                }
                if let Some(r) = shared.relay.get() {
                    r.controller_lost();
                }
                *shared.writer.lock().unwrap_or_else(|e| e.into_inner()) = None;
                return;
            }
        }
    }
}

fn handle(shared: &Arc<Shared>, msg: ToRank) {
    match msg {
        ToRank::Welcome { .. } => {}
        ToRank::Relayed { rank, msg } => {
            if let Some(r) = shared.relay.get() {
                r.down(rank, &msg);
            }
        }
        ToRank::Apply {
            id,
            action,
            duration_ms,
        } => apply(shared, id, action, duration_ms),
        ToRank::ArmAt {
            id,
            op,
            size,
            iteration,
            action,
            duration_ms,
        } => {
            shared
                .points
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(ArmedPoint {
                    id,
                    op,
                    size,
                    iteration,
                    action,
                    duration_ms,
                });
            shared.armed.store(true, Ordering::Release);
        }
        ToRank::Probe { peers } => {
            let shared = shared.clone();
            std::thread::spawn(move || {
                let loss = probe(&peers);
                send(&shared, &ToController::ProbeResult { loss });
            });
        }
        ToRank::Revert { id } => {
            let taken: Vec<Held> = {
                let mut held = shared.held.lock().unwrap_or_else(|e| e.into_inner());
                let (mine, rest): (Vec<Held>, Vec<Held>) = held.drain(..).partition(|h| h.id == id);
                *held = rest;
                mine
            };
            for h in taken {
                undo(shared, h);
            }
        }
        ToRank::Exchanged { seq, parts, error } => shared.rendezvous.answer(seq, parts, error),
    }
}

/// Called by the runner's hooks when a point may have been reached.
pub fn reached(shared: &Arc<Shared>, op: &str, size_matches: impl Fn(u64) -> bool, iteration: u64) {
    let due: Vec<ArmedPoint> = {
        let mut points = shared.points.lock().unwrap_or_else(|e| e.into_inner());
        let hit = |p: &ArmedPoint| p.op == op && p.iteration == iteration && size_matches(p.size);
        // Called on every timed iteration while armed: allocate only when a point is reached.
        if !points.iter().any(hit) {
            return;
        }
        let (due, rest): (Vec<ArmedPoint>, Vec<ArmedPoint>) = points.drain(..).partition(hit);
        *points = rest;
        shared.armed.store(!points.is_empty(), Ordering::Release);
        due
    };
    for p in due {
        send(
            shared,
            &ToController::PointReached {
                id: p.id,
                unix_s: crate::report::unix_now(),
            },
        );
        apply(shared, p.id, p.action, p.duration_ms);
    }
}

fn apply(shared: &Arc<Shared>, id: usize, action: Action, duration_ms: Option<u64>) {
    // The controller reverts the fault its duration after this agent says it holds; this
    // deadline, a little later, is the backstop for a controller that cannot reach the agent
    // (a partition on the control path): from when the fault holds, not when it was asked for.
    let until =
        || duration_ms.map(|ms| Instant::now() + Duration::from_millis(ms) + SELF_REVERT_MARGIN);
    let applied = |revert: String| {
        send(
            shared,
            &ToController::FaultApplied {
                id,
                unix_s: crate::report::unix_now(),
                revert,
            },
        )
    };
    match action {
        Action::Slow { delay_ns } => {
            shared.slow_ns.store(delay_ns, Ordering::Relaxed);
            hold(shared, id, until(), HeldKind::Slow);
            applied("the rank stops sleeping before each collective".into());
        }
        Action::Corrupt => {
            shared.corrupt.store(true, Ordering::Release);
            applied("none: one iteration's input only".into());
        }
        Action::Exit => {
            shared.exit.store(true, Ordering::Release);
            applied("none: the rank leaves".into());
        }
        Action::Kill => {
            // Said first: nothing (a stderr pipe full behind a busy mpirun, say) may come
            // between the confirmation, which starts the detection clock, and the kill.
            say(shared, "fault: SIGKILL to itself");
            applied("none: the rank is killed".into());
            // SAFETY: kill on our own pid.
            unsafe {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
        }
        Action::Hang => {
            let ms = duration_ms.unwrap_or(1000);
            match spawn_continue_timer(ms) {
                Ok(()) => {
                    applied(format!("SIGCONT from a timer process after {ms} ms"));
                    // SAFETY: stops our own process; the timer process continues it.
                    unsafe {
                        libc::kill(libc::getpid(), libc::SIGSTOP);
                    }
                }
                Err(e) => failed(shared, id, format!("cannot start the SIGCONT timer: {e}")),
            }
        }
        Action::Link(spec) => {
            match link_fault(&spec) {
                Err(e) => failed(shared, id, e),
                Ok((fault, flap_period)) => {
                    let lease = link::Lease::new(fault, Where::Local);
                    match flap_period {
                        None => {
                            say(
                                shared,
                                &format!(
                                    "fault {id}: running `{}` (revert: `{}`)",
                                    lease.apply, lease.revert
                                ),
                            );
                            let t0 = Instant::now();
                            match link::apply_lease(&lease) {
                                Ok(daemon) => {
                                    let (what, revert) = match &daemon {
                                        Some(_) => (
                                            "rule in place and delayer ready",
                                            format!("the delayer stops, then {}", lease.revert),
                                        ),
                                        None => ("in place", lease.revert.to_string()),
                                    };
                                    let took = t0.elapsed().as_secs_f64();
                                    say(shared, &format!("fault {id}: {what} in {took:.3}s"));
                                    applied(revert);
                                    hold(shared, id, until(), HeldKind::Link(lease, daemon));
                                }
                                Err(e) => failed(shared, id, e.to_string()),
                            }
                        }
                        Some(period) => {
                            let d = Duration::from_millis(duration_ms.unwrap_or(1000));
                            match link::flap_schedule(period, d) {
                                Err(e) => failed(shared, id, e.to_string()),
                                Ok(events) => {
                                    match link::check(&lease.fault, &lease.at) {
                                        Err(e) => failed(shared, id, e.to_string()),
                                        Ok(()) => {
                                            say(shared, &format!("fault {id}: flapping with `{}` / `{}` every {}", lease.apply, lease.revert, humantime::format_duration(period)));
                                            applied(lease.revert.to_string());
                                            hold(
                                                shared,
                                                id,
                                                Some(Instant::now() + d),
                                                HeldKind::Flap {
                                                    lease,
                                                    start: Instant::now(),
                                                    events,
                                                    next: 0,
                                                },
                                            );
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn failed(shared: &Shared, id: usize, error: String) {
    say(shared, &format!("fault {id} not applied: {error}"));
    send(shared, &ToController::FaultFailed { id, error });
}

fn hold(shared: &Shared, id: usize, until: Option<Instant>, what: HeldKind) {
    shared
        .held
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(Held { id, until, what });
}

fn undo(shared: &Shared, mut h: Held) {
    let began = crate::report::unix_now();
    // The delayer goes first: it lets what it holds go, and with it gone the rule lets packets
    // pass (--queue-bypass). Deleting the rule while packets sit in its queue can take seconds.
    if let HeldKind::Link(_, delayer) = &mut h.what {
        if let Some(mut d) = delayer.take() {
            d.stop();
        }
    }
    let result = match &h.what {
        HeldKind::Slow => {
            shared.slow_ns.store(0, Ordering::Relaxed);
            Ok(())
        }
        HeldKind::Link(lease, _) | HeldKind::Flap { lease, .. } => {
            say(
                shared,
                &format!("fault {}: reverting with `{}`", h.id, lease.revert),
            );
            link::revert(lease).map(drop)
        }
    };
    let done = crate::report::unix_now();
    if done - began > 0.1 {
        say(
            shared,
            &format!("fault {}: the revert took {:.3}s", h.id, done - began),
        );
    }
    match result {
        Ok(()) => send(
            shared,
            &ToController::FaultReverted {
                id: h.id,
                unix_s: done,
                began_unix_s: Some(began),
            },
        ),
        Err(e) => {
            say(
                shared,
                &format!("fault {}: revert failed: {e}; run `collbench heal`", h.id),
            );
            send(
                shared,
                &ToController::FaultFailed {
                    id: h.id,
                    error: format!("revert failed: {e}"),
                },
            );
        }
    }
}

fn revert_all(shared: &Shared, why: &str) {
    let all: Vec<Held> = shared
        .held
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .drain(..)
        .collect();
    if !all.is_empty() {
        say(shared, &format!("{why}: reverting {} fault(s)", all.len()));
    }
    for h in all {
        undo(shared, h);
    }
}

/// Runs due reverts and flap steps; sends a heartbeat every `every`; watches interface state.
fn beat(shared: &Arc<Shared>, progress: WatchProgress, every: Duration) {
    let mut next_beat = Instant::now();
    let mut links = link_states();
    while !shared.stop.load(Ordering::Acquire) {
        let now = Instant::now();
        step_held(shared, now);
        if now >= next_beat {
            next_beat = now + every;
            let s = progress.snapshot();
            let (op, size) = match s.point {
                Some((op, size, _)) => (Some(op.name().to_string()), Some(size)),
                None => (None, None),
            };
            let retrans = if shared.identity.local_rank == 0 {
                tcp_retransmits()
            } else {
                Vec::new()
            };
            let progress = proto::Progress {
                ticks: s.ticks,
                activity: if s.armed {
                    s.activity
                } else {
                    "between calls".into()
                },
                op,
                size,
                iteration: s.iteration,
            };
            match shared.relay.get() {
                Some(r) => r.node_heartbeat(progress, retrans),
                None => send(shared, &ToController::Heartbeat { retrans, progress }),
            }
            let now_links = link_states();
            for (iface, up) in &now_links {
                let was_up = links.iter().find(|(i, _)| i == iface).map(|(_, u)| *u);
                if was_up == Some(true) && !up {
                    send(
                        shared,
                        &ToController::Detected {
                            mechanism: Mechanism::LinkDown,
                            detail: format!(
                                "interface {iface} on {} lost its link",
                                shared.identity.host
                            ),
                            culprit: Some(shared.identity.rank),
                        },
                    );
                }
            }
            links = now_links;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn step_held(shared: &Shared, now: Instant) {
    let mut due = Vec::new();
    {
        let mut held = shared.held.lock().unwrap_or_else(|e| e.into_inner());
        let mut i = 0;
        while i < held.len() {
            if let HeldKind::Flap {
                lease,
                start,
                events,
                next,
            } = &mut held[i].what
            {
                while *next < events.len() && now >= *start + events[*next].0 {
                    let argv = match events[*next].1 {
                        LinkState::Down => &lease.apply,
                        LinkState::Up => &lease.revert,
                    };
                    if let Err(e) = argv.run() {
                        crate::say(&format!("collbench agent: flap step `{argv}` failed: {e}"));
                    }
                    *next += 1;
                }
                if *next >= events.len() {
                    let h = held.remove(i);
                    send(
                        shared,
                        &ToController::FaultReverted {
                            id: h.id,
                            unix_s: crate::report::unix_now(),
                            began_unix_s: None,
                        },
                    );
                    continue;
                }
            }
            if held[i].until.is_some_and(|u| now >= u) {
                due.push(held.remove(i));
                continue;
            }
            i += 1;
        }
    }
    for h in due {
        undo(shared, h);
    }
}

/// Up/down of every interface but loopback, from sysfs (which `ip netns exec` remounts per namespace).
fn link_states() -> Vec<(String, bool)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/sys/class/net") else {
        return out;
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name == "lo" {
            continue;
        }
        if let Ok(state) = std::fs::read_to_string(e.path().join("operstate")) {
            out.push((name, state.trim() != "down"));
        }
    }
    out.sort();
    out
}

/// ICMP loss to each peer, all peers at once: 40 echoes 5 ms apart (`ping`, as root).
fn probe(peers: &[String]) -> Vec<(String, f64)> {
    let valid: Vec<std::net::Ipv4Addr> = peers
        .iter()
        .filter_map(|p| p.parse().ok())
        .take(256)
        .collect();
    let threads: Vec<_> = valid
        .into_iter()
        .map(|ip| {
            std::thread::spawn(move || {
                // ping exits 1 when replies are missing: its summary on stdout is what counts.
                let text = std::process::Command::new("ping")
                    .args(["-n", "-q", "-c", "40", "-i", "0.005", "-W", "1"])
                    .arg(ip.to_string())
                    .stdin(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default();
                (ip.to_string(), parse_ping_loss(&text))
            })
        })
        .collect();
    threads
        .into_iter()
        .filter_map(|t| t.join().ok())
        .filter_map(|(ip, loss)| loss.map(|l| (ip, l)))
        .collect()
}

/// The "N% packet loss" of ping's summary.
fn parse_ping_loss(text: &str) -> Option<f64> {
    let at = text.find("% packet loss")?;
    let head = &text[..at];
    let start = head
        .rfind(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map_or(0, |i| i + 1);
    head[start..].parse().ok()
}

/// Total TCP retransmissions per peer address over this host's open connections (`ss -tinH`).
fn tcp_retransmits() -> Vec<(String, u64)> {
    let Ok(out) = std::process::Command::new("ss")
        .args(["-tinH"])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
    else {
        return Vec::new();
    };
    parse_ss(&String::from_utf8_lossy(&out.stdout))
}

fn parse_ss(text: &str) -> Vec<(String, u64)> {
    let mut per_peer: std::collections::BTreeMap<String, u64> = Default::default();
    let mut peer: Option<String> = None;
    for line in text.lines() {
        if !line.starts_with(char::is_whitespace) {
            peer = line
                .split_whitespace()
                .nth(4)
                .and_then(|p| p.rsplit_once(':'))
                .map(|(h, _)| h.trim_matches(|c| c == '[' || c == ']').to_string())
                .filter(|h| !h.starts_with("127.") && h != "::1");
            continue;
        }
        let (Some(p), Some(r)) = (
            &peer,
            line.split_whitespace()
                .find_map(|w| w.strip_prefix("retrans:")),
        ) else {
            continue;
        };
        if let Some(total) = r.split_once('/').and_then(|(_, t)| t.parse::<u64>().ok()) {
            *per_peer.entry(p.clone()).or_default() += total;
        }
    }
    per_peer.into_iter().collect()
}

/// This host's IPv4 addresses with their prefix, loopback left out.
pub fn host_addrs() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut ifap: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills ifap with a list we free below.
    if unsafe { libc::getifaddrs(&mut ifap) } != 0 {
        return out;
    }
    let mut p = ifap;
    while !p.is_null() {
        // SAFETY: p walks the list getifaddrs returned.
        let ifa = unsafe { &*p };
        p = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_netmask.is_null() {
            continue;
        }
        // SAFETY: ifa_addr is non-null; the family says which sockaddr it is.
        if unsafe { (*ifa.ifa_addr).sa_family } as i32 != libc::AF_INET {
            continue;
        }
        // SAFETY: AF_INET addresses are sockaddr_in.
        let (addr, mask) = unsafe {
            (
                (*(ifa.ifa_addr as *const libc::sockaddr_in))
                    .sin_addr
                    .s_addr,
                (*(ifa.ifa_netmask as *const libc::sockaddr_in))
                    .sin_addr
                    .s_addr,
            )
        };
        let ip = std::net::Ipv4Addr::from(u32::from_be(addr));
        if ip.is_loopback() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string.
        let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) }
            .to_string_lossy()
            .into_owned();
        out.push((name, format!("{ip}/{}", u32::from_be(mask).count_ones())));
    }
    // SAFETY: ifap came from getifaddrs.
    unsafe { libc::freeifaddrs(ifap) };
    out
}

/// The link fault a spec names, every value validated again here; flaps return their period.
pub fn link_fault(spec: &LinkSpec) -> Result<(link::Fault, Option<Duration>), String> {
    let e = |x: link::LinkError| x.to_string();
    let iface = match (&spec.iface, spec.kind.as_str()) {
        (Some(i), _) => IfaceName::parse(i).map_err(e)?,
        (None, "partition") => iface_towards(&spec.peers)?,
        (None, k) => return Err(format!("a {k} fault needs an interface")),
    };
    let fault = match spec.kind.as_str() {
        "down" | "flap" => link::Fault::Down { iface },
        "loss" => {
            let h = spec.loss_hundredths.ok_or("a loss fault needs a loss")?;
            link::Fault::Loss {
                iface,
                percent: Percent::parse(&format!("{}.{:02}", h / 100, h % 100)).map_err(e)?,
                seed: None,
            }
        }
        "rate" => link::Fault::Rate {
            iface,
            rate: BitRate::parse(&format!(
                "{}bit",
                spec.rate_bps.ok_or("a rate fault needs a rate")?
            ))
            .map_err(e)?,
            burst: None,
        },
        "partition" => link::Fault::Partition {
            iface,
            peers: spec
                .peers
                .iter()
                .map(|p| Ipv4Cidr::parse(p).map_err(e))
                .collect::<Result<_, _>>()?,
        },
        "delay" => link::Fault::Delay {
            queue: link::delay_queue_for(&iface).map_err(e)?,
            iface,
            delay: Duration::from_micros(spec.delay_us.ok_or("a delay fault needs a delay")?),
            jitter: None,
        },
        k => return Err(format!("unknown link fault kind '{k}'")),
    };
    fault.check_values().map_err(e)?;
    let period =
        (spec.kind == "flap").then(|| Duration::from_millis(spec.period_ms.unwrap_or(1000)));
    Ok((fault, period))
}

/// The interface whose subnet holds the first peer address.
fn iface_towards(peers: &[String]) -> Result<IfaceName, String> {
    let first = peers.first().ok_or("a partition needs peer addresses")?;
    let peer: std::net::Ipv4Addr = first
        .split('/')
        .next()
        .unwrap_or("")
        .parse()
        .map_err(|_| format!("peer '{first}' is not an IPv4 address"))?;
    for (iface, cidr) in host_addrs() {
        let (a, len) = cidr.split_once('/').unwrap_or((&cidr, "32"));
        let (Ok(a), Ok(len)) = (a.parse::<std::net::Ipv4Addr>(), len.parse::<u32>()) else {
            continue;
        };
        let mask = if len == 0 {
            0
        } else {
            u32::MAX << (32 - len.min(32))
        };
        if u32::from(a) & mask == u32::from(peer) & mask {
            return IfaceName::parse(&iface).map_err(|e| e.to_string());
        }
    }
    Err(format!("no interface on this host is on {peer}'s subnet"))
}

/// Starts `collbench lease-timer` to send SIGCONT to this process after `ms`.
fn spawn_continue_timer(ms: u64) -> io::Result<()> {
    use std::os::unix::process::CommandExt;
    std::process::Command::new(std::env::current_exe()?)
        .args([
            "lease-timer",
            "--pid",
            &std::process::id().to_string(),
            "--signal",
            "cont",
            "--after-ms",
            &ms.to_string(),
        ])
        .stdin(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .map(drop)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_retransmits_per_peer_from_ss() {
        let text =
            "ESTAB 0 0 10.77.0.1:1024 10.77.0.2:33000\n\t cubic rto:204 retrans:0/12 lost:1\n\
ESTAB 0 0 10.77.0.1:1025 10.77.0.2:33001\n\t cubic retrans:1/3\n\
ESTAB 0 0 10.77.0.1:1026 10.77.0.3:33002\n\t cubic rto:200\n\
ESTAB 0 0 127.0.0.1:5 127.0.0.1:6\n\t retrans:0/9\n";
        assert_eq!(super::parse_ss(text), vec![("10.77.0.2".to_string(), 15)]);
    }

    #[test]
    fn reads_ping_loss() {
        let t = "--- 10.77.0.2 ping statistics ---\n40 packets transmitted, 34 received, 15% packet loss, time 250ms\n";
        assert_eq!(super::parse_ping_loss(t), Some(15.0));
        assert_eq!(
            super::parse_ping_loss("2 received, 2.5% packet loss"),
            Some(2.5)
        );
        assert_eq!(super::parse_ping_loss("nothing"), None);
    }
}
