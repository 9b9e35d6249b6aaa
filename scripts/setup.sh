#!/usr/bin/env bash
# Installs what collbench needs to build and run on Debian/Ubuntu: OpenMPI (mpirun, mpicc and
# headers), libclang for the mpi crate's bindgen, a C compiler, iproute2/nftables/iptables/ping for link faults
# and the virtual cluster. Skips what is already there.
set -euo pipefail

need=()
command -v mpirun >/dev/null 2>&1 || need+=(openmpi-bin)
command -v mpicc >/dev/null 2>&1 || need+=(libopenmpi-dev)
# libclang itself, not libclang-cpp (the C++ interface other packages pull in, which bindgen cannot use).
ls /usr/lib/llvm-*/lib/libclang.so* >/dev/null 2>&1 || ls /usr/lib/*-linux-gnu/libclang-[0-9]*.so* >/dev/null 2>&1 || need+=(libclang-dev)
command -v cc >/dev/null 2>&1 || need+=(gcc)
# Link faults and the virtual cluster (scripts/vcluster): ip/tc, nft, ping, unshare.
command -v ip >/dev/null 2>&1 && command -v tc >/dev/null 2>&1 || need+=(iproute2)
command -v nft >/dev/null 2>&1 || need+=(nftables)
# A delay fault without netem queues packets to collbench's delayer with an iptables NFQUEUE rule.
command -v iptables >/dev/null 2>&1 || need+=(iptables)
command -v ping >/dev/null 2>&1 || need+=(iputils-ping)
command -v unshare >/dev/null 2>&1 || need+=(util-linux)
# The report tests render report.html in headless Chromium; only the test path asks for it.
if [[ ${COLLBENCH_TEST_DEPS:-0} == 1 ]]; then
    [[ -x /usr/bin/chromium ]] || need+=(chromium)
fi
command -v cargo >/dev/null 2>&1 || { echo "setup: cargo not found; install Rust (rustup) first" >&2; exit 3; }

if ((${#need[@]})); then
    sudo=""
    [[ $(id -u) -eq 0 ]] || sudo="sudo"
    echo "setup: installing ${need[*]}" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if [[ $(id -u) -eq 0 ]]; then
    # OpenMPI refuses root without these; collbench local sets them itself.
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
