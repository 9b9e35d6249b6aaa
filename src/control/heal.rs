//! `collbench heal`: finds the link faults collbench left in one namespace or all of them, prints
//! each command, and runs it (or only prints, with --dry-run).

use super::link::{self, Argv, NetnsName, Where};
use crate::cli::HealArgs;
use crate::{Failure, Outcome};

pub fn run(args: &HealArgs) -> Result<Outcome, Failure> {
    let places = if args.all {
        let mut v = vec![Where::Local];
        let names = link::netns_list()
            .map_err(|e| Failure::CouldNotRun(format!("listing network namespaces: {e}")))?;
        v.extend(names.into_iter().map(Where::Netns));
        v
    } else if let Some(ns) = &args.netns {
        let name = NetnsName::parse(ns).map_err(|e| Failure::BadInput(format!("--netns: {e}")))?;
        if !name.exists() {
            return Err(Failure::BadInput(format!(
                "--netns {name}: no such network namespace; `ip netns list` lists them"
            )));
        }
        vec![Where::Netns(name)]
    } else {
        vec![Where::Local]
    };

    let mut left = 0usize;
    let mut errors = Vec::new();
    for at in &places {
        let plan: Vec<Argv> = match link::heal_plan(at) {
            Ok(p) => p,
            // A namespace deleted while we walk them has nothing left in it.
            Err(_) if matches!(at, Where::Netns(ns) if !ns.exists()) => continue,
            Err(e) => {
                eprintln!("collbench heal: {at}: {e}");
                errors.push(e.to_string());
                continue;
            }
        };
        if plan.is_empty() {
            println!("# heal: nothing collbench left in {at}");
        }
        for argv in plan {
            if args.dry_run {
                println!("would run: {argv}");
                left += 1;
                continue;
            }
            println!("+ {argv}");
            if let Err(e) = argv.run() {
                eprintln!("collbench heal: {e}");
                errors.push(e.to_string());
            }
        }
    }
    if let Some(first) = errors.first() {
        return Err(Failure::CouldNotRun(format!(
            "heal: {} command(s) failed, the first: {first}",
            errors.len()
        )));
    }
    if left > 0 {
        return Ok(Outcome::TestFailed(format!(
            "heal --dry-run: {left} thing(s) collbench left; run without --dry-run to remove them"
        )));
    }
    Ok(Outcome::Success)
}
