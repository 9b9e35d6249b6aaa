//! Parse, run, and map the outcome to an exit code, all in one place.

use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::Parser;
use collbench::{bootstrap::LauncherEnv, cli::Cli, exit, say, Failure, Outcome};

fn main() -> ExitCode {
    // Job-wide messages come from rank 0 only, so a bad flag is reported once, not once per rank.
    let leader = LauncherEnv::from_env().is_leader();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            if leader {
                let text = e.render().to_string();
                let first = text.lines().next().unwrap_or("bad arguments");
                let first = first.strip_prefix("error: ").unwrap_or(first);
                say(&format!("collbench: {first} (see collbench --help)"));
            }
            return ExitCode::from(exit::BAD_INPUT);
        }
    };
    match collbench::run(cli.command) {
        Ok(Outcome::Success) => ExitCode::from(exit::SUCCESS),
        Ok(Outcome::TestFailed(msg)) => {
            say(&format!("collbench: test failed: {msg}"));
            ExitCode::from(exit::TEST_FAILED)
        }
        Err(f) => {
            match &f {
                Failure::BadInput(msg) if leader => say(&format!("collbench: {msg}")),
                Failure::BadInput(_) => {}
                Failure::CouldNotRun(msg) => say(&format!("collbench: could not run: {msg}")),
            }
            ExitCode::from(f.exit_code())
        }
    }
}
