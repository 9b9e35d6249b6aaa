//! `collbench check-plan`: the real binary on good and bad fault plans, with file:line errors.

mod common;

use std::process::Command;

use common::exe;

fn check(text: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plan.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(exe())
        .arg("check-plan")
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_example_plan_is_valid() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new(exe())
        .args([
            "check-plan",
            &format!("{root}/results/plans/example-node-faults.toml"),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("ok, 3 fault(s)"), "{stdout}");
    assert!(
        stdout.contains("loss link:cb-h2/eth0") && stdout.contains("privileged"),
        "{stdout}"
    );
}

#[test]
fn every_error_is_printed_with_its_line_and_the_exit_code_is_bad_input() {
    let (code, _, err) = check(
        "[[fault]]\nkind = \"hang\"\ntarget = \"rank:one\"\nstart = \"2s\"\n\n[[fault]]\nkind = \"loss\"\ntarget = \"link:h1/eth0\"\nstart = \"1s\"\nduration = \"1s\"\nloss = \"150%\"\n",
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("plan.toml:3: target: 'one' is not a rank number"),
        "{err}"
    );
    assert!(
        err.contains("plan.toml:1: a hang fault needs duration"),
        "{err}"
    );
    assert!(err.contains("plan.toml:11: loss:"), "{err}");
    assert_eq!(err.lines().count(), 3, "{err}");
}

#[test]
fn a_missing_file_is_bad_input() {
    let out = Command::new(exe())
        .args(["check-plan", "/nonexistent/plan.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/plan.toml: cannot read"));
}
