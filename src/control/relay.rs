//! Node relay (`--relay node`): the first local rank's agent speaks to the controller for its node's
//! other ranks (registration, one heartbeat per interval, merged uploads, their messages and commands).

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::agent::{self, Agent, Identity, Shared};
use super::proto::{self, Addr, ToController, ToRank};
use crate::cli::RelayArg;
use crate::metrics::LatencyHistogram;
use crate::runner::watchdog::Progress as WatchProgress;

/// Environment variable that turns the relay on for ranks started by someone else's mpirun
/// (`off`, `node`, `auto`); `--relay` wins when given.
pub const ENV_RELAY: &str = "COLLBENCH_RELAY";
/// `--relay auto` relays nodes in worlds of more ranks than this.
pub const AUTO_ABOVE: usize = 256;
/// How long a relayed rank looks for its node's relay before it registers directly.
const FIND_RELAY: Duration = Duration::from_secs(10);
/// How long a finishing relay waits for its node's ranks to say goodbye.
const FINISH_WAIT: Duration = Duration::from_secs(5);
/// How long a relayed rank has to present its registration.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

static MODE: OnceLock<RelayArg> = OnceLock::new();
/// The agent that uploads this rank's histograms, once there is one.
static SINK: Mutex<Option<Arc<Shared>>> = Mutex::new(None);

/// Sets this process's relay mode (`--relay`, else `COLLBENCH_RELAY`); the first call wins.
pub fn configure(arg: RelayArg) {
    let from_env = || match std::env::var(ENV_RELAY).as_deref() {
        Ok("node") => RelayArg::Node,
        Ok("auto") => RelayArg::Auto,
        _ => RelayArg::Off,
    };
    let _ = MODE.set(if arg == RelayArg::Off {
        from_env()
    } else {
        arg
    });
}

fn relaying(world_size: usize) -> bool {
    match MODE.get().copied().unwrap_or(RelayArg::Off) {
        RelayArg::Off => false,
        RelayArg::Node => true,
        RelayArg::Auto => world_size > AUTO_ABOVE,
    }
}

/// Starts this rank's agent: straight to the controller, or through its node's relay (local rank
/// 0 of the node is the relay: it registers with the controller and listens for the others).
pub fn start_agent(
    addr: &Addr,
    secret: &str,
    identity: Identity,
    progress: WatchProgress,
) -> Result<Agent, String> {
    let path = if relaying(identity.world_size) {
        match socket_path(secret, &identity.host) {
            Ok(p) => Some(p),
            Err(e) => {
                crate::say(&format!(
                    "collbench agent (rank {}): no node relay ({e}); registering with the controller directly",
                    identity.rank
                ));
                None
            }
        }
    } else {
        None
    };
    let agent = match path {
        None => Agent::start(addr, secret, identity, progress)?,
        Some(path) if identity.local_rank == 0 => {
            let rank = identity.rank;
            let agent = Agent::start(addr, secret, identity, progress)?;
            match Relay::listen(&path, secret, agent.shared()) {
                Ok(r) => {
                    let _ = agent.shared().relay.set(r);
                }
                Err(e) => crate::say(&format!(
                    "collbench agent (rank {rank}): cannot relay this node at {}: {e}; its ranks register directly",
                    path.display()
                )),
            }
            agent
        }
        Some(path) => via_relay(&path, addr, secret, identity, progress)?,
    };
    *SINK.lock().unwrap_or_else(|e| e.into_inner()) = Some(agent.shared());
    Ok(agent)
}

/// A relayed rank: registers with its node's relay, or with the controller when none answers.
fn via_relay(
    path: &Path,
    addr: &Addr,
    secret: &str,
    identity: Identity,
    progress: WatchProgress,
) -> Result<Agent, String> {
    let until = Instant::now() + FIND_RELAY;
    let relay = Addr::Unix(path.to_path_buf());
    let mut last = "the socket does not exist".to_string();
    loop {
        if path.exists() {
            match Agent::start(&relay, secret, identity.clone(), progress.clone()) {
                Ok(a) => return Ok(a),
                Err(e) => last = e,
            }
        }
        if Instant::now() >= until {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    crate::say(&format!(
        "collbench agent (rank {}): no node relay at {} within {}s ({last}); registering with the controller directly",
        identity.rank,
        path.display(),
        FIND_RELAY.as_secs()
    ));
    Agent::start(addr, secret, identity, progress)
}

/// The relay's socket for this run (the secret) and host: in a 0700 folder of this user's.
pub fn socket_path(secret: &str, host: &str) -> Result<PathBuf, String> {
    use std::hash::{Hash, Hasher};
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    let dir = std::env::temp_dir().join(format!("collbench-relay-{uid}"));
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("creating {}: {e}", dir.display())),
    }
    let md = std::fs::symlink_metadata(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if !md.is_dir() || md.uid() != uid || md.mode() & 0o077 != 0 {
        return Err(format!(
            "{} is not a folder of uid {uid} with mode 0700; remove it",
            dir.display()
        ));
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    secret.hash(&mut h);
    host.hash(&mut h);
    Ok(dir.join(format!("{:016x}.sock", h.finish())))
}

/// Uploads this rank's histogram of one sweep row to the controller (merged over the node first
/// when relayed); nothing without a controller.
pub fn upload(key: impl FnOnce() -> Key, hist: &LatencyHistogram) {
    let Some(shared) = SINK.lock().unwrap_or_else(|e| e.into_inner()).clone() else {
        return;
    };
    let key = key();
    match shared.relay.get() {
        Some(r) => r.add(key, hist, 1),
        None => agent::notify(&shared, &results_msg(&key, 1, hist)),
    }
}

pub use super::proto::ResultKey as Key;

fn results_msg(key: &Key, ranks: u64, hist: &LatencyHistogram) -> ToController {
    use base64::Engine;
    ToController::Results {
        key: key.clone(),
        ranks,
        histogram: base64::engine::general_purpose::STANDARD.encode(hist.to_bytes()),
    }
}

/// A rank of this node that registered through the relay.
struct Member {
    /// Where its commands go; None once its connection closed.
    conn: Option<UnixStream>,
    /// Its progress from a heartbeat since the last node heartbeat.
    fresh: Option<proto::Progress>,
    said_goodbye: bool,
    /// Its connection closed without a goodbye.
    lost: bool,
}

/// One key's uploads merged so far on this node.
struct Pending {
    hist: LatencyHistogram,
    ranks: u64,
    since: Instant,
}

pub struct Relay {
    agent: Arc<Shared>,
    secret: String,
    path: PathBuf,
    members: Mutex<BTreeMap<usize, Member>>,
    pending: Mutex<BTreeMap<Key, Pending>>,
    /// Finishing (or the controller is gone): connections that close now are not losses.
    closing: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Relay {
    /// Listens on `path` (0600) for the node's other ranks.
    fn listen(path: &Path, secret: &str, agent: Arc<Shared>) -> io::Result<Arc<Relay>> {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        listener.set_nonblocking(true)?;
        let relay = Arc::new(Relay {
            agent,
            secret: secret.to_string(),
            path: path.to_path_buf(),
            members: Mutex::new(BTreeMap::new()),
            pending: Mutex::new(BTreeMap::new()),
            closing: AtomicBool::new(false),
        });
        let r = relay.clone();
        std::thread::Builder::new()
            .name("collbench-relay".into())
            .spawn(move || r.accept(listener))?;
        Ok(relay)
    }

    fn say(&self, msg: &str) {
        let id = &self.agent.identity;
        crate::say(&format!(
            "collbench relay (rank {} on {}): {msg}",
            id.rank, id.host
        ));
    }

    fn accept(self: Arc<Self>, listener: UnixListener) {
        while !self.closing.load(Ordering::Acquire) {
            match listener.accept() {
                Ok((s, _)) => {
                    let r = self.clone();
                    let _ = std::thread::Builder::new()
                        .name("collbench-relay-rank".into())
                        .spawn(move || r.serve(s));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Err(e) => {
                    self.say(&format!("accept failed: {e}"));
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
        let _ = std::fs::remove_file(&self.path);
    }

    /// One relayed rank's connection: registration with the secret, then its messages.
    fn serve(&self, mut s: UnixStream) {
        let _ = s.set_nonblocking(false);
        let _ = s.set_read_timeout(Some(HELLO_TIMEOUT));
        let hello = match proto::read_frame::<ToController>(&mut s) {
            Ok(ToController::Hello(h)) => h,
            Ok(_) => {
                return self.say("refused a connection: its first message is not a registration")
            }
            Err(e) => return self.say(&format!("refused a connection: {e}")),
        };
        let rank = hello.rank;
        if !proto::secret_matches(&hello.secret, &self.secret) {
            self.say(&format!("refused rank {rank}: wrong secret"));
            // The controller counts and logs the refusal (it checks the secret again).
            return agent::notify(
                &self.agent,
                &ToController::Members {
                    hellos: vec![hello],
                },
            );
        }
        if rank == self.agent.identity.rank
            || lock(&self.members)
                .get(&rank)
                .is_some_and(|m| m.conn.is_some())
        {
            return self.say(&format!("refused rank {rank}: already registered"));
        }
        let _ = s.set_read_timeout(None);
        let _ = s.set_write_timeout(Some(Duration::from_secs(1)));
        let Ok(mut writer) = s.try_clone() else {
            return;
        };
        {
            // Welcomed before the controller knows it, so every command for it comes after.
            let mut members = lock(&self.members);
            let welcome = ToRank::Welcome {
                heartbeat_ms: self.agent.heartbeat_ms,
            };
            if proto::write_frame(&mut writer, &welcome).is_err() {
                return;
            }
            members.insert(
                rank,
                Member {
                    conn: Some(writer),
                    fresh: None,
                    said_goodbye: false,
                    lost: false,
                },
            );
        }
        agent::notify(
            &self.agent,
            &ToController::Members {
                hellos: vec![hello],
            },
        );
        let why = loop {
            match proto::read_frame::<ToController>(&mut s) {
                Ok(ToController::Heartbeat { progress, .. }) => {
                    if let Some(m) = lock(&self.members).get_mut(&rank) {
                        m.fresh = Some(progress);
                    }
                }
                Ok(ToController::Results {
                    key,
                    ranks,
                    histogram,
                }) => self.add_uploaded(rank, key, ranks, &histogram),
                Ok(msg) => {
                    let bye = matches!(msg, ToController::Goodbye { .. });
                    agent::notify(
                        &self.agent,
                        &ToController::Relayed {
                            rank,
                            msg: Box::new(msg),
                        },
                    );
                    if bye {
                        if let Some(m) = lock(&self.members).get_mut(&rank) {
                            m.said_goodbye = true;
                        }
                    }
                }
                Err(e) => break e,
            }
        };
        let lost = {
            let mut members = lock(&self.members);
            let m = members.get_mut(&rank).expect("registered above");
            m.conn = None;
            m.lost = !m.said_goodbye && !self.closing.load(Ordering::Acquire);
            m.lost
        };
        if lost {
            agent::notify(
                &self.agent,
                &ToController::MemberLost {
                    rank,
                    detail: format!(
                        "the rank's connection to its node relay closed without a goodbye (the process died): {why}"
                    ),
                },
            );
            // Uploads waiting for it go without it.
            self.flush(|p, expected| p.ranks >= expected);
        }
    }

    /// A command from the controller for a rank of this node.
    pub(super) fn down(&self, rank: usize, msg: &ToRank) {
        let mut members = lock(&self.members);
        if let Some(conn) = members.get_mut(&rank).and_then(|m| m.conn.as_mut()) {
            if let Err(e) = proto::write_frame(conn, msg) {
                self.say(&format!("cannot pass a command on to rank {rank}: {e}"));
            }
        }
    }

    /// One heartbeat for the node: this rank's and each relayed rank's that beat since the last.
    pub(super) fn node_heartbeat(&self, own: proto::Progress, retrans: Vec<(String, u64)>) {
        let mut ranks = vec![(self.agent.identity.rank, own)];
        for (&r, m) in lock(&self.members).iter_mut() {
            if let Some(p) = m.fresh.take() {
                ranks.push((r, p));
            }
        }
        agent::notify(&self.agent, &ToController::NodeHeartbeat { ranks, retrans });
        let stale = Duration::from_millis(self.agent.heartbeat_ms.max(500) * 2);
        self.flush(|p, _| p.since.elapsed() > stale);
    }

    fn add_uploaded(&self, rank: usize, key: Key, ranks: u64, histogram: &str) {
        use base64::Engine;
        let hist = base64::engine::general_purpose::STANDARD
            .decode(histogram)
            .map_err(|e| e.to_string())
            .and_then(|b| LatencyHistogram::from_bytes(&b).map_err(|e| e.to_string()));
        match hist {
            Ok(h) => self.add(key, &h, ranks),
            Err(e) => self.say(&format!("rank {rank}'s results for {key} dropped: {e}")),
        }
    }

    /// Merges one upload; the key goes up once every rank of the node has added to it.
    fn add(&self, key: Key, hist: &LatencyHistogram, ranks: u64) {
        {
            let mut pending = lock(&self.pending);
            let p = pending.entry(key.clone()).or_insert_with(|| Pending {
                hist: LatencyHistogram::new(),
                ranks: 0,
                since: Instant::now(),
            });
            if let Err(e) = p.hist.merge(hist) {
                return self.say(&format!("results for {key} do not merge: {e}"));
            }
            p.ranks += ranks;
        }
        self.flush(|p, expected| p.ranks >= expected);
    }

    /// Sends every pending key that `due` says is ready (given how many ranks the node has).
    fn flush(&self, due: impl Fn(&Pending, u64) -> bool) {
        let ready: Vec<(Key, Pending)> = {
            let mut pending = lock(&self.pending);
            let expected = 1 + lock(&self.members).values().filter(|m| !m.lost).count() as u64;
            let keys: Vec<Key> = pending
                .iter()
                .filter(|(_, p)| due(p, expected))
                .map(|(k, _)| k.clone())
                .collect();
            keys.into_iter()
                .filter_map(|k| pending.remove(&k).map(|p| (k, p)))
                .collect()
        };
        for (k, p) in ready {
            agent::notify(&self.agent, &results_msg(&k, p.ranks, &p.hist));
        }
    }

    /// The relay's rank ends: waits (heartbeats going on) for the node's ranks to say goodbye,
    /// sends what is merged, and reports the ranks still connected as lost.
    pub(super) fn finish(&self) {
        let until = Instant::now() + FINISH_WAIT;
        let waiting = || {
            lock(&self.members)
                .values()
                .any(|m| m.conn.is_some() && !m.said_goodbye)
        };
        while waiting() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.closing.store(true, Ordering::Release);
        self.flush(|_, _| true);
        let rank = self.agent.identity.rank;
        let mut members = lock(&self.members);
        for (&r, m) in members.iter_mut() {
            if let Some(c) = m.conn.take() {
                if !m.said_goodbye {
                    agent::notify(
                        &self.agent,
                        &ToController::MemberLost {
                            rank: r,
                            detail: format!(
                                "the rank was still running {}s after its node relay (rank {rank}) ended; no longer watched",
                                FINISH_WAIT.as_secs()
                            ),
                        },
                    );
                }
                let _ = c.shutdown(std::net::Shutdown::Both);
            }
        }
    }

    /// The relay lost its controller: the node's ranks lose theirs (they revert their faults).
    pub(super) fn controller_lost(&self) {
        self.closing.store(true, Ordering::Release);
        for m in lock(&self.members).values_mut() {
            if let Some(c) = m.conn.take() {
                let _ = c.shutdown(std::net::Shutdown::Both);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_socket_is_per_run_and_host_in_a_private_folder() {
        use std::os::unix::fs::PermissionsExt;
        let a = super::socket_path("secret-a", "node1").unwrap();
        assert_eq!(a, super::socket_path("secret-a", "node1").unwrap());
        assert_ne!(a, super::socket_path("secret-b", "node1").unwrap());
        assert_ne!(a, super::socket_path("secret-a", "node2").unwrap());
        let dir = a.parent().unwrap();
        let mode = std::fs::metadata(dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        assert!(a.as_os_str().len() < 100, "fits sun_path: {}", a.display());
    }
}
