#!/usr/bin/env bash
# The nccl backend's GPU check, in one go (about 2-4 minutes on one H100/H200):
#   1. one rank, all_reduce and all_to_all, 8 B .. 1 GiB, --backend nccl, correctness on;
#   2. four ranks on GPU 0, each with its own NCCL_HOSTID, correctness on, labelled
#      "functional, not performance"; under mpirun, then (2b) started by `collbench local`
#      one process per rank, meeting through its controller;
#   3. the GPU tests of tests/nccl_backend.rs with COLLBENCH_REQUIRE_GPU=1 (absence fails), from a
#      prebuilt test binary (--test-bin, or found under target/*/deps), else via cargo if present;
#   4. with --nccl-tests DIR (or --nccl-tests-src DIR, built here first): nccl-tests'
#      all_reduce_perf and alltoall_perf and collbench on the same sizes and iterations,
#      alternating for --rounds rounds (best of each), with per-size ratios; for all-reduce, the
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
  --nccl-tests-src DIR  nccl-tests source (https://github.com/NVIDIA/nccl-tests); built with the
                     command above into --nccl-tests-cache (needs nvcc and OpenMPI's headers;
                     NCCL_HOME is the --nccl-lib folder's parent, given a lib/libnccl.so link if
                     it has only libnccl.so.2, as pip wheels do)
  --nccl-tests-cache DIR  where --nccl-tests-src builds     [\${XDG_CACHE_HOME:-~/.cache}/collbench-nccl-tests]
  --test-bin PATH    prebuilt tests/nccl_backend.rs binary (cargo test --release --no-run --test nccl_backend)
  --nccl-lib DIR     folder with libnccl.so.2, prepended to LD_LIBRARY_PATH
                     [env NCCL_LIB_DIR, default the pip wheel under /opt/torch/.venv if present]
  --np N             ranks for the nccl-tests comparison        [number of GPUs, at least 1]
  --rounds N         alternating rounds of the comparison                               [2]
  --steps LIST       which steps run, of 1,2,2b,3,4 (a rerun of some)                [all]
  --out DIR          where results go                    [results/gpu-check-<UTC time>]
  --mpirun CMD       mpirun                                                [env MPIRUN, mpirun]
EOF
}

BIN=${COLLBENCH_BIN:-}
NCCL_TESTS=""
NCCL_TESTS_SRC=""
NCCL_TESTS_CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/collbench-nccl-tests
TEST_BIN=""
NCCL_LIB_DIR=${NCCL_LIB_DIR:-/opt/torch/.venv/lib/python3.12/site-packages/nvidia/nccl/lib}
NP=""
ROUNDS=2
STEPS=1,2,2b,3,4
OUT=""
MPIRUN=${MPIRUN:-mpirun}

while [ $# -gt 0 ]; do
    case "$1" in
        --bin) BIN=$2; shift 2 ;;
        --nccl-tests) NCCL_TESTS=$2; shift 2 ;;
        --nccl-tests-src) NCCL_TESTS_SRC=$2; shift 2 ;;
        --nccl-tests-cache) NCCL_TESTS_CACHE=$2; shift 2 ;;
        --test-bin) TEST_BIN=$2; shift 2 ;;
        --nccl-lib) NCCL_LIB_DIR=$2; shift 2 ;;
        --np) NP=$2; shift 2 ;;
        --rounds) ROUNDS=$2; shift 2 ;;
        --steps) STEPS=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --mpirun) MPIRUN=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "$PROG: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done

if [ -n "$NCCL_TESTS_SRC" ]; then
    if [ ! -f "$NCCL_TESTS_SRC/src/Makefile" ]; then
        echo "$PROG: --nccl-tests-src $NCCL_TESTS_SRC has no src/Makefile (want a nccl-tests checkout)" >&2
        exit 2
    fi
    NCCL_TESTS_SRC=$(cd "$NCCL_TESTS_SRC" && pwd)
fi
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

# Whether step $1 is in --steps.
want() { case ",$STEPS," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
for s in ${STEPS//,/ }; do
    case $s in 1|2|2b|3|4) ;; *) echo "$PROG: --steps: unknown step '$s' (steps: 1,2,2b,3,4)" >&2; exit 2 ;; esac
done

FAILED=()
fail() { FAILED+=("$1"); echo "FAIL: $1"; }
step() { echo; echo "== $1 (at ${SECONDS} s)"; }

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

# Builds nccl-tests' all_reduce_perf and alltoall_perf from --nccl-tests-src into the cache;
# sets NCCL_TESTS.
build_nccl_tests() {
    local nvcc cuda_home nccl_root home mpi_home
    nvcc=$(command -v nvcc || true)
    [ -n "$nvcc" ] || { [ -x /usr/local/cuda/bin/nvcc ] && nvcc=/usr/local/cuda/bin/nvcc; }
    [ -n "$nvcc" ] || { echo "no nvcc on PATH or in /usr/local/cuda/bin"; return 1; }
    cuda_home=$(dirname "$(dirname "$(readlink -f "$nvcc")")")
    nccl_root=$(dirname "$NCCL_LIB_DIR")
    [ -f "$nccl_root/include/nccl.h" ] || { echo "no $nccl_root/include/nccl.h (NCCL_HOME from --nccl-lib)"; return 1; }
    home="$NCCL_TESTS_CACHE/nccl-home"
    mkdir -p "$home/lib"
    ln -sfn "$nccl_root/include" "$home/include"
    for f in "$NCCL_LIB_DIR"/libnccl.so*; do ln -sf "$f" "$home/lib/"; done
    [ -e "$home/lib/libnccl.so" ] || ln -sf "$NCCL_LIB_DIR/libnccl.so.2" "$home/lib/libnccl.so"
    mpi_home=/usr/lib/x86_64-linux-gnu/openmpi
    [ -f "$mpi_home/include/mpi.h" ] || mpi_home=$(dirname "$(dirname "$(command -v mpicc)")")
    rm -rf "$NCCL_TESTS_CACHE/src" && mkdir -p "$NCCL_TESTS_CACHE" && cp -r "$NCCL_TESTS_SRC" "$NCCL_TESTS_CACHE/src"
    echo "nvcc $nvcc (CUDA_HOME $cuda_home), NCCL_HOME $home, MPI_HOME $mpi_home"
    make -C "$NCCL_TESTS_CACHE/src/src" -j "$(nproc)" MPI=1 MPI_HOME="$mpi_home" NCCL_HOME="$home" \
        CUDA_HOME="$cuda_home" NVCC_GENCODE="${NVCC_GENCODE:--gencode=arch=compute_90,code=sm_90}" \
        ../build/all_reduce_perf ../build/alltoall_perf > "$OUT/nccl-tests-build.txt" 2>&1 \
        || { tail -20 "$OUT/nccl-tests-build.txt"; return 1; }
    NCCL_TESTS="$NCCL_TESTS_CACHE/src"
    echo "built $NCCL_TESTS/build/all_reduce_perf"
}

if [ -n "$NCCL_TESTS_SRC" ] && want 4; then
    step "0. build nccl-tests from $NCCL_TESTS_SRC"
    build_nccl_tests || fail "building nccl-tests"
fi

if want 1; then
    step "1. one rank, 8 B .. 1 GiB, all_reduce + all_to_all, correctness on"
    if timeout 200 "$BIN" bench --backend nccl -b 8 -e 1G -f 2 -n 20 -w 5 \
            --op all_reduce,all_to_all --out "$OUT/one-rank" | tee "$OUT/one-rank.txt"; then
        check_run "$OUT/one-rank/run.json" || fail "one-rank sweep: run.json checks"
    else
        fail "one-rank sweep exited $?"
    fi
fi

if want 2; then
    step "2. four ranks on GPU 0 (own NCCL_HOSTID each), correctness on"
    if timeout 200 "$MPIRUN" -np 4 "${MPI_ARGS[@]}" "$BIN" bench --backend nccl --gpu 0 \
            -b 8 -e 16M -f 4 -n 5 -w 1 -d float,bfloat16 -o sum,avg --op all_reduce,all_to_all \
            --timeout 60s --out "$OUT/four-ranks" | tee "$OUT/four-ranks.txt"; then
        check_run "$OUT/four-ranks/run.json" shared || fail "four ranks on one GPU: run.json checks"
    else
        fail "four ranks on one GPU exited $?"
    fi
fi

if want 2b; then
    step "2b. four ranks on GPU 0 without mpirun (collbench local: one process per rank, the controller as rendezvous)"
    if timeout 200 "$BIN" local --np 4 --backend nccl --gpu 0 \
            -b 8 -e 16M -f 4 -n 5 -w 1 --op all_reduce,all_to_all \
            --timeout 60s --out "$OUT/four-direct" | tee "$OUT/four-direct.txt"; then
        check_run "$OUT/four-direct/run.json" shared || fail "four ranks without mpirun: run.json checks"
        grep -q '"launcher": "collbench"' "$OUT/four-direct/run.json" || fail "four ranks without mpirun: launcher is not collbench"
    else
        fail "four ranks without mpirun exited $?"
    fi
fi

if want 3; then
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
fi

if [ -n "$NCCL_TESTS" ] && want 4; then
    launch=()
    if [ "$NP" -gt 1 ]; then launch=("$MPIRUN" -np "$NP" "${MPI_ARGS[@]}"); fi
    # op, nccl-tests binary, "targets" when the issue's targets apply (all-reduce) else "info",
    # a tag naming the files, then extra collbench arguments.
    compare() {
        local op=$1 name=$2 targeted=$3 tag=$4 nt="" redop=()
        shift 4
        step "4. collbench $* vs nccl-tests $name, $NP rank(s), 8 B .. 1 GiB, -n 20 -w 5, $ROUNDS rounds"
        for c in "$NCCL_TESTS/build/$name" "$NCCL_TESTS/$name"; do
            if [ -x "$c" ]; then nt=$c; break; fi
        done
        if [ -z "$nt" ]; then
            [ "$targeted" = targets ] && fail "no $name under $NCCL_TESTS (build/ or top level)"
            echo "no $name under $NCCL_TESTS: skipped"
            return
        fi
        [ "$op" = all_reduce ] && redop=(-o sum)
        for r in $(seq 1 "$ROUNDS"); do
            timeout 200 "${launch[@]}" "$BIN" bench --backend nccl -b 8 -e 1G -f 2 -n 20 -w 5 \
                --op "$op" -d float "${redop[@]}" "$@" --out "$OUT/vs-nccl-tests-collbench-$tag-$r" \
                > "$OUT/vs-collbench-$tag-$r.txt" || fail "collbench $tag round $r exited $?"
            timeout 200 "${launch[@]}" "$nt" -b 8 -e 1G -f 2 -n 20 -w 5 -g 1 -c 1 -d float "${redop[@]}" \
                > "$OUT/vs-nccl-tests-$tag-$r.txt" || fail "$name round $r exited $?"
        done
        python3 - "$OUT" "$ROUNDS" "$NP" "$tag" "$targeted" <<'EOF' || fail "collbench vs nccl-tests $name targets"
import sys
out, rounds, np, tag, targeted = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5] == "targets"

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
        for size, (t, a, b) in rows(f"{out}/{prefix}-{tag}-{r}.txt").items():
            old = merged.get(size)
            merged[size] = (min(t, old[0]), max(a, old[1]), max(b, old[2])) if old else (t, a, b)
    return merged

cb, nt = best("vs-collbench"), best("vs-nccl-tests")
bw_name, bw_i = ("busbw", 2) if np > 1 else ("algbw", 1)
print(f"{tag}: bandwidth compared: {bw_name} ({np} rank{'s' if np > 1 else ''}: busbw is 0 for one rank)")
print(f"| bytes | collbench us | nccl-tests us | time ratio | collbench {bw_name} | nccl-tests {bw_name} | bw ratio | target | ok |")
print("|---:|---:|---:|---:|---:|---:|---:|---|:---:|")
misses = 0
for size in sorted(set(cb) & set(nt)):
    ct, tt = cb[size][0], nt[size][0]
    c_bw, t_bw = cb[size][bw_i], nt[size][bw_i]
    tr = ct / tt if tt > 0 else float("nan")
    br = c_bw / t_bw if t_bw > 0 else float("nan")
    target, ok = "", True
    if not targeted:
        pass
    elif size >= 64 << 20:
        target, ok = f"{bw_name} >= 0.98x", br >= 0.98
    elif size <= 64 << 10:
        target, ok = "time <= 1.00x", tr <= 1.0
    misses += not ok
    print(f"| {size} | {ct:.2f} | {tt:.2f} | {tr:.3f} | {c_bw:.2f} | {t_bw:.2f} | {br:.3f} | {target} | {'yes' if ok else 'NO'} |")
# nccl-tests can print a 0-byte row where the size rounds down (one rank's 8 B all-to-all):
# nothing was measured there, so it is not a size collbench lacks.
missing = sorted(set(nt) - set(cb) - {0})
if missing or not cb:
    print(f"sizes nccl-tests has and collbench lacks: {missing}")
    misses += targeted
print(f"{misses} target(s) missed" if targeted else "(no targets for this op: ratios for information)")
sys.exit(1 if misses else 0)
EOF
    }
    compare all_reduce all_reduce_perf targets all_reduce
    compare all_to_all alltoall_perf info all_to_all
    # nccl-tests calls ncclAlltoAll where NCCL has it (2.28+); so does collbench when asked.
    compare all_to_all alltoall_perf info all_to_all-ncclAlltoAll --a2a-call alltoall
fi

step "summary"
echo "gpu-check took ${SECONDS} s"
if [ ${#FAILED[@]} -eq 0 ]; then
    echo "gpu-check: all steps passed (results in $OUT)"
    exit 0
fi
printf 'gpu-check: %d problem(s):\n' "${#FAILED[@]}"
printf '  - %s\n' "${FAILED[@]}"
exit 1
