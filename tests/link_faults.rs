//! Link faults on a real virtual cluster (scripts/vcluster: network namespaces, veths, a bridge):
//! each fault applied, its effect observed with real traffic, reverted, and healed. Needs root.

#[macro_use]
mod common;

use common::{unique_prefix, vcluster, Cluster};

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use collbench::control::link::{
    self, BitRate, Fault, IfaceName, Ipv4Cidr, LinkError, NetnsName, Percent, Reverted, Where,
};

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().expect("start command")
}

fn expect_ok(o: &Output, what: &str) -> String {
    let (out, err) = common::text(o);
    assert!(o.status.success(), "{what} failed:\n{out}\n{err}");
    out
}

/// What the link-fault tests ask of the virtual cluster beyond starting it.
trait Hosts {
    fn at(&self, i: usize) -> Where;
    fn addr(&self, i: usize) -> Ipv4Addr;
    fn ping(&self, from: usize, to: Ipv4Addr, count: u32, interval: &str, size: u32) -> Ping;
    fn reaches(&self, from: usize, to: Ipv4Addr) -> bool;
    fn reaches_soon(&self, from: usize, to: Ipv4Addr) -> bool;
    fn assert_clean(&self, i: usize);
}

impl Hosts for Cluster {
    fn at(&self, i: usize) -> Where {
        Where::Netns(NetnsName::parse(&self.host(i)).unwrap())
    }

    fn addr(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, 0, i as u8)
    }

    /// `ping -c count -i interval -s size` from host `from` to `to`; an unreachable network
    /// (no route while the link is down) counts as nothing received.
    fn ping(&self, from: usize, to: Ipv4Addr, count: u32, interval: &str, size: u32) -> Ping {
        let o = run(Command::new("ip").args([
            "netns",
            "exec",
            &self.host(from),
            "ping",
            "-q",
            "-n",
            "-c",
            &count.to_string(),
            "-i",
            interval,
            "-s",
            &size.to_string(),
            "-W",
            "1",
            &to.to_string(),
        ]));
        let (out, err) = common::text(&o);
        if err.contains("Network is unreachable") {
            return Ping::default();
        }
        let line = out
            .lines()
            .find(|l| l.contains("packets transmitted"))
            .unwrap_or_else(|| panic!("no ping summary:\n{out}\n{err}"));
        let num = |key: &str| -> f64 {
            let before = line.split(key).next().unwrap();
            before
                .split(|c: char| c == ',' || c.is_whitespace())
                .rfind(|w| !w.is_empty())
                .and_then(|w| w.parse().ok())
                .unwrap_or_else(|| panic!("cannot read '{key}' in {line}"))
        };
        let time_ms = line
            .split("time ")
            .nth(1)
            .and_then(|t| t.trim_end_matches("ms").parse().ok())
            .unwrap_or_else(|| panic!("no time in {line}"));
        let avg_rtt_ms = out
            .lines()
            .find_map(|l| l.strip_prefix("rtt min/avg/max/mdev = "))
            .and_then(|v| v.split('/').nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN);
        Ping {
            sent: num(" packets transmitted") as u32,
            received: num(" received") as u32,
            time_ms,
            avg_rtt_ms,
        }
    }

    fn reaches(&self, from: usize, to: Ipv4Addr) -> bool {
        self.ping(from, to, 1, "1", 56).received == 1
    }

    /// Reachability comes back within a few seconds (carrier and ARP after a link comes up).
    fn reaches_soon(&self, from: usize, to: Ipv4Addr) -> bool {
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(8) {
            if self.reaches(from, to) {
                return true;
            }
        }
        false
    }

    fn assert_clean(&self, i: usize) {
        let left = link::heal_plan(&self.at(i)).expect("heal plan");
        assert!(
            left.is_empty(),
            "left on {}: {:?}",
            self.host(i),
            left.iter().map(ToString::to_string).collect::<Vec<_>>()
        );
    }
}

#[derive(Debug, Default)]
struct Ping {
    sent: u32,
    received: u32,
    time_ms: f64,
    avg_rtt_ms: f64,
}

fn eth0() -> IfaceName {
    IfaceName::parse("eth0").unwrap()
}

fn tc_show(c: &Cluster, i: usize) -> String {
    let o = run(Command::new("tc").args(["-n", &c.host(i), "qdisc", "show", "dev", "eth0"]));
    expect_ok(&o, "tc qdisc show")
}

#[test]
fn down_cuts_the_link_and_revert_restores_it() {
    need_root!();
    let c = Cluster::up(2);
    assert!(c.reaches_soon(1, c.addr(2)), "cluster not connected");
    let f = Fault::Down { iface: eth0() };
    let (lease, _delayer) = link::apply(&f, &c.at(1)).expect("apply down");
    assert!(!c.reaches(1, c.addr(2)), "ping crossed a downed link");
    assert!(!c.reaches(2, c.addr(1)), "ping reached a downed host");
    let plan = link::heal_plan(&c.at(1)).unwrap();
    assert_eq!(
        plan,
        vec![lease.revert.clone()],
        "heal sees the downed link by its alias"
    );

    assert_eq!(link::revert(&lease).unwrap(), Reverted::Done);
    assert!(c.reaches_soon(1, c.addr(2)), "link still cut after revert");
    c.assert_clean(1);
}

#[test]
fn loss_drops_some_packets_not_all() {
    need_root!();
    let c = Cluster::up(2);
    assert!(c.reaches_soon(1, c.addr(2)));
    let p = c.ping(1, c.addr(2), 40, "0.05", 56);
    assert_eq!((p.sent, p.received), (40, 40), "loss before any fault");

    let f = Fault::Loss {
        iface: eth0(),
        percent: Percent::parse("50%").unwrap(),
        seed: None,
    };
    let (lease, _delayer) = link::apply(&f, &c.at(1)).expect("apply loss");
    // 50% each way: a reply comes back for 1 in 4; 0 or 40 of 40 has odds below 1e-4.
    let p = c.ping(1, c.addr(2), 40, "0.05", 56);
    assert_eq!(p.sent, 40);
    let got = p.received;
    assert!(
        got > 0 && got < 40,
        "50% loss let {got} of 40 replies through"
    );
    let rules = run(Command::new("ip").args([
        "netns",
        "exec",
        &c.host(1),
        "nft",
        "list",
        "table",
        "inet",
        "collbench_loss_eth0",
    ]));
    let rules = expect_ok(&rules, "nft list table");
    assert_eq!(rules.matches("comment \"collbench\"").count(), 2, "{rules}");

    // The same fault twice is refused by nftables, and the error names the command.
    match link::apply(&f, &c.at(1)) {
        Err(LinkError::Failed { argv, stderr, .. }) => {
            assert!(
                argv.contains("nft create table inet collbench_loss_eth0"),
                "{argv}"
            );
            assert!(stderr.contains("File exists"), "{stderr}");
        }
        other => panic!("second loss on eth0: {other:?}"),
    }

    assert_eq!(link::revert(&lease).unwrap(), Reverted::Done);
    let p = c.ping(1, c.addr(2), 40, "0.05", 56);
    assert_eq!(p.received, 40, "loss after revert");
    c.assert_clean(1);
    assert_eq!(link::revert(&lease).unwrap(), Reverted::AlreadyGone);
}

#[test]
fn rate_limit_throttles_a_burst() {
    need_root!();
    let c = Cluster::up(2);
    assert!(c.reaches_soon(1, c.addr(2)));
    // 60 echo requests of 1428 bytes on the wire = 685 kbit, offered in 0.12 s. ping's socket
    // blocks on a full qdisc, so the limit shows as time, not loss.
    let burst = || c.ping(1, c.addr(2), 60, "0.002", 1400);
    let before = burst();
    assert_eq!(before.received, 60, "an unlimited link dropped a burst");

    let f = Fault::Rate {
        iface: eth0(),
        rate: BitRate::parse("1mbit").unwrap(),
        burst: None,
    };
    let (lease, _delayer) = link::apply(&f, &c.at(1)).expect("apply rate");
    let shown = tc_show(&c, 1);
    assert!(
        shown.contains("tbf cb01: root") && shown.contains("rate 1Mbit"),
        "{shown}"
    );
    let during = burst();
    // 685 kbit less 32 kbit of burst at 1 Mbit/s takes at least 650 ms.
    let mbit_s = 60.0 * 1428.0 * 8.0 / (during.time_ms * 1000.0);
    assert!(
        during.time_ms >= 550.0 && mbit_s < 1.3,
        "1mbit sent 685 kbit in {} ms ({mbit_s:.2} Mbit/s)",
        during.time_ms
    );
    assert!(
        during.avg_rtt_ms > 5.0,
        "no queueing under 1mbit: {during:?}"
    );

    assert_eq!(link::revert(&lease).unwrap(), Reverted::Done);
    assert!(!tc_show(&c, 1).contains("tbf"));
    let after = burst();
    assert_eq!(after.received, 60);
    assert!(
        after.time_ms < during.time_ms / 2.0,
        "still slow after revert: {after:?} vs {during:?}"
    );
    c.assert_clean(1);
}

#[test]
fn partition_cuts_one_peer_only() {
    need_root!();
    let c = Cluster::up(3);
    assert!(c.reaches_soon(1, c.addr(2)) && c.reaches_soon(1, c.addr(3)));
    let f = Fault::Partition {
        iface: eth0(),
        peers: vec![Ipv4Cidr::from(c.addr(2))],
    };
    let (lease, _delayer) = link::apply(&f, &c.at(1)).expect("apply partition");
    assert!(!c.reaches(1, c.addr(2)), "h1 reached its partitioned peer");
    assert!(!c.reaches(2, c.addr(1)), "the partitioned peer reached h1");
    assert!(
        c.reaches(1, c.addr(3)),
        "partition cut a peer it does not name"
    );
    assert!(c.reaches(1, Ipv4Addr::LOCALHOST), "partition cut loopback");
    assert!(
        c.reaches(1, c.addr(1)),
        "partition cut the host's own address"
    );

    assert_eq!(link::revert(&lease).unwrap(), Reverted::Done);
    assert!(c.reaches_soon(1, c.addr(2)));
    c.assert_clean(1);
}

/// Round-trip time of one ping from host `from` to `to`, in ms.
fn rtt_ms(c: &Cluster, from: usize, to: Ipv4Addr) -> f64 {
    let p = c.ping(from, to, 3, "0.2", 56);
    assert_eq!(p.received, 3, "ping lost packets: {p:?}");
    p.avg_rtt_ms
}

/// netem where the kernel has it, else the NFQUEUE delayer (this kernel: no netem).
#[test]
fn delay_holds_egress_for_its_time_and_revert_ends_it() {
    need_root!();
    let c = Cluster::up(2);
    assert!(c.reaches_soon(1, c.addr(2)), "cluster not connected");
    let queue = link::delay_queue_for(&eth0()).expect("netem probe");
    let f = Fault::Delay {
        iface: eth0(),
        delay: Duration::from_millis(30),
        jitter: None,
        queue,
    };
    let lease = link::Lease::with_program(f, c.at(1), Path::new(env!("CARGO_BIN_EXE_collbench")));
    assert_eq!(lease.daemon.is_some(), queue.is_some());
    let before = rtt_ms(&c, 1, c.addr(2));
    let mut daemon = link::apply_lease(&lease).expect("apply delay");
    let during = rtt_ms(&c, 1, c.addr(2));
    // Egress of h1 only: the echo request waits, the reply does not.
    assert!(
        (30.0..55.0).contains(&during),
        "rtt {during} ms under a 30 ms delay (before: {before} ms)"
    );
    // The other direction's traffic (h2 -> h1 requests) is delayed only on its reply.
    let back = rtt_ms(&c, 2, c.addr(1));
    assert!(
        back >= 30.0,
        "rtt {back} ms from h2 (h1's replies leave through the delay)"
    );
    assert_eq!(link::revert(&lease).unwrap(), Reverted::Done);
    if let Some(d) = daemon.as_mut() {
        d.stop();
    }
    let after = rtt_ms(&c, 1, c.addr(2));
    assert!(after < 10.0, "rtt {after} ms after the revert");
    c.assert_clean(1);
}

#[test]
fn a_delay_whose_delayer_dies_lets_traffic_pass_and_heal_removes_its_rule() {
    need_root!();
    let c = Cluster::up(2);
    let Some(queue) = link::delay_queue_for(&eth0()).expect("netem probe") else {
        eprintln!("SKIP: this kernel has netem; the NFQUEUE delayer is not used");
        return;
    };
    assert!(c.reaches_soon(1, c.addr(2)), "cluster not connected");
    let f = Fault::Delay {
        iface: eth0(),
        delay: Duration::from_millis(200),
        jitter: None,
        queue: Some(queue),
    };
    let lease = link::Lease::with_program(f, c.at(1), Path::new(env!("CARGO_BIN_EXE_collbench")));
    let daemon = link::apply_lease(&lease).expect("apply delay");
    assert!(rtt_ms(&c, 1, c.addr(2)) >= 200.0);
    drop(daemon);
    // The rule is still there, with no delayer: --queue-bypass lets packets through at once.
    let plan = link::heal_plan(&c.at(1)).unwrap();
    assert_eq!(plan.len(), 1, "{plan:?}");
    assert!(rtt_ms(&c, 1, c.addr(2)) < 10.0);
    let o =
        run(Command::new(env!("CARGO_BIN_EXE_collbench")).args(["heal", "--netns", &c.host(1)]));
    expect_ok(&o, "collbench heal");
    c.assert_clean(1);
}

#[test]
fn interfaces_and_namespaces_must_exist() {
    need_root!();
    let c = Cluster::up(1);
    let f = Fault::Down {
        iface: IfaceName::parse("eth9").unwrap(),
    };
    match link::apply(&f, &c.at(1)) {
        Err(LinkError::NoSuchInterface { iface, at, list }) => {
            assert_eq!(iface, "eth9");
            assert!(at.contains(&c.host(1)));
            assert_eq!(list, format!("ip -n {} -br link show", c.host(1)));
        }
        other => panic!("downing eth9: {other:?}"),
    }
    let gone = Where::Netns(NetnsName::parse(&format!("{}-h9", c.prefix)).unwrap());
    let e = link::apply(&Fault::Down { iface: eth0() }, &gone).unwrap_err();
    assert!(e.to_string().contains("does not exist"), "{e}");
    c.assert_clean(1);
}

#[test]
fn heal_removes_forgotten_faults() {
    need_root!();
    let c = Cluster::up(3);
    assert!(c.reaches_soon(1, c.addr(2)));
    let percent = Percent::parse("100%").unwrap();
    let rate = BitRate::parse("1mbit").unwrap();
    let faults = [
        Fault::Loss {
            iface: eth0(),
            percent,
            seed: None,
        },
        Fault::Rate {
            iface: eth0(),
            rate,
            burst: None,
        },
        Fault::Partition {
            iface: eth0(),
            peers: vec![c.addr(3).into()],
        },
        Fault::Down { iface: eth0() },
    ];
    for f in &faults {
        // Leases dropped on the floor: only heal can find these now.
        link::apply(f, &c.at(1)).unwrap_or_else(|e| panic!("apply {f}: {e}"));
    }
    link::apply(&faults[0], &c.at(2)).expect("loss on h2");
    assert!(!c.reaches(2, c.addr(3)));

    let exe = common::exe();
    let dry = run(Command::new(&exe).args(["heal", "--netns", &c.host(1), "--dry-run"]));
    let (out, _) = common::text(&dry);
    assert_eq!(dry.status.code(), Some(1), "{out}");
    assert_eq!(out.matches("would run: ").count(), 4, "{out}");
    assert_eq!(
        link::heal_plan(&c.at(1)).unwrap().len(),
        4,
        "dry run changed something"
    );

    let healed = run(Command::new(&exe).args(["heal", "--netns", &c.host(1)]));
    let out = expect_ok(&healed, "collbench heal");
    for expected in [
        format!(
            "+ ip netns exec {} nft delete table inet collbench_loss_eth0",
            c.host(1)
        ),
        format!(
            "+ ip netns exec {} nft delete table inet collbench_part_eth0",
            c.host(1)
        ),
        format!("+ tc -n {} qdisc del dev eth0 root handle cb01:", c.host(1)),
        format!("+ ip -n {} link set dev eth0 up alias ''", c.host(1)),
    ] {
        assert!(out.contains(&expected), "missing '{expected}' in:\n{out}");
    }
    c.assert_clean(1);
    assert!(c.reaches_soon(1, c.addr(3)), "h1 still cut off after heal");
    assert!(!c.reaches(2, c.addr(3)), "healing h1 touched h2");

    let again = run(Command::new(&exe).args(["heal", "--netns", &c.host(1)]));
    let out = expect_ok(&again, "second heal");
    assert!(out.contains("nothing collbench left"), "{out}");

    let ran = link::heal(&c.at(2)).expect("heal h2");
    assert_eq!(ran.len(), 1);
    assert!(c.reaches_soon(2, c.addr(3)));
    c.assert_clean(2);
}

fn netns_with_prefix(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&format!("{prefix}-")))
                .collect()
        })
        .unwrap_or_default()
}

fn mpirun_across(hosts: usize) {
    let c = Cluster::up(hosts);
    let (_tmp, out) = common::fresh_out();
    let o = c.bench(
        hosts,
        &[
            "-b",
            "8",
            "-e",
            "1K",
            "-n",
            "5",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    expect_ok(&o, "vcluster mpirun collbench bench");
    let doc = common::read_run(&out);
    common::assert_schema_valid(&doc);
    let mut names: Vec<String> = doc["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["hostname"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    let expected: Vec<String> = (1..=hosts).map(|i| c.host(i)).collect();
    assert_eq!(names, expected, "one rank per namespace host");

    // A process left running in a host must not survive down.
    let mut sleeper = Command::new(vcluster())
        .args([
            "exec",
            "--prefix",
            &c.prefix,
            &c.host(hosts),
            "sleep",
            "300",
        ])
        .stdin(Stdio::null())
        .spawn()
        .expect("start sleep in a host");
    let t0 = Instant::now();
    while run(Command::new("ip").args(["netns", "pids", &c.host(hosts)]))
        .stdout
        .is_empty()
    {
        assert!(t0.elapsed() < Duration::from_secs(5), "sleep never started");
        std::thread::sleep(Duration::from_millis(20));
    }

    let prefix = c.prefix.clone();
    let down = c.vcluster(&["down"]);
    expect_ok(&down, "vcluster down");
    let status = sleeper.wait().expect("wait for sleep");
    assert!(
        !status.success(),
        "the sleeper finished on its own: {status}"
    );
    assert_eq!(netns_with_prefix(&prefix), Vec::<String>::new());
    assert!(!Path::new("/run/collbench/vcluster").join(&prefix).exists());
    assert!(!Path::new("/etc/netns")
        .join(format!("{prefix}-h1"))
        .exists());
    let links = run(Command::new("ip").args(["-o", "link", "show"]));
    assert!(!String::from_utf8_lossy(&links.stdout).contains(&prefix));
    // down is idempotent, and the guard's own down finds nothing.
    expect_ok(&c.vcluster(&["down"]), "second vcluster down");
}

#[test]
fn vcluster_runs_mpi_across_two_hosts_and_leaves_nothing() {
    need_root!();
    mpirun_across(2);
}

#[test]
fn vcluster_runs_mpi_across_four_hosts_and_leaves_nothing() {
    need_root!();
    mpirun_across(4);
}

#[test]
fn vcluster_up_failing_halfway_leaves_nothing() {
    need_root!();
    let prefix = unique_prefix();
    // A file where up wants host 2's /etc/netns folder makes up fail after host 1 exists.
    std::fs::create_dir_all("/etc/netns").unwrap();
    let blocker = Path::new("/etc/netns").join(format!("{prefix}-h2"));
    std::fs::write(&blocker, "").unwrap();
    let o = run(Command::new(vcluster()).args(["up", "3", "--prefix", &prefix]));
    let _ = std::fs::remove_file(&blocker);
    let (_, err) = common::text(&o);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains("removing what it made"), "{err}");
    assert_eq!(netns_with_prefix(&prefix), Vec::<String>::new());
    assert!(!Path::new("/run/collbench/vcluster").join(&prefix).exists());
}

#[test]
fn vcluster_refuses_bad_input() {
    for (args, needle) in [
        (vec!["up", "0"], "number of hosts"),
        (vec!["up", "2", "--prefix", "Bad-Prefix"], "--prefix"),
        (vec!["up", "2", "--subnet", "10.77"], "--subnet"),
        (vec!["frobnicate"], "unknown subcommand"),
        (vec!["down", "extra"], "unexpected"),
    ] {
        let o = run(Command::new(vcluster()).args(&args));
        let (_, err) = common::text(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

/// `collbench controller --plan PLAN --allow-privileged -- vcluster mpirun ... collbench bench ...`:
/// the controller on a unix socket (reachable from every host's namespace), one rank per host.
/// What the controller gives every rank to find it and prove who it is.
const CONTROLLER_VARS: &[&str] = &["COLLBENCH_CONTROLLER", "COLLBENCH_SECRET_FILE"];

fn controller_run(c: &Cluster, plan: &str, sweep: &[&str], out: &Path) -> (Option<i32>, String) {
    let dir = out.parent().unwrap();
    let plan_path = dir.join("plan.toml");
    std::fs::write(&plan_path, plan).unwrap();
    let sock = dir.join("ctl.sock");
    let exe = common::exe();
    let mut cmd = Command::new(&exe);
    cmd.args([
        "controller",
        "--plan",
        plan_path.to_str().unwrap(),
        "--allow-privileged",
    ])
    .arg("--listen")
    .arg(format!("unix:{}", sock.display()))
    .arg("--")
    .arg(vcluster())
    .args(c.bench_argv(4, CONTROLLER_VARS, &["--out", out.to_str().unwrap()]))
    .args(sweep);
    let o = run(&mut cmd);
    let (so, se) = common::text(&o);
    (o.status.code(), format!("{so}\n{se}"))
}

/// Node relays across hosts: on 2 hosts of 2 ranks, each host's second rank registers through
/// the relay on its own host, and the controller's merged uploads (one per host and row) equal
/// what MPI gathered to rank 0.
#[test]
fn vcluster_relays_each_hosts_ranks_and_their_uploads_merge() {
    need_root!();
    let c = Cluster::up(2);
    let (_tmp, out) = common::fresh_out();
    let sweep = ["-b", "1K", "-e", "1K", "-n", "30", "--relay", "node"];
    let (code, log) = controller_run(&c, "", &sweep, &out);
    assert_eq!(code, Some(0), "{log}");
    // --map-by node: ranks 0 and 2 on host 1, 1 and 3 on host 2.
    for (rank, host, relay) in [(2, 1, 0), (3, 2, 1)] {
        let line = format!("rank {rank} registered from {} (pid", c.host(host));
        let through = format!("through relay rank {relay}");
        assert!(
            log.lines()
                .any(|l| l.contains(&line) && l.contains(&through)),
            "rank {rank} should come through rank {relay} on {}: {log}",
            c.host(host)
        );
    }
    let doc = common::read_run(&out);
    common::assert_schema_valid(&doc);
    let merged: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("controller_results.json")).expect("uploads written"),
    )
    .unwrap();
    let records = doc["results"].as_array().unwrap();
    let rows = merged["results"].as_array().unwrap();
    assert_eq!(records.len(), 4, "two ops, two placements: {doc:#}");
    assert_eq!(rows.len(), records.len(), "{merged:#}");
    for rec in records {
        let row = rows
            .iter()
            .find(|r| {
                ["op", "dtype", "redop", "size_bytes", "placement"]
                    .iter()
                    .all(|k| r[k] == rec[k])
            })
            .unwrap_or_else(|| panic!("no upload for {rec}"));
        assert_eq!(row["ranks"], 4, "{row}");
        assert_eq!(row["uploads"], 2, "one merged upload per host: {row}");
        for k in ["samples", "min_us", "p50_us", "p99_us", "max_us", "mean_us"] {
            assert_eq!(row["latency"][k], rec["latency"][k], "{k}: {row} vs {rec}");
        }
    }
    assert_hosts_clean(&c, 2);
}

fn assert_hosts_clean(c: &Cluster, hosts: usize) {
    for i in 1..=hosts {
        c.assert_clean(i);
        let pids = run(Command::new("ip").args(["netns", "pids", &c.host(i)]));
        let left: Vec<String> = String::from_utf8_lossy(&pids.stdout)
            .split_whitespace()
            .map(|p| {
                let cmd = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
                format!("{p} {}", String::from_utf8_lossy(&cmd).replace('\0', " "))
            })
            .collect();
        assert!(left.is_empty(), "processes left on {}: {left:?}", c.host(i));
    }
}

#[test]
fn a_downed_link_is_detected_its_host_named_the_job_torn_down_and_the_link_restored() {
    need_root!();
    let c = Cluster::up(4);
    let (_tmp, out) = common::fresh_out();
    let plan = format!(
        "[run]\nheartbeat = \"200ms\"\nheartbeat_timeout = \"1s\"\nstall = \"1500ms\"\nabort_after = \"2s\"\n\n\
         [[fault]]\nkind = \"down\"\ntarget = \"link:{}/eth0\"\nstart = \"1s\"\nduration = \"60s\"\n",
        c.host(2)
    );
    let sweep = [
        "-b",
        "1K",
        "-e",
        "1K",
        "-n",
        "20",
        "--op",
        "all_reduce",
        "--run-for",
        "60s",
    ];
    let (code, log) = controller_run(&c, &plan, &sweep, &out);
    assert_eq!(code, Some(3), "{log}");
    let doc = common::read_run(&out);
    common::assert_schema_valid(&doc);
    assert_eq!(doc["status"], "failed");
    assert!(
        !doc["results"].as_array().unwrap().is_empty(),
        "rows before the fault are kept"
    );
    let f = &doc["faults"][0];
    assert_eq!(f["detected"]["host"], c.host(2), "{f}");
    assert!(f["detected"]["after_s"].as_f64().unwrap() < 5.0, "{f}");
    assert_eq!(f["outcome"], "aborted");
    let stall = doc["detections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["mechanism"] == "progress_stall")
        .unwrap_or_else(|| panic!("no stall detected: {}", doc["detections"]));
    assert_eq!(
        stall["host"],
        c.host(2),
        "the stall is blamed on the host with the dead link"
    );
    assert!(doc["job"]["torn_down"].is_string());
    assert!(c.reaches_soon(1, c.addr(2)), "the link is back up");
    assert_hosts_clean(&c, 4);
}

#[test]
fn timing_ten_percent_loss_shifts_p99_and_its_host_is_named() {
    need_root!();
    let c = Cluster::up(4);
    let (_tmp, out) = common::fresh_out();
    let plan = format!(
        "[run]\nheartbeat = \"200ms\"\nheartbeat_timeout = \"2s\"\nstall = \"5s\"\n\n\
         [[fault]]\nkind = \"loss\"\ntarget = \"link:{}/eth0\"\nstart = \"2s\"\nduration = \"3s\"\nloss = \"10%\"\n",
        c.host(2)
    );
    let sweep = [
        "-b",
        "64K",
        "-e",
        "64K",
        "-n",
        "20",
        "--op",
        "all_reduce",
        "--run-for",
        "7s",
    ];
    let (code, log) = controller_run(&c, &plan, &sweep, &out);
    assert_eq!(code, Some(0), "{log}");
    let doc = common::read_run(&out);
    common::assert_schema_valid(&doc);
    let f = &doc["faults"][0];
    let ph = &f["phases"];
    let p99 = |p: &str| {
        ph[p]["p99_us"]
            .as_f64()
            .unwrap_or_else(|| panic!("no {p} phase: {f}"))
    };
    let t0 = doc["sweep_start_unix_s"].as_f64().unwrap();
    let rows: Vec<String> = doc["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let t = r["start_unix_s"].as_f64().unwrap() - t0;
            format!("{t:.2}s p99 {}", r["latency"]["p99_us"])
        })
        .collect();
    assert!(
        p99("during") > 3.0 * p99("before"),
        "p99 shift: {ph}\nfault: {f}\nrows: {rows:?}"
    );
    assert_eq!(f["detected"]["mechanism"], "retransmits", "{f}");
    assert_eq!(f["detected"]["host"], c.host(2), "{f}");
    assert!(f["reverted_at_s"].is_number());
    assert_hosts_clean(&c, 4);
}

/// A delay on one host's link (netem where the kernel has it, else the NFQUEUE delayer the agent
/// starts): every call waits for it while it holds, and not after.
#[test]
fn timing_a_delay_on_one_host_slows_every_call_while_it_holds() {
    need_root!();
    let c = Cluster::up(4);
    let (_tmp, out) = common::fresh_out();
    let plan = format!(
        "[run]\nheartbeat = \"200ms\"\nstall = \"5s\"\n\n\
         [[fault]]\nkind = \"delay\"\ntarget = \"link:{}/eth0\"\nstart = \"1500ms\"\nduration = \"2s\"\ndelay = \"20ms\"\n",
        c.host(2)
    );
    // 8 s: the revert (iptables -D) has taken up to 2.6 s here, and rows must follow it.
    let sweep = [
        "-b",
        "8",
        "-e",
        "8",
        "-n",
        "10",
        "--op",
        "all_reduce",
        "--run-for",
        "8s",
    ];
    let (code, log) = controller_run(&c, &plan, &sweep, &out);
    assert_eq!(code, Some(0), "{log}");
    let doc = common::read_run(&out);
    common::assert_schema_valid(&doc);
    let f = &doc["faults"][0];
    assert_eq!(f["outcome"], "completed", "{f}\n{log}");
    assert!(f["reverted_at_s"].is_number(), "{f}");
    let ph = &f["phases"];
    let p50 = |p: &str| {
        ph[p]["p50_us"]
            .as_f64()
            .unwrap_or_else(|| panic!("no {p} phase: {f}"))
    };
    // The window runs from when the agent said the delay holds (not when it was sent) ...
    assert!(
        log.contains("fault 0: rule in place and delayer ready in"),
        "the agent says how long the delay took to hold: {log}"
    );
    let sent = f["sent_at_s"].as_f64().expect("sent_at_s");
    assert!(f["applied_at_s"].as_f64().unwrap() >= sent, "{f}");
    // ... and it ends when the agent began the revert, which then takes a while.
    let began = f["revert_began_at_s"].as_f64().expect("revert_began_at_s");
    assert!(began <= f["reverted_at_s"].as_f64().unwrap(), "{f}");
    assert!(
        p50("during") >= 15_000.0,
        "p50 during a 20 ms delay: {f}\n{log}"
    );
    // After: the row that straddles the revert, and calls on 2 shared cores, stay well under it.
    assert!(p50("before") < 5_000.0, "{ph}");
    assert!(p50("after") < p50("during") / 2.0, "{ph}");
    assert_hosts_clean(&c, 4);
}

#[test]
fn sigterm_to_the_controller_reverts_its_faults_and_ends_the_job() {
    need_root!();
    let c = Cluster::up(4);
    let (_tmp, out) = common::fresh_out();
    let dir = out.parent().unwrap().to_path_buf();
    let plan_path = dir.join("plan.toml");
    std::fs::write(
        &plan_path,
        format!(
            "[[fault]]\nkind = \"rate\"\ntarget = \"link:{}/eth0\"\nstart = \"500ms\"\nduration = \"120s\"\nrate = \"10mbit\"\n",
            c.host(3)
        ),
    )
    .unwrap();
    let exe = common::exe();
    let mut child = Command::new(&exe)
        .args([
            "controller",
            "--plan",
            plan_path.to_str().unwrap(),
            "--allow-privileged",
        ])
        .arg("--listen")
        .arg(format!("unix:{}", dir.join("ctl.sock").display()))
        .arg("--")
        .arg(vcluster())
        .args(c.bench_argv(4, CONTROLLER_VARS, &["--out", out.to_str().unwrap()]))
        .args([
            "-b",
            "64K",
            "-e",
            "64K",
            "--op",
            "all_reduce",
            "--run-for",
            "120s",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while !tc_show(&c, 3).contains("cb01:") {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the rate limit never appeared"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: signals the controller this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(3), "{err}");
    assert!(err.contains("SIGTERM: reverting faults"), "{err}");
    assert!(!tc_show(&c, 3).contains("cb01:"), "the rate limit is gone");
    let doc = common::read_run(&out);
    common::assert_schema_valid(&doc);
    assert_eq!(doc["job"]["signal"], "SIGTERM");
    assert!(
        doc["faults"][0]["reverted_at_s"].is_number(),
        "{}",
        doc["faults"][0]
    );
    assert_hosts_clean(&c, 4);
}

#[test]
fn timing_a_partition_between_two_hosts_stalls_the_job_and_probes_find_the_pair() {
    need_root!();
    let c = Cluster::up(4);
    let (_tmp, out) = common::fresh_out();
    let plan = format!(
        "[run]\nheartbeat = \"200ms\"\nheartbeat_timeout = \"1s\"\nstall = \"1500ms\"\nabort_after = \"20s\"\n\n\
         [[fault]]\nkind = \"partition\"\ntarget = \"pair:{},{}\"\nstart = \"1s\"\nduration = \"4s\"\n",
        c.host(1),
        c.host(2)
    );
    let sweep = [
        "-b",
        "64K",
        "-e",
        "64K",
        "-n",
        "20",
        "--op",
        "all_reduce",
        "--run-for",
        "9s",
    ];
    let (code, log) = controller_run(&c, &plan, &sweep, &out);
    assert_eq!(code, Some(0), "{log}");
    let doc = common::read_run(&out);
    common::assert_schema_valid(&doc);
    let pair = format!("{}-{} 100.0%", c.host(1), c.host(2));
    assert!(
        doc["detections"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["detail"].as_str().unwrap().contains(&pair)),
        "the probes name the partitioned pair: {}",
        doc["detections"]
    );
    let f = &doc["faults"][0];
    assert_eq!(f["detected"]["mechanism"], "progress_stall", "{f}");
    assert_eq!(f["outcome"], "recovered", "{f}");
    assert_hosts_clean(&c, 4);
}
