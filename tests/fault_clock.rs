//! The controller's fault clock, against a simulated agent on the real `collbench controller`:
//! a fault counts from when its agent says it holds, not from when it was sent.

mod common;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use collbench::control::proto::{self, Hello, ToController, ToRank};

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Reads frames until one matches, within `limit`.
fn expect(s: &mut TcpStream, limit: Duration, want: impl Fn(&ToRank) -> bool) -> ToRank {
    let t0 = Instant::now();
    loop {
        assert!(t0.elapsed() < limit, "no matching command within {limit:?}");
        let msg: ToRank = proto::read_frame(s).unwrap();
        if want(&msg) {
            return msg;
        }
    }
}

/// The timeline line `fault 0 ...: applied A, reverted R` from the controller's stdout.
fn applied_and_reverted(stdout: &str) -> (f64, f64) {
    let line = stdout
        .lines()
        .find(|l| l.contains("fault 0 slow"))
        .unwrap_or_else(|| panic!("no timeline line: {stdout}"));
    let secs = |key: &str| -> f64 {
        line.split(key)
            .nth(1)
            .and_then(|x| x.split('s').next())
            .and_then(|x| x.parse().ok())
            .unwrap_or_else(|| panic!("no {key}in {line}"))
    };
    (secs("applied "), secs("reverted "))
}

/// An agent that takes 1.2 s to apply (as one whose iptables or delayer is slow to start): the
/// fault still holds its whole duration, and the timeline puts it where it held.
#[test]
fn a_fault_counts_from_when_its_agent_says_it_holds() {
    let tmp = tempfile::tempdir().unwrap();
    let ctl = common::Controller::start(
        tmp.path(),
        "[run]\nheartbeat = \"200ms\"\nheartbeat_timeout = \"30s\"\nstall = \"600s\"\nabort_after = \"600s\"\n\n\
         [[fault]]\nkind = \"slow\"\ntarget = \"rank:0\"\nstart = \"300ms\"\nduration = \"1s\"\ndelay = \"1ms\"\n",
        &[],
    );
    let mut s = TcpStream::connect(&ctl.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    proto::write_frame(
        &mut s,
        &ToController::Hello(Hello::simulated(&ctl.secret, 0, 1, "sim-0".into(), 0)),
    )
    .unwrap();
    let welcome: ToRank = proto::read_frame(&mut s).unwrap();
    assert!(matches!(welcome, ToRank::Welcome { .. }), "{welcome:?}");
    let start = unix_now();
    proto::write_frame(&mut s, &ToController::SweepStarted { unix_s: start }).unwrap();

    expect(&mut s, Duration::from_secs(10), |m| {
        matches!(m, ToRank::Apply { id: 0, .. })
    });
    let sent = unix_now() - start;
    std::thread::sleep(Duration::from_millis(1200));
    let holds = unix_now();
    proto::write_frame(
        &mut s,
        &ToController::FaultApplied {
            id: 0,
            unix_s: holds,
            revert: "nothing to undo".into(),
        },
    )
    .unwrap();
    expect(&mut s, Duration::from_secs(10), |m| {
        matches!(m, ToRank::Revert { id: 0 })
    });
    let held = unix_now() - holds;
    proto::write_frame(
        &mut s,
        &ToController::FaultReverted {
            id: 0,
            unix_s: unix_now(),
            began_unix_s: None,
        },
    )
    .unwrap();
    proto::write_frame(
        &mut s,
        &ToController::Goodbye {
            reason: "complete".into(),
        },
    )
    .unwrap();
    let (code, stdout, said) = ctl.finish();
    assert_eq!(code, Some(0), "{stdout}\n{said}");

    // The revert came a whole duration after the agent said the fault holds.
    assert!(held >= 0.95, "reverted {held:.3}s after it held\n{said}");
    let (applied, reverted) = applied_and_reverted(&stdout);
    assert!(
        (applied - (holds - start)).abs() < 0.05,
        "applied at {applied}, held from {:.3}\n{stdout}",
        holds - start
    );
    assert!(applied >= sent + 1.1, "applied {applied}, sent {sent:.3}");
    assert!(reverted >= applied + 0.95, "{stdout}");
    let line = ctl_line(&said, "fault 0 in effect");
    let lag: f64 = line
        .split('(')
        .nth(1)
        .and_then(|x| x.split('s').next())
        .and_then(|x| x.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert!((1.15..3.0).contains(&lag), "{line}");
}

fn ctl_line<'a>(said: &'a str, pat: &str) -> &'a str {
    said.lines()
        .find(|l| l.contains(pat))
        .unwrap_or_else(|| panic!("no `{pat}` in\n{said}"))
}
