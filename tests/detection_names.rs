//! Who a detection names, against simulated agents on the real `collbench controller`: the rank,
//! its host and, for a rank that registered with one, its GPU.

mod common;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use collbench::control::proto::{self, Hello, ToController, ToRank};

fn register(
    ctl: &common::Controller,
    rank: usize,
    device: Option<&str>,
    out_dir: Option<&std::path::Path>,
) -> TcpStream {
    let mut s = TcpStream::connect(&ctl.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut hello = Hello::simulated(&ctl.secret, rank, 2, format!("sim-{rank}"), 0);
    hello.device = device.map(String::from);
    hello.out_dir = out_dir.map(|d| d.display().to_string());
    proto::write_frame(&mut s, &ToController::Hello(hello)).unwrap();
    let welcome: ToRank = proto::read_frame(&mut s).unwrap();
    assert!(matches!(welcome, ToRank::Welcome { .. }), "{welcome:?}");
    s
}

/// A killed rank that registered with its GPU is named with it: in the controller's log, the
/// timeline, run.json (a real one, which the controller adds the timeline to) and report.md.
#[test]
fn a_detection_names_the_ranks_gpu_when_it_has_one() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let o = common::collbench(&[
        "bench",
        "-b",
        "8",
        "-e",
        "8",
        "-n",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", common::text(&o).1);
    let ctl = common::Controller::start(
        tmp.path(),
        "[run]\nheartbeat = \"200ms\"\nheartbeat_timeout = \"30s\"\nstall = \"600s\"\nabort_after = \"600s\"\n\n\
         [[fault]]\nkind = \"kill\"\ntarget = \"rank:1\"\nstart = \"200ms\"\n",
        &[],
    );
    let mut r0 = register(&ctl, 0, None, Some(&out));
    let mut r1 = register(&ctl, 1, Some("0000:9A:00.0"), None);
    let unix = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    };
    proto::write_frame(&mut r0, &ToController::SweepStarted { unix_s: unix() }).unwrap();
    let t0 = Instant::now();
    loop {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "no Apply for rank 1"
        );
        if let ToRank::Apply { id: 0, .. } = proto::read_frame::<ToRank>(&mut r1).unwrap() {
            break;
        }
    }
    proto::write_frame(
        &mut r1,
        &ToController::FaultApplied {
            id: 0,
            unix_s: unix(),
            revert: "none: the rank is killed".into(),
        },
    )
    .unwrap();
    // The rank dies: its connection closes without a goodbye.
    drop(r1);
    common::wait_for("the detection", Duration::from_secs(10), || {
        ctl.find("detected connection_lost").is_some()
    });
    let line = ctl.find("detected connection_lost").unwrap();
    assert!(
        line.contains("(rank 1 on sim-1, GPU 0000:9A:00.0)"),
        "{line}"
    );
    proto::write_frame(
        &mut r0,
        &ToController::Goodbye {
            reason: "complete".into(),
        },
    )
    .unwrap();
    let (_code, stdout, said) = ctl.finish();
    let timeline = stdout
        .lines()
        .find(|l| l.contains("detected") && l.contains("after it"))
        .unwrap_or_else(|| panic!("no detection in the timeline:\n{stdout}\n{said}"));
    assert!(
        timeline.contains("by rank 1 on sim-1, GPU 0000:9A:00.0: "),
        "{timeline}"
    );
    let doc = common::read_run(&out);
    common::assert_schema_valid(&doc);
    let detected = &doc["faults"][0]["detected"];
    assert_eq!(detected["device"], "0000:9A:00.0", "{detected}");
    assert_eq!(detected["mechanism"], "connection_lost", "{detected}");
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        md.contains("connection_lost (rank 1, GPU 0000:9A:00.0)"),
        "{md}"
    );
}
