//! `collbench local --np N`: starts N ranks of this binary on this machine through mpirun, with
//! the flags this machine needs (root, oversubscription), forwards signals, and returns its status.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};

/// The mpirun flavour, which decides the flags it takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MpirunKind {
    OpenMpi,
    Other,
}

/// What the machine is like, as far as the mpirun flags go.
#[derive(Clone, Copy, Debug)]
pub struct HostFacts {
    pub cores: usize,
    pub is_root: bool,
}

impl HostFacts {
    pub fn probe() -> HostFacts {
        HostFacts {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            // SAFETY: geteuid has no preconditions.
            is_root: unsafe { libc::geteuid() } == 0,
        }
    }
}

/// Asks `mpirun --version` which MPI it belongs to; None when it cannot be started.
pub fn probe_mpirun(mpirun: &Path) -> Option<MpirunKind> {
    let out = Command::new(mpirun)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    Some(if text.contains("Open MPI") || text.contains("OpenRTE") {
        MpirunKind::OpenMpi
    } else {
        MpirunKind::Other
    })
}

/// The full mpirun command line and environment for N local ranks running `program args`.
pub fn mpirun_command(
    mpirun: &Path,
    kind: MpirunKind,
    np: u32,
    host: HostFacts,
    extra: &[String],
    program: &Path,
    args: &[String],
) -> (Vec<String>, Vec<(String, String)>) {
    let mut argv = vec![mpirun.display().to_string()];
    let mut env = Vec::new();
    match kind {
        MpirunKind::OpenMpi => {
            argv.extend(["-np".to_string(), np.to_string()]);
            if host.is_root {
                env.push(("OMPI_ALLOW_RUN_AS_ROOT".into(), "1".into()));
                env.push(("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM".into(), "1".into()));
            }
            // Always allowed to place more ranks than slots: this is one machine by definition.
            argv.push("--oversubscribe".into());
            if np as usize > host.cores {
                // More ranks than cores: ranks dealt round-robin onto cores and held there, so
                // which ranks share a core is the same in every launch (left to the kernel, it
                // changes per launch and the times with it, by up to 1.4x on 2 vCPUs); and
                // yield when idle instead of busy-polling, or ranks sharing a core starve.
                // The user's own --mpirun-arg choice wins (mpirun refuses two of either).
                let given = |flag: &str| extra.iter().any(|a| a == flag);
                if !given("--bind-to") {
                    argv.extend(["--bind-to".into(), "core:overload-allowed".into()]);
                }
                if !given("--map-by") {
                    argv.extend(["--map-by".into(), "core".into()]);
                }
                argv.extend(["--mca".into(), "mpi_yield_when_idle".into(), "1".into()]);
            }
        }
        MpirunKind::Other => {
            argv.extend(["-n".to_string(), np.to_string()]);
        }
    }
    argv.extend(extra.iter().cloned());
    argv.push(program.display().to_string());
    argv.extend(args.iter().cloned());
    (argv, env)
}

static CHILD_PID: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward_signal(sig: libc::c_int) {
    let pid = CHILD_PID.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// Runs the command, forwarding SIGINT/SIGTERM to mpirun (which tears its ranks down).
/// Returns the child's exit code, or 128+signal when it died of one.
pub fn run(argv: &[String], env: &[(String, String)]) -> std::io::Result<i32> {
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]).stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn()?;
    CHILD_PID.store(child.id() as i32, Ordering::SeqCst);
    // SAFETY: the handler only reads an atomic and calls kill.
    unsafe {
        libc::signal(
            libc::SIGINT,
            forward_signal as *const () as libc::sighandler_t,
        );
        libc::signal(
            libc::SIGTERM,
            forward_signal as *const () as libc::sighandler_t,
        );
    }
    let status = child.wait()?;
    CHILD_PID.store(0, Ordering::SeqCst);
    use std::os::unix::process::ExitStatusExt;
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

/// The path of this executable, for the ranks to run.
pub fn self_exe() -> std::io::Result<PathBuf> {
    std::env::current_exe()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_oversubscribed_flags() {
        let host = HostFacts {
            cores: 2,
            is_root: true,
        };
        let (argv, env) = mpirun_command(
            Path::new("mpirun"),
            MpirunKind::OpenMpi,
            4,
            host,
            &[],
            Path::new("/bin/collbench"),
            &["bench".into()],
        );
        assert_eq!(&argv[..3], ["mpirun", "-np", "4"]);
        assert!(argv.contains(&"--oversubscribe".to_string()));
        assert!(argv
            .windows(4)
            .any(|w| w == ["--bind-to", "core:overload-allowed", "--map-by", "core"]));
        assert!(argv.contains(&"mpi_yield_when_idle".to_string()));
        assert_eq!(argv[argv.len() - 2..], ["/bin/collbench", "bench"]);
        assert!(env
            .iter()
            .any(|(k, _)| k == "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"));
    }

    #[test]
    fn the_users_binding_replaces_ours() {
        let host = HostFacts {
            cores: 2,
            is_root: false,
        };
        let extra = ["--bind-to".to_string(), "none".to_string()];
        let (argv, _) = mpirun_command(
            Path::new("mpirun"),
            MpirunKind::OpenMpi,
            4,
            host,
            &extra,
            Path::new("c"),
            &[],
        );
        assert_eq!(argv.iter().filter(|a| *a == "--bind-to").count(), 1);
        assert!(argv.windows(2).any(|w| w == ["--bind-to", "none"]));
        assert!(argv.windows(2).any(|w| w == ["--map-by", "core"]));
    }

    #[test]
    fn enough_cores_keeps_binding() {
        let host = HostFacts {
            cores: 64,
            is_root: false,
        };
        let (argv, env) = mpirun_command(
            Path::new("mpirun"),
            MpirunKind::OpenMpi,
            4,
            host,
            &["--mca".into(), "btl".into(), "self,tcp".into()],
            Path::new("c"),
            &[],
        );
        assert!(!argv.contains(&"--bind-to".to_string()));
        assert!(env.is_empty());
        assert!(argv.windows(3).any(|w| w == ["--mca", "btl", "self,tcp"]));
    }
}
