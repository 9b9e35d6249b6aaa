#!/usr/bin/env bash
# The main job on the embedded default: set up, build in release mode, and run a 4-rank local
# sweep of all-reduce and all-to-all (8 B .. 64 MiB), printing the table and writing results/.
# Extra arguments go to `collbench local` (e.g. --np 8 -e 1G -d all).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
cargo build --release --locked
exec target/release/collbench local --np 4 -b 8 -e 64M -f 2 --op all_reduce,all_to_all "$@"
