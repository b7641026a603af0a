#!/usr/bin/env bash
# Per-request costs of a proxy: where proxy.sh says how fast, this says why.
#
# Usage: bench/perf-notes.sh [--targets "nginx gatehouse"] [--duration S]
#                            [--connections N] [--no-dhat] [--no-build]
#
# Same setup as proxy.sh (bench/lib.sh): proxy pinned to CPU 0, wrk and
# gatehouse-echo on CPU 1, one route to one upstream. For each target, wrk runs
# for a fixed time while `perf stat` counts the proxy's processes (all
# threads) over exactly that run; the counts are divided by the requests wrk
# completed:
#   task-clock        CPU time on the proxy, µs per request (and its user and
#                     system parts from /proc/PID/stat, 10 ms resolution)
#   context-switches  wake-ups and preemptions per request
#   syscalls          raw_syscalls:sys_enter per request
#   page-faults       per request (should be ~0 once warm)
# Then, unless --no-dhat, the data plane (built without mimalloc, which
# dhat cannot see into) runs under `valgrind --tool=dhat` twice: once
# serving only the readiness request, once under load (8 connections, as
# valgrind is ~50x slower). The difference in heap blocks and
# bytes allocated, divided by the extra requests, is allocations per request,
# with startup cancelled out.
#
# Needs perf (Debian: linux-perf) with perf_event_paranoid <= 2 for its own
# processes, and valgrind for the dhat part. Whole run: about 40 s, plus two
# builds of the data plane for the dhat part.

set -euo pipefail

duration=${DURATION:-5}
connections=${CONNECTIONS:-64}
targets=${TARGETS:-"nginx gatehouse"}
nginx_port=${NGINX_PORT:-18080}
gatehouse_port=${GATEHOUSE_PORT:-18081}
gatehouse_admin_port=${GATEHOUSE_ADMIN_PORT:-18090}
proxy_cpu=${PROXY_CPU:-0}
load_cpu=${LOAD_CPU:-1}
build=1
dhat=1

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

while (($#)); do
    case $1 in
    --targets) targets=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --connections) connections=$2; shift 2 ;;
    --no-dhat) dhat=0; shift ;;
    --no-build) build=0; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
targets=${targets//,/ }
wants() { [[ " $targets " == *" $1 "* ]]; }
wants gatehouse || dhat=0

tools=(wrk taskset curl pgrep perf)
wants nginx && tools+=(nginx)
((dhat)) && tools+=(valgrind)
((build)) && tools+=(cargo)
require "${tools[@]}"
packages=(gatehouse-echo)
wants gatehouse && packages+=(gatehouse-dataplane)
build_binaries "${packages[@]}"
# dhat sees only the system allocator: the data plane built without
# mimalloc, kept beside the other binaries.
system_alloc=$bin_dir/system-alloc/gatehouse-dataplane
if ((dhat && build)); then
    echo "building gatehouse-dataplane with the system allocator (release)" >&2
    (cd "$root" && cargo build --release --quiet -p gatehouse-dataplane --no-default-features)
    mkdir -p "$(dirname "$system_alloc")"
    cp "$bin_dir/gatehouse-dataplane" "$system_alloc"
    (cd "$root" && cargo build --release --quiet -p gatehouse-dataplane)
fi
if ((dhat)) && [[ ! -x $system_alloc ]]; then
    echo "missing $system_alloc (drop --no-build, or --no-dhat)" >&2
    exit 1
fi

bench_setup
start_upstream

events=task-clock,context-switches,cpu-migrations,page-faults,raw_syscalls:sys_enter

# Counts the proxy's processes while wrk runs; prints one table row.
count() {
    local name=$1 stats=$tmp/$1.perf report=$tmp/$1.wrk requests pid_list
    local -a procs
    mapfile -t procs < <(proxy_processes)
    pid_list=$(IFS=,; echo "${procs[*]}")
    wrk_run 1 "$connections" "$proxy_url" "$tmp/$name.warmup"
    local user0 sys0 user1 sys1
    read -r user0 sys0 < <(cpu_user_sys "${procs[@]}")
    # perf counts the -p processes for as long as the command (wrk) runs.
    perf stat -x, -o "$stats" -e "$events" -p "$pid_list" -- \
        timeout $((duration + 5)) taskset -c "$load_cpu" wrk -t1 -c"$connections" -d"${duration}s" "$proxy_url" >"$report" 2>&1
    check_alive "${procs[@]}"
    read -r user1 sys1 < <(cpu_user_sys "${procs[@]}")
    requests=$(wrk_requests "$report")
    awk -F, -v r="$requests" -v name="$name" -v hz="$(getconf CLK_TCK)" \
        -v user=$((user1 - user0)) -v sys=$((sys1 - sys0)) '
        $3 == "task-clock" { clock = $1 * 1000 / r }      # msec -> µs
        $3 == "context-switches" { cs = $1 / r }
        $3 == "cpu-migrations" { mig = $1 / r }
        $3 == "page-faults" { pf = $1 / r }
        $3 == "raw_syscalls:sys_enter" { sc = $1 / r }
        END {
            printf "| %s | %d | %.1f | %.1f | %.1f | %.2f | %.2f | %.3f | %.4f |\n", name, r, clock,
                user * 1e6 / hz / r, sys * 1e6 / hz / r, cs, sc, pf, mig
        }
    ' "$stats"
}

echo "# bench/perf-notes.sh: $(date -u +%Y-%m-%dT%H:%M:%SZ); $(machine_line); load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# wrk -t1 -c$connections -d${duration}s; proxy on CPU $proxy_cpu, wrk and upstream on CPU $load_cpu; perf stat over the proxy's threads"
echo
echo "| target | requests | task-clock (µs/req) | user (µs/req) | sys (µs/req) | context switches/req | syscalls/req | page faults/req | migrations/req |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
for t in nginx gatehouse; do
    wants "$t" || continue
    "start_$t"
    count "$t"
    stop "$proxy_pid"
done

((dhat)) || exit 0

# Heap totals from dhat's exit summary: "Total: N bytes in M blocks".
dhat_totals() {
    local log=$1
    awk '/Total:/ { gsub(",", ""); for (i = 1; i <= NF; i++) { if ($i == "bytes") b = $(i - 1); if ($i == "blocks") k = $(i - 1) } }
         END { print b + 0, k + 0 }' "$log"
}

# Starts the data plane under dhat, optionally loads it, stops it; sets
# dhat_bytes, dhat_blocks and dhat_requests (not through a subshell, which
# would hide the process from cleanup).
dhat_run() {
    local label=$1 seconds=$2
    gatehouse_wrapper=(valgrind --tool=dhat "--dhat-out-file=$tmp/dhat.$label.json")
    gatehouse_bin=$system_alloc
    start_gatehouse
    dhat_requests=1
    if ((seconds)); then
        wrk_run "$seconds" 8 "$proxy_url" "$tmp/dhat.$label.wrk"
        dhat_requests=$(($(wrk_requests "$tmp/dhat.$label.wrk") + 1))
    fi
    stop "$proxy_pid"
    cp "$tmp/gatehouse/dataplane.log" "$tmp/dhat.$label.log"
    read -r dhat_bytes dhat_blocks < <(dhat_totals "$tmp/dhat.$label.log")
    if ((dhat_blocks == 0)); then
        echo "dhat wrote no summary (does the data plane exit cleanly on SIGTERM?); see KEEP_TMP=1" >&2
        exit 1
    fi
}

dhat_run idle 0
idle_bytes=$dhat_bytes idle_blocks=$dhat_blocks idle_requests=$dhat_requests
dhat_run load "$duration"
extra=$((dhat_requests - idle_requests))
load_bytes=$dhat_bytes load_blocks=$dhat_blocks
echo
echo "| gatehouse heap (dhat) | requests | allocations/req | bytes allocated/req |"
echo "|---|---:|---:|---:|"
echo "| startup + 1 request | $idle_requests | - | - |"
echo "| under load, minus startup | $extra | $(ratio $((load_blocks - idle_blocks)) "$extra" 1) | $(ratio $((load_bytes - idle_bytes)) "$extra" 0) |"
