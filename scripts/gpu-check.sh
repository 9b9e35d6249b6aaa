#!/usr/bin/env bash
# The nccl backend's GPU check, in one go (about 2-4 minutes on one H100/H200):
#   1. one rank, all_reduce and all_to_all, 8 B .. 1 GiB, --backend nccl, correctness on;
#   2. four ranks on GPU 0, each with its own NCCL_HOSTID, correctness on, labelled
#      "functional, not performance"; under mpirun, then (2b) started by `collbench local`
#      one process per rank, meeting through its controller;
#   3. the GPU tests of tests/nccl_backend.rs with COLLBENCH_REQUIRE_GPU=1 (absence fails), from a
#      prebuilt test binary (--test-bin, or found under target/*/deps), else via cargo if present;
#   4. with --nccl-tests DIR: nccl-tests' all_reduce_perf and collbench on the same sizes and
#      iterations, alternating for --rounds rounds (best of each), with per-size ratios and the
#      targets (bus bandwidth at >= 64 MiB within 2%; time at <= 64 KiB not above nccl-tests').
# Exit status: 0 when every step and target passed, 1 otherwise, 2 for bad arguments.
set -euo pipefail

PROG=$(basename "$0")
REPO=$(cd "$(dirname "$0")/.." && pwd)

usage() {
    cat <<EOF
Usage: $PROG [OPTIONS]

  --bin PATH         collbench binary to check    [env COLLBENCH_BIN, else target/release/collbench]
  --nccl-tests DIR   a built nccl-tests (DIR/build/all_reduce_perf or DIR/all_reduce_perf);
                     build it with: make -C src MPI=1 MPI_HOME=/usr/lib/x86_64-linux-gnu/openmpi \\
                       NCCL_HOME=<dir with include/ and lib/> NVCC_GENCODE="-gencode=arch=compute_90,code=sm_90"
  --test-bin PATH    prebuilt tests/nccl_backend.rs binary (cargo test --release --no-run --test nccl_backend)
  --nccl-lib DIR     folder with libnccl.so.2, prepended to LD_LIBRARY_PATH
                     [env NCCL_LIB_DIR, default the pip wheel under /opt/torch/.venv if present]
  --np N             ranks for the nccl-tests comparison        [number of GPUs, at least 1]
  --rounds N         alternating rounds of the comparison                               [2]
  --out DIR          where results go                    [results/gpu-check-<UTC time>]
  --mpirun CMD       mpirun                                                [env MPIRUN, mpirun]
EOF
}

BIN=${COLLBENCH_BIN:-}
NCCL_TESTS=""
TEST_BIN=""
NCCL_LIB_DIR=${NCCL_LIB_DIR:-/opt/torch/.venv/lib/python3.12/site-packages/nvidia/nccl/lib}
NP=""
ROUNDS=2
OUT=""
MPIRUN=${MPIRUN:-mpirun}

while [ $# -gt 0 ]; do
    case "$1" in
        --bin) BIN=$2; shift 2 ;;
        --nccl-tests) NCCL_TESTS=$2; shift 2 ;;
        --test-bin) TEST_BIN=$2; shift 2 ;;
        --nccl-lib) NCCL_LIB_DIR=$2; shift 2 ;;
        --np) NP=$2; shift 2 ;;
        --rounds) ROUNDS=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --mpirun) MPIRUN=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "$PROG: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done

cd "$REPO"
if [ -z "$BIN" ]; then
    for b in target/release/collbench target/debug/collbench; do
        if [ -x "$b" ]; then BIN=$b; break; fi
    done
fi
if [ -z "$BIN" ] || [ ! -x "$BIN" ]; then
    echo "$PROG: no collbench binary; pass --bin PATH or set COLLBENCH_BIN" >&2
    exit 2
fi
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
case "$ROUNDS" in ''|*[!0-9]*|0) echo "$PROG: --rounds must be a positive integer" >&2; exit 2 ;; esac
if [ -n "$NCCL_LIB_DIR" ] && [ -e "$NCCL_LIB_DIR/libnccl.so.2" ]; then
    export LD_LIBRARY_PATH="$NCCL_LIB_DIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
OUT=${OUT:-results/gpu-check-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

MPI_ARGS=(--oversubscribe --bind-to none)
if [ "$(id -u)" = 0 ]; then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
GPUS=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
NP=${NP:-$(( GPUS > 0 ? GPUS : 1 ))}

FAILED=()
fail() { FAILED+=("$1"); echo "FAIL: $1"; }
step() { echo; echo "== $1"; }

step "host"
date -u
nvidia-smi -L 2>&1 || true
nvidia-smi --query-gpu=name,driver_version,pci.bus_id --format=csv,noheader 2>&1 || true
echo "collbench: $BIN"
echo "LD_LIBRARY_PATH: ${LD_LIBRARY_PATH:-}"
echo "results: $OUT"

# Reads a run.json and checks it: status complete, backend nccl, no wrong values, and (with
# "shared") the functional-only note. Prints one line; exit 1 when a check fails.
check_run() {
    python3 - "$1" "${2:-}" <<'EOF'
import json, sys
doc = json.load(open(sys.argv[1]))
problems = []
if doc.get("status") != "complete":
    problems.append(f"status {doc.get('status')}: {doc.get('error')}")
if doc["backend"]["name"] != "nccl":
    problems.append(f"backend {doc['backend']['name']}")
if doc["summary"]["wrong_total"] != 0:
    problems.append(f"{doc['summary']['wrong_total']} wrong values")
unchecked = [r for r in doc["results"] if r["wrong"] is None
             and not (r["op"] == "all_to_all" and r["placement"] == "in_place")]
if unchecked:
    problems.append(f"{len(unchecked)} records without a check")
if sys.argv[2] == "shared" and not any(n.startswith("functional, not performance") for n in doc["notes"]):
    problems.append("no 'functional, not performance' note")
gpus = sorted({(r.get("gpu"), r.get("pci_bus_id"), r.get("gpu_name")) for r in doc["ranks"]}, key=str)
print(f"{len(doc['results'])} records, {doc['world_size']} ranks, GPUs {gpus}, {doc['backend']['library_version']}")
if problems:
    print("problems: " + "; ".join(problems))
    sys.exit(1)
EOF
}

step "1. one rank, 8 B .. 1 GiB, all_reduce + all_to_all, correctness on"
if timeout 200 "$BIN" bench --backend nccl -b 8 -e 1G -f 2 -n 20 -w 5 \
        --op all_reduce,all_to_all --out "$OUT/one-rank" | tee "$OUT/one-rank.txt"; then
    check_run "$OUT/one-rank/run.json" || fail "one-rank sweep: run.json checks"
else
    fail "one-rank sweep exited $?"
fi

step "2. four ranks on GPU 0 (own NCCL_HOSTID each), correctness on"
if timeout 200 "$MPIRUN" -np 4 "${MPI_ARGS[@]}" "$BIN" bench --backend nccl --gpu 0 \
        -b 8 -e 16M -f 4 -n 5 -w 1 -d float,bfloat16 -o sum,avg --op all_reduce,all_to_all \
        --timeout 60s --out "$OUT/four-ranks" | tee "$OUT/four-ranks.txt"; then
    check_run "$OUT/four-ranks/run.json" shared || fail "four ranks on one GPU: run.json checks"
else
    fail "four ranks on one GPU exited $?"
fi

step "2b. four ranks on GPU 0 without mpirun (collbench local: one process per rank, the controller as rendezvous)"
if timeout 200 "$BIN" local --np 4 --backend nccl --gpu 0 \
        -b 8 -e 16M -f 4 -n 5 -w 1 --op all_reduce,all_to_all \
        --timeout 60s --out "$OUT/four-direct" | tee "$OUT/four-direct.txt"; then
    check_run "$OUT/four-direct/run.json" shared || fail "four ranks without mpirun: run.json checks"
    grep -q '"launcher": "collbench"' "$OUT/four-direct/run.json" || fail "four ranks without mpirun: launcher is not collbench"
else
    fail "four ranks without mpirun exited $?"
fi

step "3. GPU tests (tests/nccl_backend.rs, COLLBENCH_REQUIRE_GPU=1)"
if [ -z "$TEST_BIN" ]; then
    TEST_BIN=$(find target/release/deps target/debug/deps -maxdepth 1 -type f -executable \
        -name 'nccl_backend-*' -printf '%T@ %p\n' 2>/dev/null | sort -rn | head -1 | cut -d' ' -f2- || true)
fi
if [ -n "$TEST_BIN" ]; then
    echo "test binary: $TEST_BIN"
    COLLBENCH_REQUIRE_GPU=1 COLLBENCH_BIN="$BIN" timeout 240 "$TEST_BIN" --test-threads=1 \
        || fail "GPU tests ($TEST_BIN)"
elif command -v cargo >/dev/null 2>&1; then
    COLLBENCH_REQUIRE_GPU=1 COLLBENCH_BIN="$BIN" timeout 600 cargo test --release --test nccl_backend \
        -- --test-threads=1 || fail "GPU tests (cargo test)"
else
    fail "GPU tests: no test binary (--test-bin) and no cargo"
fi

if [ -n "$NCCL_TESTS" ]; then
    step "4. collbench vs nccl-tests all_reduce_perf, $NP rank(s), 8 B .. 1 GiB, -n 20 -w 5, $ROUNDS rounds"
    NT=""
    for c in "$NCCL_TESTS/build/all_reduce_perf" "$NCCL_TESTS/all_reduce_perf"; do
        if [ -x "$c" ]; then NT=$c; break; fi
    done
    if [ -z "$NT" ]; then
        fail "no all_reduce_perf under $NCCL_TESTS (build/ or top level)"
    else
        launch=()
        if [ "$NP" -gt 1 ]; then launch=("$MPIRUN" -np "$NP" "${MPI_ARGS[@]}"); fi
        for r in $(seq 1 "$ROUNDS"); do
            timeout 200 "${launch[@]}" "$BIN" bench --backend nccl -b 8 -e 1G -f 2 -n 20 -w 5 \
                --op all_reduce -d float -o sum --out "$OUT/vs-nccl-tests-collbench-$r" \
                > "$OUT/vs-collbench-$r.txt" || fail "collbench round $r exited $?"
            timeout 200 "${launch[@]}" "$NT" -b 8 -e 1G -f 2 -n 20 -w 5 -g 1 -c 1 -d float -o sum \
                > "$OUT/vs-nccl-tests-$r.txt" || fail "all_reduce_perf round $r exited $?"
        done
        python3 - "$OUT" "$ROUNDS" "$NP" <<'EOF' || fail "collbench vs nccl-tests targets"
import sys
out, rounds, np = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

def rows(path):
    """Out-of-place columns of an nccl-tests-format table: size -> (time us, algbw, busbw)."""
    got = {}
    for line in open(path):
        f = line.split()
        if len(f) >= 12 and f[0].isdigit() and f[2] == "float":
            try:
                got[int(f[0])] = (float(f[5]), float(f[6]), float(f[7]))
            except ValueError:
                pass
    return got

def best(prefix):
    merged = {}
    for r in range(1, rounds + 1):
        for size, (t, a, b) in rows(f"{out}/{prefix}-{r}.txt").items():
            old = merged.get(size)
            merged[size] = (min(t, old[0]), max(a, old[1]), max(b, old[2])) if old else (t, a, b)
    return merged

cb, nt = best("vs-collbench"), best("vs-nccl-tests")
bw_name, bw_i = ("busbw", 2) if np > 1 else ("algbw", 1)
print(f"bandwidth compared: {bw_name} ({np} rank{'s' if np > 1 else ''}: busbw is 0 for one rank)")
print(f"| bytes | collbench us | nccl-tests us | time ratio | collbench {bw_name} | nccl-tests {bw_name} | bw ratio | target | ok |")
print("|---:|---:|---:|---:|---:|---:|---:|---|:---:|")
misses = 0
for size in sorted(set(cb) & set(nt)):
    ct, tt = cb[size][0], nt[size][0]
    c_bw, t_bw = cb[size][bw_i], nt[size][bw_i]
    tr = ct / tt if tt > 0 else float("nan")
    br = c_bw / t_bw if t_bw > 0 else float("nan")
    target, ok = "", True
    if size >= 64 << 20:
        target, ok = f"{bw_name} >= 0.98x", br >= 0.98
    elif size <= 64 << 10:
        target, ok = "time <= 1.00x", tr <= 1.0
    misses += not ok
    print(f"| {size} | {ct:.2f} | {tt:.2f} | {tr:.3f} | {c_bw:.2f} | {t_bw:.2f} | {br:.3f} | {target} | {'yes' if ok else 'NO'} |")
missing = sorted(set(nt) - set(cb))
if missing or not cb:
    print(f"sizes nccl-tests has and collbench lacks: {missing}")
    misses += 1
print(f"{misses} target(s) missed")
sys.exit(1 if misses else 0)
EOF
    fi
fi

step "summary"
if [ ${#FAILED[@]} -eq 0 ]; then
    echo "gpu-check: all steps passed (results in $OUT)"
    exit 0
fi
printf 'gpu-check: %d problem(s):\n' "${#FAILED[@]}"
printf '  - %s\n' "${FAILED[@]}"
exit 1
