#!/usr/bin/env bash
# Time to detect a killed rank and a downed link: N runs each (default 5) under the real
# controller with 1 s heartbeats, the median printed. Needs root (the downed link runs on a
# virtual cluster of network namespaces), OpenMPI and a built collbench.
#
#   scripts/bench-detect.sh [--runs N] [--bin PATH]
set -Eeuo pipefail
cd "$(dirname "$0")/.."

runs=5
bin=${COLLBENCH_BIN:-}
while (($#)); do
    case $1 in
    --runs) runs=$2; shift 2 ;;
    --bin) bin=$2; shift 2 ;;
    *) echo "bench-detect: unknown argument '$1' (--runs N, --bin PATH)" >&2; exit 2 ;;
    esac
done
[[ $runs =~ ^[1-9][0-9]*$ ]] || { echo "bench-detect: --runs needs a positive number" >&2; exit 2; }
if [[ -z $bin ]]; then
    cargo build --release --quiet
    bin=$PWD/target/release/collbench
fi
[[ -x $bin ]] || { echo "bench-detect: $bin is not an executable" >&2; exit 2; }
[[ $(id -u) -eq 0 ]] || { echo "bench-detect: needs root (network namespaces for the link fault)" >&2; exit 3; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

work=$(mktemp -d)
prefix=bd$$
prefix=${prefix:0:8}
cleanup() {
    scripts/vcluster down --prefix "$prefix" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

# The first fault's detection: "mechanism after_s".
detection() {
    local run=$1
    local mech after
    mech=$(grep -o '"mechanism": "[a-z_]*"' "$run/run.json" | head -1 | cut -d'"' -f4)
    after=$(grep -o '"after_s": [0-9.e-]*' "$run/run.json" | head -1 | awk '{print $2}')
    echo "${mech:-none} ${after:-nan}"
}

median() { sort -g | awk '{v[NR]=$1} END {if (NR == 0) print "nan"; else if (NR % 2) printf "%.3f", v[(NR+1)/2]; else printf "%.3f", (v[NR/2]+v[NR/2+1])/2}'; }

cat >"$work/kill.toml" <<'EOF'
[run]
heartbeat = "1s"
heartbeat_timeout = "2500ms"

[[fault]]
kind = "kill"
target = "rank:2"
start = "1s"
EOF

echo "# killed rank: collbench local --np 4, kill rank 2 one second into the sweep ($runs runs)"
: >"$work/kill.times"
for ((i = 1; i <= runs; i++)); do
    out=$work/kill-$i
    "$bin" local --np 4 -b 1K -e 1K -n 20 --op all_reduce --run-for 60s --plan "$work/kill.toml" \
        --out "$out" >/dev/null 2>&1 || true
    read -r mech after < <(detection "$out")
    printf '  run %d: %-16s %8.3f s\n' "$i" "$mech" "$after"
    echo "$after" >>"$work/kill.times"
done

scripts/vcluster up 4 --prefix "$prefix" >/dev/null
cat >"$work/down.toml" <<EOF
[run]
heartbeat = "1s"
heartbeat_timeout = "2500ms"
stall = "3s"
abort_after = "2s"

[[fault]]
kind = "down"
target = "link:${prefix}-h2/eth0"
start = "1s"
duration = "60s"
EOF

echo "# downed link: 4 namespace hosts, eth0 of host 2 down one second into the sweep ($runs runs)"
: >"$work/down.times"
: >"$work/stall.times"
for ((i = 1; i <= runs; i++)); do
    out=$work/down-$i
    "$bin" controller --plan "$work/down.toml" --allow-privileged --listen "unix:$work/ctl.sock" -- \
        scripts/vcluster mpirun --prefix "$prefix" -np 4 --map-by node \
        -x COLLBENCH_CONTROLLER -x COLLBENCH_SECRET_FILE \
        "$bin" bench -b 1K -e 1K -n 20 --op all_reduce --run-for 60s --out "$out" >/dev/null 2>&1 || true
    read -r mech after < <(detection "$out")
    # The stall (no rank advancing) comes later; it is what catches a link nobody reports.
    stall=$(grep -B2 -A4 '"progress_stall"' "$out/run.json" | grep -o '"at_s": [0-9.e-]*' | head -1 | awk '{print $2}')
    applied=$(grep -o '"applied_at_s": [0-9.e-]*' "$out/run.json" | head -1 | awk '{print $2}')
    stall_after=$(awk -v s="${stall:-nan}" -v a="${applied:-nan}" 'BEGIN {print s - a}')
    printf '  run %d: %-16s %8.3f s   progress_stall %8.3f s\n' "$i" "$mech" "$after" "$stall_after"
    echo "$after" >>"$work/down.times"
    echo "$stall_after" >>"$work/stall.times"
done

echo "# median time to detect (heartbeat 1s): killed rank $(median <"$work/kill.times") s," \
    "downed link $(median <"$work/down.times") s (progress stall $(median <"$work/stall.times") s)"
