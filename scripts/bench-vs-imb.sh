#!/usr/bin/env bash
# Runs collbench and Intel MPI Benchmarks' IMB-MPI1 (Allreduce, Alltoall) side by side on the same
# MPI, alternating (per op and size band, both tools back to back, for N rounds; which runs first
# alternates between rounds), with
# the same per-size iteration and warmup counts, and prints a Markdown table of per-size medians
# over the rounds and their ratio.
# A benchmark, not a test: exits 0 whatever the ratios are; non-zero only when something failed
# to run (bad arguments: 2; a run or its output failed: 1). See --help.
set -euo pipefail

PROG=$(basename "$0")
REPO=$(cd "$(dirname "$0")/.." && pwd)

usage() {
    cat <<EOF
Usage: $PROG (--imb PATH | --imb-src DIR) [OPTIONS]

Runs collbench and IMB-MPI1 (Allreduce, Alltoall) on the same MPI in alternating rounds and
prints, per op and size, the median (--stat) over rounds of collbench's time (record field time_us: the
batched mean time per iteration, averaged over ranks) and of IMB's t_avg, their ratio, and
whether collbench is within the tolerance of IMB.

IMB-MPI1 (not part of this repository; nothing is downloaded by this script):
  --imb PATH          A built IMB-MPI1 binary                                  [env IMB]
  --imb-src DIR       IMB source (https://github.com/intel/mpi-benchmarks): a checkout, or a
                      (bare) git repository of it. It is copied to a cache directory outside
                      this repository and built there once with
                        make IMB-MPI1 CC=mpicc CXX=mpicxx \\
                             CPPFLAGS="-DOMPI_SKIP_MPICXX=1 -DMPICH_SKIP_MPICXX=1"
                      (built binaries are reused; --rebuild-imb forces a rebuild)  [env IMB_SRC]
  --imb-cache DIR     Where --imb-src builds    [env IMB_CACHE, default \${XDG_CACHE_HOME:-~/.cache}/collbench-imb]
  --rebuild-imb       Rebuild even if the cache already has a binary

collbench:
  --collbench PATH    collbench binary       [env COLLBENCH, default <repo>/target/release/collbench]
  --build             Run 'cargo build --release --locked' in the repository first (also done
                      when the default binary is missing)

Sweep (the same for both tools):
  --np N              Ranks                                                          [4]
  -b, --minbytes SIZE Smallest per-rank size in bytes (K/M/G: binary)                [8]
  -e, --maxbytes SIZE Largest per-rank size in bytes                                 [64M]
  -f, --stepfactor N  Size factor between steps                                      [2]
  --ops LIST          all_reduce,all_to_all or one of them              [all_reduce,all_to_all]
  --rounds N          Rounds; in each, every (op, size band) runs both tools back to back [3]
  --order alternate|collbench-first
                      Which tool of a round's pair runs first: alternate (odd rounds
                      collbench, even rounds IMB), so that neither tool always runs after
                      the other and what a launch leaves behind biases neither; or
                      collbench-first in every round                          [alternate]
  --bands SPEC        Iteration counts per size band: UPTO:ITERS,... (sizes up to and including
                      UPTO, per-rank bytes, run ITERS timed iterations; sizes above the last band
                      use its ITERS). Both tools run exactly ITERS timed iterations per size
                      (IMB: -iter_policy off -iter ITERS; collbench: -n ITERS) and the same
                      warmup, IMB's rule max(ITERS/10, min(10, ITERS)) (collbench: -w).
                                                          [32K:1000,1M:500,8M:100,64M:20]
  --imb-sync on|off   IMB -sync: off (default) times back-to-back calls like collbench's batched
                      loop; on is IMB's default (a barrier after every timed call, not timed)
  --tolerance PCT     "within" means |collbench/IMB - 1| <= PCT/100                  [10]
  --stat median|min   Statistic over the rounds for each tool and size               [median]

Running:
  --mpirun CMD        mpirun to use for both tools                       [env MPIRUN, mpirun]
  --mpirun-args ARGS  Extra mpirun arguments (word-split), replacing the defaults: with more
                      ranks than cores (OpenMPI) '--oversubscribe --bind-to
                      core:overload-allowed --map-by core --mca mpi_yield_when_idle 1',
                      otherwise none. Binding fixes which ranks share a core: unbound,
                      the kernel's placement changes per launch and with it the
                      time, by up to 1.4x at small sizes, for both tools alike
  --timeout SECS      Limit for each mpirun                                          [900]
  --workdir DIR       Where raw outputs, results.json and table.md go (default: a new
                      /tmp/collbench-vs-imb.XXXXXX; kept and printed at the end)
  --dry-run           Print the commands of one round and exit
  --report-only DIR   Run nothing: report again on the raw outputs an earlier run kept in its
                      workdir DIR (its rounds, ranks and ops; --tolerance and --stat apply), and
                      rewrite DIR/table.md and DIR/results.json
  -h, --help          This text

How sizes are matched: the "bytes" column is the per-rank size, as collbench's size column.
  all_reduce: IMB Allreduce #bytes = the same bytes (MPI_FLOAT, MPI_SUM, out of place).
  all_to_all: collbench's size counts all N blocks a rank sends; IMB Alltoall's #bytes is one
              block (per peer). A row pairs collbench size S (count = S/N/4 floats per peer) with
              IMB #bytes = S/N, i.e. the same per-rank total. collbench's 0-byte rows are skipped.

IMB-MPI1 is run per op and band as
  IMB-MPI1 Allreduce|Alltoall -npmin N -msgsize <band sizes> -msglog 0:<ceil log2 of largest>
           -zero_size off -iter_policy off -iter ITERS -time 100000 -mem <GB> -sync off|on
  (-msglog: IMB clamps -msgsize lengths to 2^max_msglog, default 22 = 4 MiB; -iter_policy off:
  exactly ITERS repetitions, not IMB's min(1000, 40 MiB/size) capped by -time; -time: the
  per-benchmark time-out never cuts a band short; -mem: buffer limit, GB per process, raised
  when send+receive buffers need more than IMB's default 1 GB.)
and collbench as
  collbench bench --backend mpi -b LO -e HI -f F -n ITERS -w WARMUP -c 0 -d float -o sum --op OP --placement out
  (--backend mpi: on a GPU host the default, auto, would pick NCCL)

Getting IMB, e.g.:
  git clone https://github.com/intel/mpi-benchmarks /tmp/imb-src
  $PROG --imb-src /tmp/imb-src
EOF
}

die() { echo "$PROG: $*" >&2; exit 2; }
fail() { echo "$PROG: $*" >&2; exit 1; }
log() { echo "[$PROG] $*" >&2; }

IMB_BIN=${IMB:-}
IMB_SRC_DIR=${IMB_SRC:-}
IMB_CACHE_DIR=${IMB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/collbench-imb}
REBUILD_IMB=0
COLLBENCH_BIN=${COLLBENCH:-}
DO_BUILD=0
NP=4
MINB=8
MAXB=64M
FACTOR=2
OPS=all_reduce,all_to_all
ROUNDS=3
ORDER=alternate
BANDS=32K:1000,1M:500,8M:100,64M:20
IMB_SYNC=off
TOL=10
STAT=median
MPIRUN_CMD=${MPIRUN:-mpirun}
MPIRUN_ARGS=
MPIRUN_ARGS_SET=0
TIMEOUT_S=900
WORKDIR=
DRY_RUN=0
REPORT_ONLY=

need_arg() { [[ $# -ge 2 && -n $2 ]] || die "$1 needs a value (see --help)"; }
while [[ $# -gt 0 ]]; do
    case $1 in
        --imb) need_arg "$@"; IMB_BIN=$2; shift 2 ;;
        --imb-src) need_arg "$@"; IMB_SRC_DIR=$2; shift 2 ;;
        --imb-cache) need_arg "$@"; IMB_CACHE_DIR=$2; shift 2 ;;
        --rebuild-imb) REBUILD_IMB=1; shift ;;
        --collbench) need_arg "$@"; COLLBENCH_BIN=$2; shift 2 ;;
        --build) DO_BUILD=1; shift ;;
        --np) need_arg "$@"; NP=$2; shift 2 ;;
        -b|--minbytes) need_arg "$@"; MINB=$2; shift 2 ;;
        -e|--maxbytes) need_arg "$@"; MAXB=$2; shift 2 ;;
        -f|--stepfactor) need_arg "$@"; FACTOR=$2; shift 2 ;;
        --ops|--op) need_arg "$@"; OPS=$2; shift 2 ;;
        --rounds) need_arg "$@"; ROUNDS=$2; shift 2 ;;
        --order) need_arg "$@"; ORDER=$2; shift 2 ;;
        --bands) need_arg "$@"; BANDS=$2; shift 2 ;;
        --imb-sync) need_arg "$@"; IMB_SYNC=$2; shift 2 ;;
        --tolerance) need_arg "$@"; TOL=$2; shift 2 ;;
        --stat) need_arg "$@"; STAT=$2; shift 2 ;;
        --mpirun) need_arg "$@"; MPIRUN_CMD=$2; shift 2 ;;
        --mpirun-args) [[ $# -ge 2 ]] || die "--mpirun-args needs a value"; MPIRUN_ARGS=$2; MPIRUN_ARGS_SET=1; shift 2 ;;
        --timeout) need_arg "$@"; TIMEOUT_S=$2; shift 2 ;;
        --workdir) need_arg "$@"; WORKDIR=$2; shift 2 ;;
        --dry-run) DRY_RUN=1; shift ;;
        --report-only) need_arg "$@"; REPORT_ONLY=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done

[[ $NP =~ ^[1-9][0-9]*$ ]] || die "--np must be a positive integer"
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "--rounds must be a positive integer"
[[ $FACTOR =~ ^[1-9][0-9]*$ && $FACTOR -ge 2 ]] || die "--stepfactor must be an integer >= 2"
[[ $TIMEOUT_S =~ ^[1-9][0-9]*$ ]] || die "--timeout must be a positive integer (seconds)"
[[ $TOL =~ ^[0-9]+([.][0-9]+)?$ ]] || die "--tolerance must be a number (percent)"
case $IMB_SYNC in on|1|yes) IMB_SYNC=on ;; off|0|no) IMB_SYNC=off ;; *) die "--imb-sync must be on or off" ;; esac
[[ $STAT == median || $STAT == min ]] || die "--stat must be median or min"
[[ $ORDER == alternate || $ORDER == collbench-first ]] || die "--order must be alternate or collbench-first"
command -v python3 >/dev/null || die "python3 is required"

# ---------------------------------------------------------------------------------------------
# The Python half (stdlib only): the plan (sizes, bands) and the report (parsing both tools).
HELPER=$(mktemp /tmp/collbench-vs-imb-helper.XXXXXX.py)
trap 'rm -f "$HELPER" "$HELPER.plan"' EXIT
cat >"$HELPER" <<'PY'
import json, math, os, random, re, statistics, sys

OPS = {"all_reduce": "Allreduce", "all_to_all": "Alltoall"}
FLOAT = 4

def parse_size(s):
    m = re.fullmatch(r"\s*(\d+)\s*([KMGkmg]?)[Bb]?\s*", s)
    if not m:
        raise ValueError(f"bad size {s!r}")
    return int(m.group(1)) << {"": 0, "k": 10, "m": 20, "g": 30}[m.group(2).lower()]

def warmup_for(n):
    # IMB_warm_up (IMB 2021.x): n/WARMUP_PERCENT(10), at least min(MIN_WARMUP_ITERS(10), n).
    return max(n // 10, min(10, n))

def msglog(sizes):
    # IMB clamps every -msgsize length to 2^max_msglog (default 22: 4 MiB), so raise it to cover.
    return max(1, (max(sizes or [1]) - 1).bit_length())

def cmd_plan(minb, maxb, factor, np_, bands, ops):
    np_, factor = int(np_), int(factor)
    try:
        lo, hi = parse_size(minb), parse_size(maxb)
    except ValueError as e:
        sys.exit(str(e))
    if lo <= 0 or hi < lo:
        sys.exit("bad size range")
    if hi >= 1 << 31:
        sys.exit("IMB takes sizes below 2 GiB only")
    ops = ops.split(",")
    for op in ops:
        if op not in OPS:
            sys.exit(f"unknown op {op!r} (all_reduce, all_to_all)")
    spec = []
    for part in bands.split(","):
        try:
            upto, iters = part.split(":")
            spec.append((parse_size(upto), int(iters)))
        except ValueError:
            sys.exit(f"bad band {part!r} (UPTO:ITERS)")
        if spec[-1][1] <= 0:
            sys.exit(f"bad band {part!r}: ITERS must be positive")
    spec.sort()
    sizes, s = [], lo
    while s <= hi:
        sizes.append(s)
        s *= factor
    groups = {}
    for s in sizes:
        iters = next((n for upto, n in spec if s <= upto), spec[-1][1])
        key = next((i for i, (upto, _) in enumerate(spec) if s <= upto), len(spec) - 1)
        groups.setdefault((key, iters), []).append(s)
    for band, ((_, iters), ss) in enumerate(sorted(groups.items())):
        ar = [s // FLOAT * FLOAT for s in ss if s // FLOAT > 0]
        a2a = [s // FLOAT // np_ * FLOAT for s in ss if s // FLOAT // np_ > 0]
        # IMB -mem is GB per process for the message buffers: send + receive (x N for Alltoall).
        mem_ar = max(1.0, math.ceil(2 * max(ar or [0]) * 1.5 / 2**30 * 100) / 100)
        mem_a2a = max(1.0, math.ceil(2 * np_ * max(a2a or [0]) * 1.5 / 2**30 * 100) / 100)
        print("\t".join(map(str, [band, ss[0], ss[-1], iters, warmup_for(iters),
                                  ",".join(map(str, ss)), ",".join(map(str, ar)) or "-", ",".join(map(str, a2a)) or "-",
                                  mem_ar, mem_a2a, msglog(ar), msglog(a2a)])))

def parse_imb(path, bench):
    """IMB-MPI1 text: '# Benchmarking <bench>' then '#bytes #repetitions t_min t_max t_avg' rows."""
    out, inside = {}, False
    with open(path) as f:
        for line in f:
            if line.startswith("# Benchmarking"):
                inside = line.split()[2] == bench
                continue
            if not inside:
                continue
            cols = line.split()
            if len(cols) == 5 and all(re.fullmatch(r"[0-9.eE+-]+", c) for c in cols):
                out[int(cols[0])] = {"reps": int(cols[1]), "t_min": float(cols[2]),
                                     "t_max": float(cols[3]), "t_avg": float(cols[4])}
    return out

def parse_cb(path):
    with open(path) as f:
        doc = json.load(f)
    out = {}
    for r in doc.get("results") or []:
        if r.get("placement") != "out_of_place" or r.get("dtype") != "float":
            continue
        out[(r["op"], int(r["size_bytes"]))] = r
    return out

def fmt(x):
    if x is None:
        return "-"
    return f"{x:.2f}" if x < 1000 else f"{x:.1f}"

def spread(v):
    if len(v) < 2 or not min(v):
        return "-"
    return f"{(max(v) - min(v)) / statistics.median(v) * 100:.0f}%"

def paired_interval(pairs, tol, seed):
    """The median over rounds of collbench/IMB within a round, its 90% bootstrap interval (the
    rounds resampled, each round's two times kept together), and what the interval says: within
    tol, slower or faster beyond it, or undecided (noise). Pairing cancels what a round's two
    adjacent launches share (the machine's state then), which resampling each tool on its own
    counts as noise."""
    if len(pairs) < 3:
        return None, None, "-"
    ratios = [c / i for c, i in pairs]
    rng = random.Random(seed)
    qs = sorted(statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(2000))
    lo, hi = qs[100], qs[1899]
    t = tol / 100
    if lo >= 1 - t and hi <= 1 + t:
        verdict = "within"
    elif lo > 1 + t:
        verdict = "slower"
    elif hi < 1 - t:
        verdict = "faster"
    else:
        verdict = "undecided"
    return statistics.median(ratios), (lo, hi), verdict

def log_correlation(pairs):
    """Pearson correlation of log(collbench) and log(IMB) over the rounds of one size."""
    if len(pairs) < 3:
        return None
    xs, ys = [math.log(c) for c, _ in pairs], [math.log(i) for _, i in pairs]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    sxx, syy = sum((x - mx) ** 2 for x in xs), sum((y - my) ** 2 for y in ys)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else None

def collbench_first(r, order):
    return order == "collbench-first" or r % 2 == 1

def cmd_report(workdir, plan_file, rounds, np_, ops, tol, imb_sync, stat, order):
    rounds, np_, tol = int(rounds), int(np_), float(tol)
    agg = statistics.median if stat == "median" else min
    ops = ops.split(",")
    bands = []
    with open(plan_file) as f:
        for line in f:
            b, lo, hi, iters, warm, ss, *_ = line.rstrip("\n").split("\t")
            bands.append((int(b), [int(x) for x in ss.split(",")], int(iters), int(warm)))
    problems, rows = [], []
    for op in ops:
        for band, sizes, iters, warm in bands:
            cb_t, imb_t = {}, {}
            for r in range(1, rounds + 1):
                cbf = os.path.join(workdir, f"round{r}", f"cb-{op}-band{band}", "run.json")
                imbf = os.path.join(workdir, f"round{r}", f"imb-{op}-band{band}.txt")
                try:
                    cb = parse_cb(cbf)
                except (OSError, ValueError, KeyError) as e:
                    problems.append(f"round {r} band {band}: collbench results unreadable: {e}")
                    cb = {}
                try:
                    imb = parse_imb(imbf, OPS[op])
                except OSError as e:
                    problems.append(f"round {r} band {band}: IMB output unreadable: {e}")
                    imb = {}
                for s in sizes:
                    if op == "all_reduce":
                        size, imb_bytes = s // 4 * 4, s // 4 * 4
                    else:
                        per_peer = s // 4 // np_
                        size, imb_bytes = per_peer * np_ * 4, per_peer * 4
                    if imb_bytes > 0:
                        rec = cb.get((op, size))
                        if rec is None:
                            problems.append(f"round {r}: collbench has no {op} record for {size} B")
                        else:
                            if int(rec.get("iterations", iters)) != iters:
                                problems.append(f"round {r}: collbench {op} {size} B ran "
                                                f"{rec.get('iterations')} iterations, not {iters}")
                            cb_t.setdefault((size, imb_bytes), {})[r] = float(rec["time_us"])
                        row = imb.get(imb_bytes)
                        if row is None:
                            problems.append(f"round {r}: IMB {OPS[op]} has no row for {imb_bytes} B")
                        else:
                            if row["reps"] != iters:
                                problems.append(f"round {r}: IMB {OPS[op]} {imb_bytes} B ran "
                                                f"{row['reps']} repetitions, not {iters}")
                            imb_t.setdefault((size, imb_bytes), {})[r] = row["t_avg"]
            for key in sorted(set(cb_t) | set(imb_t)):
                cr, ir = cb_t.get(key, {}), imb_t.get(key, {})
                c, i = [cr[r] for r in sorted(cr)], [ir[r] for r in sorted(ir)]
                pairs = [(cr[r], ir[r]) for r in sorted(cr) if r in ir and ir[r] > 0]
                cm = agg(c) if c else None
                im = agg(i) if i else None
                ratio = cm / im if cm is not None and im else None
                within = None if ratio is None else abs(ratio - 1) <= tol / 100
                paired, ci, verdict = paired_interval(pairs, tol, f"{op}-{key[0]}")
                by_order = {}
                for first in (True, False):
                    rs = [cr[r] / ir[r] for r in sorted(cr)
                          if r in ir and ir[r] > 0 and collbench_first(r, order) == first]
                    by_order[first] = statistics.median(rs) if rs else None
                rows.append({"op": op, "bytes": key[0], "imb_bytes": key[1], "iters": iters,
                             "warmup": warm, "collbench_us": c, "imb_us": i,
                             "collbench_rounds": sorted(cr), "imb_rounds": sorted(ir),
                             f"collbench_{stat}_us": cm, f"imb_{stat}_us": im, "ratio": ratio,
                             "within": within, "paired_ratio": paired, "ratio_interval90": ci,
                             "verdict": verdict, "log_correlation": log_correlation(pairs),
                             "paired_ratio_collbench_first": by_order[True],
                             "paired_ratio_imb_first": by_order[False]})
    lines = []
    lines.append(f"Compared: collbench time_us (batched: n back-to-back calls / n, mean over "
                 f"ranks) vs IMB-MPI1 t_avg (mean over ranks of per-call time, -sync {imb_sync}); "
                 f"{np_} ranks, {stat} of {rounds} alternating round(s); float/sum for all_reduce; "
                 f"out of place.")
    lines.append("bytes = per-rank size as in collbench's size column; for all_to_all that is all "
                 f"{np_} blocks a rank sends, and IMB Alltoall's #bytes is one block (bytes/{np_}).")
    lines.append(f"spread = (max - min) / median over the rounds; ratio = collbench {stat} / "
                 f"IMB {stat}, the target's measure.")
    lines.append("paired = median over rounds of collbench / IMB in the same round (the two "
                 "launches run back to back); its 90% interval resamples the rounds (bootstrap). "
                 f"verdict: within {tol:g}%, slower or faster beyond it, or undecided (the "
                 "interval straddles a bound: the rounds' noise is too large to tell; needs >= 3 "
                 "rounds).")
    corr = [x["log_correlation"] for x in rows if x["log_correlation"] is not None]
    if corr:
        lines.append(f"Within a round the two tools' times move together: correlation of their "
                     f"log times over the rounds, median over sizes {statistics.median(corr):+.2f} "
                     f"(range {min(corr):+.2f}..{max(corr):+.2f}); pairing cancels that part of "
                     f"the noise.")
    if order == "alternate":
        eff = [x["paired_ratio_collbench_first"] / x["paired_ratio_imb_first"] for x in rows
               if x["paired_ratio_collbench_first"] and x["paired_ratio_imb_first"]]
        if eff:
            lines.append(f"Order: collbench ran first in odd rounds, IMB in even ones. The paired "
                         f"ratio of collbench-first rounds over that of IMB-first rounds, median "
                         f"over sizes {statistics.median(eff):.3f} (range {min(eff):.2f}.."
                         f"{max(eff):.2f}): how much running first (or second) moves a launch; "
                         f"alternating cancels it in the paired ratio.")
    else:
        lines.append("Order: collbench ran first in every round.")
    lines.append("")
    lines.append(f"| op | bytes | IMB #bytes | iters | collbench {stat} us | IMB {stat} us | "
                 f"ratio | within {tol:g}% | collbench spread | IMB spread | paired | "
                 f"90% interval | verdict |")
    lines.append("|---|---:|---:|---:|---:|---:|---:|:---:|---:|---:|---:|:---:|:---:|")
    for x in rows:
        ci = x["ratio_interval90"]
        lines.append(f"| {x['op']} | {x['bytes']} | {x['imb_bytes']} | {x['iters']} | "
                     f"{fmt(x[f'collbench_{stat}_us'])} | {fmt(x[f'imb_{stat}_us'])} | "
                     f"{'-' if x['ratio'] is None else format(x['ratio'], '.3f')} | "
                     f"{'-' if x['within'] is None else ('yes' if x['within'] else 'no')} | "
                     f"{spread(x['collbench_us'])} | {spread(x['imb_us'])} | "
                     f"{'-' if x['paired_ratio'] is None else format(x['paired_ratio'], '.3f')} | "
                     f"{'-' if ci is None else f'{ci[0]:.2f}-{ci[1]:.2f}'} | {x['verdict']} |")
    lines.append("")
    for op in ops:
        rs = [x for x in rows if x["op"] == op and x["within"] is not None]
        ok = sum(1 for x in rs if x["within"])
        worst = max(rs, key=lambda x: abs(x["ratio"] - 1), default=None)
        w = (f"; worst {worst['ratio']:.3f} at {worst['bytes']} B" if worst else "")
        counts = {v: sum(1 for x in rs if x["verdict"] == v)
                  for v in ("within", "slower", "faster", "undecided")}
        by = ", ".join(f"{n} {v}" for v, n in counts.items() if n)
        lines.append(f"{op}: {ok}/{len(rs)} sizes within {tol:g}%{w}"
                     + (f"; by the paired 90% intervals: {by}" if sum(counts.values()) else ""))
    text = "\n".join(lines) + "\n"
    with open(os.path.join(workdir, "table.md"), "w") as f:
        f.write(text)
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump({"np": np_, "rounds": rounds, "tolerance_pct": tol, "imb_sync": imb_sync, "stat": stat,
                   "order": order,
                   "rows": rows, "problems": problems}, f, indent=1)
    sys.stdout.write(text)
    if problems:
        for p in problems[:20]:
            print(f"problem: {p}", file=sys.stderr)
        if len(problems) > 20:
            print(f"... and {len(problems) - 20} more (results.json)", file=sys.stderr)
        sys.exit(1)

if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "plan":
        cmd_plan(*args)
    elif cmd == "report":
        cmd_report(*args)
    else:
        sys.exit(f"unknown helper command {cmd}")
PY

if [[ -n $REPORT_ONLY ]]; then
    [[ -f $REPORT_ONLY/plan.tsv && -f $REPORT_ONLY/sweep.args ]] \
        || die "--report-only: $REPORT_ONLY has no plan.tsv and sweep.args (pass the --workdir of an earlier run)"
    ORDER=collbench-first  # workdirs written before --order existed
    while IFS='=' read -r key value; do
        case $key in
            NP) NP=$value ;;
            ORDER) ORDER=$value ;;
            OPS) OPS=$value ;;
            IMB_SYNC) IMB_SYNC=$value ;;
            *) die "--report-only: $REPORT_ONLY/sweep.args: unknown line '$key=$value'" ;;
        esac
    done <"$REPORT_ONLY/sweep.args"
    [[ $NP =~ ^[1-9][0-9]*$ && $OPS =~ ^[a-z_,]+$ && $IMB_SYNC =~ ^(on|off)$ \
       && $ORDER =~ ^(alternate|collbench-first)$ ]] \
        || die "--report-only: $REPORT_ONLY/sweep.args: NP, OPS, IMB_SYNC or ORDER is malformed"
    ROUNDS=$(find "$REPORT_ONLY" -mindepth 1 -maxdepth 1 -type d -name 'round*' | wc -l)
    (( ROUNDS > 0 )) || die "--report-only: $REPORT_ONLY has no round directories"
    python3 "$HELPER" report "$REPORT_ONLY" "$REPORT_ONLY/plan.tsv" "$ROUNDS" "$NP" "$OPS" "$TOL" "$IMB_SYNC" "$STAT" "$ORDER"
    exit $?
fi

# ---------------------------------------------------------------------------------------------
# IMB-MPI1: a given binary, or build one from a given source outside the repository.
inside_repo() {  # is $1 (existing or not) inside the repository?
    local p
    p=$(realpath -m "$1")
    [[ $p == "$REPO" || $p == "$REPO"/* ]]
}

build_imb() {
    local src=$1 key dest log
    [[ -d $src ]] || die "--imb-src: '$src' is not a directory"
    src=$(realpath "$src")
    inside_repo "$IMB_CACHE_DIR" && die "--imb-cache '$IMB_CACHE_DIR' is inside the repository; pick a directory outside it"
    key=$(printf '%s' "$src" | sha1sum | cut -c1-12)
    if git -C "$src" rev-parse HEAD >/dev/null 2>&1; then
        key=$key-$(git -C "$src" rev-parse --short=12 HEAD)
    fi
    dest=$IMB_CACHE_DIR/$key
    if [[ $REBUILD_IMB == 0 && -x $dest/src/IMB-MPI1 ]]; then
        IMB_BIN=$dest/src/IMB-MPI1
        log "using cached $IMB_BIN (built from $src; --rebuild-imb to rebuild)"
        return
    fi
    rm -rf "$dest"
    mkdir -p "$dest"
    if [[ $(git -C "$src" rev-parse --is-bare-repository 2>/dev/null || true) == true ]]; then
        log "cloning $src into $dest/src"
        git clone -q "$src" "$dest/src"
    elif [[ -f $src/Makefile && -d $src/src_cpp ]]; then
        log "copying $src into $dest/src"
        cp -a "$src" "$dest/src"
    else
        die "--imb-src: '$src' is neither an IMB source tree (Makefile, src_cpp/) nor a bare git repository of it"
    fi
    [[ -f $dest/src/Makefile && -d $dest/src/src_cpp ]] || die "--imb-src: no IMB source (Makefile, src_cpp/) in '$src'"
    log "building IMB-MPI1 in $dest/src (log: $dest/build.log)"
    log=$dest/build.log
    if ! make -C "$dest/src" -j"$(nproc)" IMB-MPI1 CC="${MPICC:-mpicc}" CXX="${MPICXX:-mpicxx}" \
            CPPFLAGS="-DOMPI_SKIP_MPICXX=1 -DMPICH_SKIP_MPICXX=1" >"$log" 2>&1; then
        tail -n 30 "$log" >&2
        fail "building IMB-MPI1 failed (full log: $log)"
    fi
    [[ -x $dest/src/IMB-MPI1 ]] || fail "the IMB build produced no IMB-MPI1 (log: $log)"
    IMB_BIN=$dest/src/IMB-MPI1
}

if [[ -n $IMB_BIN ]]; then
    [[ -x $IMB_BIN && -f $IMB_BIN ]] || die "--imb: '$IMB_BIN' is not an executable file"
elif [[ -n $IMB_SRC_DIR ]]; then
    build_imb "$IMB_SRC_DIR"
else
    cat >&2 <<EOF
$PROG: IMB-MPI1 is needed and not part of this repository. Either
  - pass a built binary:     $PROG --imb /path/to/IMB-MPI1         (or env IMB=...)
  - or its source to build:  $PROG --imb-src /path/to/mpi-benchmarks (or env IMB_SRC=...)
Get the source with:  git clone https://github.com/intel/mpi-benchmarks /tmp/imb-src
(it is built outside the repository, under $IMB_CACHE_DIR). See --help.
EOF
    exit 2
fi
IMB_BIN=$(realpath "$IMB_BIN")

# ---------------------------------------------------------------------------------------------
# collbench
if [[ -z $COLLBENCH_BIN ]]; then
    COLLBENCH_BIN=$REPO/target/release/collbench
    [[ -x $COLLBENCH_BIN ]] || DO_BUILD=1
fi
if [[ $DO_BUILD == 1 && $DRY_RUN == 0 ]]; then
    command -v cargo >/dev/null || die "cargo not found (needed to build collbench; or pass --collbench PATH)"
    log "cargo build --release --locked (in $REPO)"
    (cd "$REPO" && cargo build --release --locked) >&2 || fail "building collbench failed"
fi
[[ -x $COLLBENCH_BIN || $DRY_RUN == 1 ]] || die "collbench binary '$COLLBENCH_BIN' not found or not executable"
[[ $DRY_RUN == 1 && ! -x $COLLBENCH_BIN ]] || COLLBENCH_BIN=$(realpath "$COLLBENCH_BIN")

# ---------------------------------------------------------------------------------------------
# mpirun
command -v "$MPIRUN_CMD" >/dev/null || die "mpirun '$MPIRUN_CMD' not found"
MPI_VERSION=$("$MPIRUN_CMD" --version 2>&1 | head -n 1 || true)
if [[ $MPIRUN_ARGS_SET == 0 ]]; then
    if [[ $MPI_VERSION == *"Open MPI"* || $MPI_VERSION == *"OpenRTE"* ]]; then
        (( NP > $(nproc) )) && MPIRUN_ARGS="--oversubscribe --bind-to core:overload-allowed --map-by core --mca mpi_yield_when_idle 1"
    fi
fi
if [[ $(id -u) -eq 0 ]]; then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
read -r -a MPIRUN_ARGV <<<"$MPIRUN_ARGS"
TIMEOUT_CMD=()
command -v timeout >/dev/null && TIMEOUT_CMD=(timeout -k 20 "$TIMEOUT_S")

libmpi_of() { ldd "$1" 2>/dev/null | awk '/libmpi[._]/ {print $3; exit}'; }

# ---------------------------------------------------------------------------------------------
# Plan
PLAN=$HELPER.plan
python3 "$HELPER" plan "$MINB" "$MAXB" "$FACTOR" "$NP" "$BANDS" "$OPS" >"$PLAN" || die "bad sweep options"

IFS=, read -r -a OP_LIST <<<"$OPS"
imb_name() { case $1 in all_reduce) echo Allreduce ;; all_to_all) echo Alltoall ;; esac; }

cb_cmd() {  # op lo hi iters warmup outdir
    CMD=("${TIMEOUT_CMD[@]}" "$MPIRUN_CMD" -np "$NP" "${MPIRUN_ARGV[@]}" "$COLLBENCH_BIN" bench
         --backend mpi -b "$2" -e "$3" -f "$FACTOR" -n "$4" -w "$5" -c 0 -d float -o sum --op "$1"
         --placement out --out "$6")
}
imb_cmd() {  # op sizes iters mem maxlog
    CMD=("${TIMEOUT_CMD[@]}" "$MPIRUN_CMD" -np "$NP" "${MPIRUN_ARGV[@]}" "$IMB_BIN" "$(imb_name "$1")"
         -npmin "$NP" -msgsize "$2" -msglog "0:$5" -zero_size off -iter_policy off -iter "$3" -time 100000
         -mem "$4" -sync "$IMB_SYNC")
}
show() { printf '%q ' "${CMD[@]}"; echo; }

if [[ $DRY_RUN == 1 ]]; then
    echo "# plan (band lo hi iters warmup collbench_sizes imb_allreduce_sizes imb_alltoall_sizes imb_mem_ar imb_mem_a2a imb_maxlog_ar imb_maxlog_a2a):"
    sed 's/^/#   /' "$PLAN"
    echo "# round 1 (collbench first$([[ $ORDER == alternate ]] && echo '; in even rounds IMB runs first')):"
    while IFS=$'\t' read -r band lo hi iters warm cbsizes ar a2a mem_ar mem_a2a log_ar log_a2a; do
        for op in "${OP_LIST[@]}"; do
            if [[ $op == all_reduce ]]; then sizes=$ar mem=$mem_ar lg=$log_ar; else sizes=$a2a mem=$mem_a2a lg=$log_a2a; fi
            [[ $sizes == - ]] && continue
            cb_cmd "$op" "$lo" "$hi" "$iters" "$warm" "${WORKDIR:-<workdir>}/round1/cb-$op-band$band"; show
            imb_cmd "$op" "$sizes" "$iters" "$mem" "$lg"; show
        done
    done <"$PLAN"
    exit 0
fi

if [[ -z $WORKDIR ]]; then
    WORKDIR=$(mktemp -d /tmp/collbench-vs-imb.XXXXXX)
else
    mkdir -p "$WORKDIR"
    WORKDIR=$(realpath "$WORKDIR")
fi
cp "$PLAN" "$WORKDIR/plan.tsv"
PLAN=$WORKDIR/plan.tsv
printf 'NP=%s\nOPS=%s\nIMB_SYNC=%s\nORDER=%s\n' "$NP" "$OPS" "$IMB_SYNC" "$ORDER" >"$WORKDIR/sweep.args"

log "workdir: $WORKDIR"
log "collbench: $COLLBENCH_BIN (libmpi: $(libmpi_of "$COLLBENCH_BIN"))"
log "IMB-MPI1:  $IMB_BIN (libmpi: $(libmpi_of "$IMB_BIN"))"
log "mpirun:    $(command -v "$MPIRUN_CMD") -np $NP $MPIRUN_ARGS  [$MPI_VERSION]"
if [[ -n $(libmpi_of "$COLLBENCH_BIN") && $(libmpi_of "$COLLBENCH_BIN") != "$(libmpi_of "$IMB_BIN")" ]]; then
    log "WARNING: collbench and IMB-MPI1 link different libmpi; the comparison is not like for like"
fi

run_logged() {  # what logfile -- command is in CMD
    local what=$1 out=$2 t0 rc=0
    t0=$(date +%s)
    "${CMD[@]}" >"$out" 2>&1 </dev/null || rc=$?
    if [[ $rc != 0 ]]; then
        tail -n 25 "$out" >&2
        fail "$what failed (exit $rc; full output: $out; command: $(show))"
    fi
    log "  $what: $(( $(date +%s) - t0 )) s"
}

first_in_round() { if [[ $ORDER == alternate && $(( $1 % 2 )) == 0 ]]; then echo imb; else echo collbench; fi; }
run_cb() {  # round op band lo hi iters warmup
    rm -rf "$WORKDIR/round$1/cb-$2-band$3"
    cb_cmd "$2" "$4" "$5" "$6" "$7" "$WORKDIR/round$1/cb-$2-band$3"
    run_logged "collbench $2 $4..$5 B, -n $6 -w $7" "$WORKDIR/round$1/cb-$2-band$3.log"
}
run_imb() {  # round op band sizes iters mem maxlog
    imb_cmd "$2" "$4" "$5" "$6" "$7"
    run_logged "IMB $(imb_name "$2") ${4%%,*}..${4##*,} B, -iter $5" "$WORKDIR/round$1/imb-$2-band$3.txt"
}

T_START=$(date +%s)
for ((r = 1; r <= ROUNDS; r++)); do
    mkdir -p "$WORKDIR/round$r"
    log "round $r/$ROUNDS"
    while IFS=$'\t' read -r band lo hi iters warm cbsizes ar a2a mem_ar mem_a2a log_ar log_a2a; do
        for op in "${OP_LIST[@]}"; do
            if [[ $op == all_reduce ]]; then sizes=$ar mem=$mem_ar lg=$log_ar; else sizes=$a2a mem=$mem_a2a lg=$log_a2a; fi
            [[ $sizes == - ]] && continue
            # The same op and band back to back, in the round's order.
            if [[ $(first_in_round "$r") == collbench ]]; then
                run_cb "$r" "$op" "$band" "$lo" "$hi" "$iters" "$warm"
                run_imb "$r" "$op" "$band" "$sizes" "$iters" "$mem" "$lg"
            else
                run_imb "$r" "$op" "$band" "$sizes" "$iters" "$mem" "$lg"
                run_cb "$r" "$op" "$band" "$lo" "$hi" "$iters" "$warm"
            fi
        done
    done <"$PLAN"
done
log "all rounds done in $(( $(date +%s) - T_START )) s"

echo
echo "## collbench vs IMB-MPI1 ($NP ranks, $ROUNDS round(s), $(hostname))"
echo
rc=0
python3 "$HELPER" report "$WORKDIR" "$PLAN" "$ROUNDS" "$NP" "$OPS" "$TOL" "$IMB_SYNC" "$STAT" "$ORDER" || rc=$?
echo
echo "IMB-MPI1 flags: -npmin $NP -msgsize <band sizes> -msglog 0:<log2 of the largest> -zero_size off -iter_policy off -iter <band iters> -time 100000 -mem <GB> -sync $IMB_SYNC"
echo "collbench flags: bench --backend mpi -b <lo> -e <hi> -f $FACTOR -n <band iters> -w <IMB's warmup rule> -c 0 -d float -o sum --op <op> --placement out"
echo "mpirun: $MPIRUN_CMD -np $NP $MPIRUN_ARGS"
echo "raw outputs, table.md, results.json: $WORKDIR"
[[ $rc == 0 ]] || fail "some results were missing or unexpected (see above and $WORKDIR/results.json)"
exit 0
