//! Load generator for the controller: starts the real `collbench controller` binary and simulates N ranks
//! speaking the real control protocol (register, 1 s heartbeats with progress, one silent rank,
//! per-(op, size) histogram uploads, goodbye), then reports registration time, controller CPU and peak
//! RSS (from wait4), merge+write time and the silent rank's detection latency.
//!
//! cargo build --release --bin collbench --example control_load
//! target/release/examples/control_load --ranks 100000
//! (`--per-node 8` simulates per-node aggregation: one relay connection per node.)

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use clap::Parser;
use collbench::control::proto::{self, Hello, Progress, ResultKey, ToController, ToRank};
use collbench::metrics::LatencyHistogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Parser, Debug, Clone)]
struct Args {
    /// Simulated ranks.
    #[arg(long, default_value_t = 1000)]
    ranks: usize,
    /// Ranks per node; above 1 each node's first rank relays its node's heartbeats and merged
    /// histograms in one message (per-node aggregation).
    #[arg(long, default_value_t = 1)]
    per_node: usize,
    /// (op, size) keys each rank uploads.
    #[arg(long, default_value_t = 8)]
    keys: usize,
    /// Samples in each uploaded histogram.
    #[arg(long, default_value_t = 1000)]
    samples: usize,
    /// Seconds of steady heartbeating (the silent rank goes quiet 1.5 s in, for 4 s).
    #[arg(long, default_value_t = 7)]
    steady: u64,
    /// OS threads driving the simulated ranks (each a single-threaded runtime).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// tcp (loopback, several 127.0.0.x source addresses) or unix.
    #[arg(long, default_value = "tcp")]
    transport: String,
    /// The collbench binary.
    #[arg(long, default_value = "target/release/collbench")]
    bin: PathBuf,
    /// Heartbeat timeout the plan sets (heartbeats are every 1 s).
    #[arg(long, default_value_t = 2500)]
    timeout_ms: u64,
    /// Print one JSON line of results at the end.
    #[arg(long)]
    json: bool,
}

const OPS: [&str; 4] = ["all_reduce", "all_gather", "reduce_scatter", "broadcast"];
/// Distinct histograms per key, reused across ranks (rank r uploads template r % TEMPLATES).
const TEMPLATES: usize = 32;

/// What the controller's output told us, with when.
#[derive(Default)]
struct Seen {
    addr: Option<String>,
    secret_file: Option<String>,
    detected: Vec<(Instant, String)>,
    written: Option<Instant>,
    lines: Vec<String>,
}

struct Shared {
    args: Args,
    addr: proto::Addr,
    secret: String,
    /// Connections (ranks or node relays) that got their Welcome.
    welcomed: AtomicUsize,
    all_welcomed: Mutex<Option<Instant>>,
    /// 0 registering, 1 heartbeating, 2 uploading.
    phase: tokio::sync::watch::Sender<u8>,
    silent: usize,
    silent_from: Mutex<Option<Instant>>,
    silent_until: Mutex<Option<Instant>>,
    /// The silent rank's last heartbeat before it went quiet.
    last_before_silence: Mutex<Option<Instant>>,
    uploads_sent: AtomicUsize,
    /// When each connection's uploads were written (µs since t0).
    sent_at: Vec<AtomicU64>,
    t0: Instant,
    done: AtomicUsize,
    errors: AtomicUsize,
    first_error: Mutex<Option<String>>,
    /// The Results frames of every key, encoded once per template slot (a relay's slot is
    /// (members - 1) * TEMPLATES + id % TEMPLATES), so the generator's own cost stays small.
    uploads: Vec<Vec<u8>>,
    heartbeats: AtomicU64,
}

fn raise_nofile(n: u64) {
    let lim = libc::rlimit {
        rlim_cur: n,
        rlim_max: n,
    };
    // SAFETY: setrlimit with a valid struct; raising the hard limit needs root, else the soft one is raised.
    unsafe {
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
            let mut cur = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut cur);
            cur.rlim_cur = cur.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &cur);
            eprintln!(
                "control_load: could not raise the fd limit to {n}; it is {} (run as root for more)",
                cur.rlim_max
            );
        }
    }
}

/// utime+stime of a process in seconds (from /proc).
fn cpu_s(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = s.rsplit_once(')').map_or("", |x| x.1);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let g = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (g(11) + g(12)) / tick
}

fn rss_mib(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn lcg(seed: &mut u64) -> u64 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *seed >> 33
}

fn key(k: usize) -> (String, u64) {
    (OPS[k % OPS.len()].to_string(), 8u64 << (k / OPS.len() * 4))
}

fn frame<T: serde::Serialize>(m: &T) -> Vec<u8> {
    proto::encode(m)
}

async fn read_msg<R: tokio::io::AsyncRead + Unpin>(r: &mut R) -> std::io::Result<ToRank> {
    let len = r.read_u32().await? as usize;
    if len > proto::MAX_FRAME {
        return Err(std::io::Error::other("frame too large"));
    }
    let mut b = vec![0u8; len];
    r.read_exact(&mut b).await?;
    proto::decode(&b).map_err(|e| std::io::Error::other(e.to_string()))
}

trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for T {}

async fn connect(sh: &Shared, id: usize) -> std::io::Result<Box<dyn Stream>> {
    match &sh.addr {
        proto::Addr::Unix(p) => Ok(Box::new(tokio::net::UnixStream::connect(p).await?)),
        proto::Addr::Tcp(a) => {
            let to: std::net::SocketAddr = a.parse().map_err(std::io::Error::other)?;
            let sock = tokio::net::TcpSocket::new_v4()?;
            // Spread over 127.0.0.2-17 so 100k connections fit the ephemeral port range; the port
            // is picked at connect (IP_BIND_ADDRESS_NO_PORT).
            let one: libc::c_int = 1;
            use std::os::fd::AsRawFd;
            // SAFETY: setsockopt on a socket we own with an int option.
            unsafe {
                libc::setsockopt(
                    sock.as_raw_fd(),
                    libc::IPPROTO_IP,
                    libc::IP_BIND_ADDRESS_NO_PORT,
                    &one as *const _ as *const libc::c_void,
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
            let src = std::net::Ipv4Addr::new(127, 0, 0, 2 + (id % 16) as u8);
            sock.bind((src, 0).into())?;
            Ok(Box::new(sock.connect(to).await?))
        }
    }
}

/// One simulated connection: a rank, or (per_node > 1) a node relay speaking for `members` ranks.
async fn sim(sh: Arc<Shared>, id: usize, gate: Arc<tokio::sync::Semaphore>) {
    if let Err(e) = sim_inner(&sh, id, gate).await {
        sh.errors.fetch_add(1, Ordering::Relaxed);
        sh.first_error
            .lock()
            .unwrap()
            .get_or_insert(format!("connection {id}: {e}"));
    }
    sh.done.fetch_add(1, Ordering::Relaxed);
}

async fn sim_inner(
    sh: &Shared,
    id: usize,
    gate: Arc<tokio::sync::Semaphore>,
) -> std::io::Result<()> {
    let a = &sh.args;
    let first = id * a.per_node;
    let members: Vec<usize> = (first..(first + a.per_node).min(a.ranks)).collect();
    let relay = a.per_node > 1;
    let mut phase = sh.phase.subscribe();
    let mut conn = {
        let _permit = gate.acquire().await.expect("semaphore open");
        let mut conn = connect(sh, id).await?;
        let hello = |rank: usize| {
            let host = format!("sim-{:06}", rank / a.per_node);
            Hello::simulated(&sh.secret, rank, a.ranks, host, rank % a.per_node)
        };
        let mut bytes = frame(&ToController::Hello(hello(first)));
        if relay {
            bytes.extend(frame(&ToController::Members {
                hellos: members[1..].iter().map(|&r| hello(r)).collect(),
            }));
        }
        conn.write_all(&bytes).await?;
        match read_msg(&mut conn).await? {
            ToRank::Welcome { .. } => {}
            other => {
                return Err(std::io::Error::other(format!(
                    "expected welcome, got {other:?}"
                )))
            }
        }
        if sh.welcomed.fetch_add(1, Ordering::AcqRel) + 1 == a.ranks.div_ceil(a.per_node) {
            *sh.all_welcomed.lock().unwrap() = Some(Instant::now());
        }
        conn
    };
    let mut started = false;
    // Heartbeats spread over the second by id.
    let n_conn = a.ranks.div_ceil(a.per_node).max(1);
    let offset = Duration::from_micros((id as u64 * 1_000_000) / n_conn as u64);
    let mut next = tokio::time::Instant::now() + offset;
    let mut ticks = 0u64;
    let has_silent = members.contains(&sh.silent);
    // Heartbeats start at registration, as an agent's do; rank 0 starts the sweep with phase 1.
    loop {
        let p = *phase.borrow_and_update();
        if p == 2 {
            break;
        }
        if p == 1 && first == 0 && !started {
            started = true;
            let unix_s = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs_f64();
            conn.write_all(&frame(&ToController::SweepStarted { unix_s }))
                .await?;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = phase.changed() => continue,
        }
        next += Duration::from_secs(1);
        ticks += 100;
        let now = Instant::now();
        let silent_now = has_silent
            && sh.silent_from.lock().unwrap().is_some_and(|t| now >= t)
            && sh.silent_until.lock().unwrap().is_none_or(|t| now < t);
        let progress = |r: usize| Progress {
            ticks,
            activity: "timed loop".into(),
            op: Some("all_reduce".into()),
            size: Some(1 << 20),
            iteration: ticks + r as u64 % 7,
        };
        let msg = if relay {
            ToController::NodeHeartbeat {
                ranks: members
                    .iter()
                    .filter(|&&r| !(silent_now && r == sh.silent))
                    .map(|&r| (r, progress(r)))
                    .collect(),
                retrans: Vec::new(),
            }
        } else if silent_now {
            continue;
        } else {
            ToController::Heartbeat {
                progress: progress(first),
                retrans: Vec::new(),
            }
        };
        conn.write_all(&frame(&msg)).await?;
        sh.heartbeats.fetch_add(1, Ordering::Relaxed);
        if has_silent && sh.silent_from.lock().unwrap().is_some_and(|t| now < t) {
            *sh.last_before_silence.lock().unwrap() = Some(now);
        }
    }
    // Uploads: one per (op, size), merged over the node for a relay; then goodbye. An agent's
    // heartbeats go on from their own thread until then, so one goes first.
    let progress = |r: usize| Progress {
        ticks: ticks + 1,
        activity: "results".into(),
        op: None,
        size: None,
        iteration: r as u64,
    };
    let mut bytes = frame(&if relay {
        ToController::NodeHeartbeat {
            ranks: members.iter().map(|&r| (r, progress(r))).collect(),
            retrans: Vec::new(),
        }
    } else {
        ToController::Heartbeat {
            progress: progress(first),
            retrans: Vec::new(),
        }
    });
    let slot = if relay {
        (members.len() - 1) * TEMPLATES + id % TEMPLATES
    } else {
        id % TEMPLATES
    };
    bytes.extend_from_slice(&sh.uploads[slot]);
    bytes.extend(frame(&ToController::Goodbye {
        reason: "complete".into(),
    }));
    conn.write_all(&bytes).await?;
    sh.uploads_sent.fetch_add(1, Ordering::Relaxed);
    sh.sent_at[id].store(sh.t0.elapsed().as_micros() as u64, Ordering::Relaxed);
    // Wait for the controller to close (it does once it has read the goodbye).
    let mut sink = [0u8; 256];
    while conn.read(&mut sink).await.unwrap_or(0) > 0 {}
    Ok(())
}

// The controller is reaped with wait4 (for its rusage), not Child::wait.
#[allow(clippy::zombie_processes)]
fn main() {
    let args = Args::parse();
    assert!(args.per_node >= 1 && args.keys >= 1 && args.threads >= 1);
    let conns = args.ranks.div_ceil(args.per_node);
    raise_nofile((2 * conns + 4096) as u64);
    let dir = tempfile_dir();
    let plan = dir.join("plan.toml");
    std::fs::write(
        &plan,
        format!(
            "[run]\nheartbeat = \"1s\"\nheartbeat_timeout = \"{}ms\"\nstall = \"60s\"\nabort_after = \"600s\"\n",
            args.timeout_ms
        ),
    )
    .unwrap();
    let results = dir.join("results");
    let listen = match args.transport.as_str() {
        "unix" => format!("unix:{}", dir.join("ctl.sock").display()),
        _ => "127.0.0.1:0".into(),
    };
    let t_spawn = Instant::now();
    let mut child = std::process::Command::new(&args.bin)
        .args(["controller", "--plan"])
        .arg(&plan)
        .args(["--listen", &listen, "--results"])
        .arg(&results)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", args.bin.display()));
    let pid = child.id();
    let seen = Arc::new(Mutex::new(Seen::default()));
    for (out, is_err) in [
        (
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            false,
        ),
        (Box::new(child.stderr.take().unwrap()), true),
    ] {
        let seen = seen.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let now = Instant::now();
                let mut s = seen.lock().unwrap();
                if let Some(a) = line.strip_prefix("# collbench controller: listening on ") {
                    s.addr = a.split_whitespace().next().map(str::to_string);
                }
                if let Some(i) = line.find("COLLBENCH_SECRET_FILE=") {
                    s.secret_file = line[i + 22..].split_whitespace().next().map(str::to_string);
                }
                if line.contains("detected missed_heartbeat") {
                    s.detected.push((now, line.clone()));
                }
                if !is_err && line.contains("uploaded histograms") {
                    s.written = Some(now);
                }
                if s.lines.len() < 200 {
                    s.lines.push(line);
                }
            }
        });
    }
    let (addr, secret_file) = loop {
        {
            let s = seen.lock().unwrap();
            if let (Some(a), Some(f)) = (&s.addr, &s.secret_file) {
                break (a.clone(), f.clone());
            }
        }
        assert!(
            t_spawn.elapsed() < Duration::from_secs(10),
            "the controller did not start: {:?}",
            seen.lock().unwrap().lines
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    let secret = std::fs::read_to_string(&secret_file)
        .unwrap()
        .trim()
        .to_string();
    let templates = make_templates(&args, 1);
    let node_templates = if args.per_node > 1 {
        make_templates(&args, args.per_node)
    } else {
        Vec::new()
    };
    let expected_samples: Vec<u64> = (0..args.keys)
        .map(|k| {
            (0..conns)
                .map(|id| {
                    let t = if args.per_node > 1 {
                        let m = args.per_node.min(args.ranks - id * args.per_node);
                        &node_templates[k][(m - 1) * TEMPLATES + id % TEMPLATES]
                    } else {
                        &templates[k][id % TEMPLATES]
                    };
                    decode_len(t)
                })
                .sum()
        })
        .collect();
    let (phase, _) = tokio::sync::watch::channel(0u8);
    let sh = Arc::new(Shared {
        addr: proto::Addr::parse(&addr).unwrap(),
        secret,
        welcomed: AtomicUsize::new(0),
        all_welcomed: Mutex::new(None),
        phase,
        silent: args.ranks / 2 + 1.min(args.ranks - 1 - args.ranks / 2),
        silent_from: Mutex::new(None),
        silent_until: Mutex::new(None),
        last_before_silence: Mutex::new(None),
        uploads_sent: AtomicUsize::new(0),
        sent_at: (0..conns).map(|_| AtomicU64::new(u64::MAX)).collect(),
        t0: Instant::now(),
        done: AtomicUsize::new(0),
        errors: AtomicUsize::new(0),
        first_error: Mutex::new(None),
        uploads: {
            let set = if args.per_node > 1 {
                &node_templates
            } else {
                &templates
            };
            (0..set[0].len())
                .map(|t| {
                    let mut b = Vec::new();
                    for (k, hists) in set.iter().enumerate() {
                        let (op, size) = key(k);
                        b.extend(frame(&ToController::Results {
                            key: ResultKey {
                                op,
                                dtype: "float".into(),
                                redop: "sum".into(),
                                size,
                                placement: "out_of_place".into(),
                            },
                            ranks: if args.per_node > 1 {
                                1 + t / TEMPLATES
                            } else {
                                1
                            } as u64,
                            histogram: hists[t].clone(),
                        }));
                    }
                    b
                })
                .collect()
        },
        heartbeats: AtomicU64::new(0),
        args: args.clone(),
    });
    let cpu0 = cpu_s(pid);
    let t0 = Instant::now();
    let mut handles = Vec::new();
    for th in 0..args.threads {
        let sh = sh.clone();
        handles.push(std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let gate = Arc::new(tokio::sync::Semaphore::new(256));
                let mut set = tokio::task::JoinSet::new();
                for id in (th..conns).step_by(sh.args.threads) {
                    set.spawn(sim(sh.clone(), id, gate.clone()));
                }
                while set.join_next().await.is_some() {}
            });
        }));
    }
    // Registration.
    let reg = loop {
        if let Some(t) = *sh.all_welcomed.lock().unwrap() {
            break t.duration_since(t0);
        }
        if sh.errors.load(Ordering::Relaxed) > 0 {
            panic!("{}", sh.first_error.lock().unwrap().clone().unwrap());
        }
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "only {} of {conns} connections registered in 300 s",
            sh.welcomed.load(Ordering::Relaxed)
        );
        std::thread::sleep(Duration::from_millis(2));
    };
    let cpu_reg = cpu_s(pid) - cpu0;
    let rss_reg = rss_mib(pid);
    // Steady heartbeats, with one rank silent for 4 s from 1.5 s in.
    let t_hb = Instant::now();
    *sh.silent_from.lock().unwrap() = Some(t_hb + Duration::from_millis(1500));
    *sh.silent_until.lock().unwrap() = Some(t_hb + Duration::from_millis(5500));
    let cpu1 = cpu_s(pid);
    sh.phase.send_replace(1);
    std::thread::sleep(Duration::from_secs(args.steady.max(6)));
    let steady_s = t_hb.elapsed().as_secs_f64();
    let cpu_steady = cpu_s(pid) - cpu1;
    let rss_steady = rss_mib(pid);
    let hb_sent = sh.heartbeats.load(Ordering::Relaxed);
    // Uploads and goodbyes; the controller merges, writes and exits.
    let t_up = Instant::now();
    let cpu2 = cpu_s(pid);
    sh.phase.send_replace(2);
    let mut status = 0;
    // SAFETY: rusage of our own child, reaped here.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let cpu_up_sampled;
    loop {
        let c = cpu_s(pid);
        let r = unsafe { libc::wait4(pid as i32, &mut status, libc::WNOHANG, &mut ru) };
        if r == pid as i32 {
            cpu_up_sampled = c - cpu2;
            break;
        }
        assert!(
            t_up.elapsed() < Duration::from_secs(300),
            "the controller did not end"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let t_exit = Instant::now();
    for h in handles {
        let _ = h.join();
    }
    let s = seen.lock().unwrap();
    let written = s.written.map(|t| t.duration_since(t_up).as_secs_f64());
    let last_hb = *sh.last_before_silence.lock().unwrap();
    let detection = s
        .detected
        .iter()
        .find(|(_, l)| l.contains(&format!("(rank {} ", sh.silent)));
    let det_s = match (detection, last_hb) {
        (Some((t, _)), Some(h)) => Some(t.duration_since(h).as_secs_f64()),
        _ => None,
    };
    let false_detections = s.detected.len() - detection.is_some() as usize;
    // Detections of ranks whose uploads this generator had not yet written: its own lag.
    let lagged = s
        .detected
        .iter()
        .filter(|(t, l)| {
            let r = l
                .split("(rank ")
                .nth(1)
                .and_then(|x| x.split_whitespace().next())
                .and_then(|x| x.parse::<usize>().ok());
            r.is_some_and(|r| {
                r != sh.silent
                    && sh.sent_at[r / args.per_node].load(Ordering::Relaxed)
                        > t.duration_since(sh.t0).as_micros() as u64
            })
        })
        .count();
    // Check the written results against what was sent.
    let doc: serde_json::Value = serde_json::from_slice(
        &std::fs::read(results.join("controller_results.json")).expect("controller_results.json"),
    )
    .unwrap();
    let rows = doc["results"].as_array().unwrap();
    let mut ok = rows.len() == args.keys && doc["registered_ranks"] == args.ranks;
    for (k, exp) in expected_samples.iter().enumerate() {
        let (op, size) = key(k);
        let row = rows
            .iter()
            .find(|r| r["op"] == op.as_str() && r["size_bytes"] == size);
        ok &= row.is_some_and(|r| r["ranks"] == args.ranks && r["latency"]["samples"] == *exp);
    }
    let maxrss_mib = ru.ru_maxrss as f64 / 1024.0;
    let cpu_total = ru.ru_utime.tv_sec as f64
        + ru.ru_utime.tv_usec as f64 / 1e6
        + ru.ru_stime.tv_sec as f64
        + ru.ru_stime.tv_usec as f64 / 1e6;
    let timeout = args.timeout_ms as f64 / 1000.0;
    println!(
        "ranks {} per_node {} transport {}: registered in {:.2}s (controller CPU {:.2}s, RSS {:.0} MiB); \
steady {:.1}s: {} heartbeats, controller CPU {:.2}s ({:.0}% of a core), RSS {:.0} MiB; \
uploads of {} keys: merged+written {} (exit {:.2}s, CPU {:.2}s); silent rank {}: detected {} after its last heartbeat ({} beyond the {timeout}s timeout), {} other detections ({} of ranks this generator had not yet uploaded for); \
controller total CPU {:.2}s, peak RSS {:.0} MiB; exit status {}; results {}",
        args.ranks,
        args.per_node,
        args.transport,
        reg.as_secs_f64(),
        cpu_reg,
        rss_reg,
        steady_s,
        hb_sent,
        cpu_steady,
        100.0 * cpu_steady / steady_s,
        rss_steady,
        args.keys,
        written.map_or("never".into(), |w| format!("{w:.2}s")),
        t_exit.duration_since(t_up).as_secs_f64(),
        cpu_up_sampled,
        sh.silent,
        det_s.map_or("never".into(), |d| format!("{d:.3}s")),
        det_s.map_or("-".into(), |d| format!("{:.3}s", d - timeout)),
        false_detections,
        lagged,
        cpu_total,
        maxrss_mib,
        status,
        if ok { "match" } else { "MISMATCH" }
    );
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "ranks": args.ranks, "per_node": args.per_node, "transport": args.transport,
                "register_s": reg.as_secs_f64(), "steady_cpu_frac": cpu_steady / steady_s,
                "merge_write_s": written, "detect_s": det_s, "detect_beyond_timeout_s": det_s.map(|d| d - timeout),
                "cpu_s": cpu_total, "peak_rss_mib": maxrss_mib, "results_match": ok,
                "errors": sh.errors.load(Ordering::Relaxed), "other_detections": false_detections, "generator_lagged": lagged,
            })
        );
    }
    if !ok || sh.errors.load(Ordering::Relaxed) > 0 {
        eprintln!(
            "control_load: errors {} ({:?}); controller said: {:#?}",
            sh.errors.load(Ordering::Relaxed),
            sh.first_error.lock().unwrap(),
            s.lines
        );
        std::process::exit(1);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn decode_len(b64: &str) -> u64 {
    let b = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    LatencyHistogram::from_bytes(&b).unwrap().len()
}

/// TEMPLATES histograms per key, each merging `merged` ranks' samples.
fn make_templates(a: &Args, merged: usize) -> Vec<Vec<String>> {
    let mut seed = 42u64;
    (0..a.keys)
        .map(|k| {
            let base = 2_000 * (k as u64 + 1);
            (0..TEMPLATES * merged.max(1))
                .map(|t| {
                    let mut h = LatencyHistogram::new();
                    let n = merged.min(1 + t / TEMPLATES).max(1);
                    for _ in 0..a.samples * n {
                        h.record(base + lcg(&mut seed) % (base * 4) + (t as u64 % 3) * 50_000);
                    }
                    base64::engine::general_purpose::STANDARD.encode(h.to_bytes())
                })
                .collect()
        })
        .collect()
}

fn tempfile_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("collbench-load-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}
