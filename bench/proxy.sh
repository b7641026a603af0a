#!/usr/bin/env bash
# Proxy benchmark: Gatehouse beside nginx and a direct connection.
#
# Usage: bench/proxy.sh [--targets "direct nginx gatehouse"] [--duration S]
#                       [--warmup S] [--connections N] [--repeat N]
#                       [--no-build] [--out FILE]
#
# One run measures up to three targets under the same load, one after the other:
#   direct     wrk -> gatehouse-echo
#   nginx      wrk -> nginx (1 worker, keepalive upstream pool) -> gatehouse-echo
#   gatehouse  wrk -> gatehouse-dataplane --workers 1 -> gatehouse-echo
# The proxy under test is pinned to CPU 0; the upstream (gatehouse-echo
# --minimal with a fixed two-byte body; UPSTREAM=hyper for the echo's full,
# hyper-based mode) and the load generator (wrk, 1 thread, 64 connections)
# share CPU 1, so both proxies see the same interference. Each target gets a
# warm-up (default 2 s) and then a measured run (default 10 s, `--latency`).
#
# Measured per target: requests/s, p50 and p99 latency (wrk's histogram), errors
# (socket errors plus non-2xx answers), and CPU per request: utime+stime of the
# proxy's processes (nginx master and worker, or the data plane with all its
# threads) from /proc/PID/stat, after minus before the measured run, divided by
# the requests wrk completed. The upstream's CPU per request is shown too, as a
# sanity check that every target asked the same work of it. "Proxy busy" is
# the proxy's CPU time over the run's duration: well under 100% means the
# proxy was not what limited requests/s (the load side on CPU 1, or other work
# on the machine, was). "Load core busy" is CPU 1's busy share over the run,
# from /proc/stat: at 100% the load generator and the upstream could go no
# faster, so requests/s measured them rather than the proxy, and no proxy
# could pass the direct connection's requests/s.
#
# `--repeat N` (default 3) runs N rounds, each target once per round, interleaved so that
# background load drifting over time hits every target alike; each target's
# row is its round with the median requests/s, and a column gives the
# requests/s range over the rounds. The gatehouse/nginx requests/s ratio of
# each round, and their median, follow the tables: on a machine whose speed
# changes between runs, the ratio within a round is the steadier figure.
#
# Prints a Markdown table and the ratios gatehouse/nginx and gatehouse/direct;
# `--out FILE` also writes them to FILE. The script builds the release binaries
# it needs (`--no-build` skips that) and installs nothing: it names what is
# missing (Debian: `apt-get install -y wrk nginx-light`). It needs two CPUs and
# talks only over loopback. Every process it starts is stopped on exit; set
# KEEP_TMP=1 to keep the temporary directory (configs, logs, wrk output).
#
# Ports (override with the environment): NGINX_PORT=18080, GATEHOUSE_PORT=18081,
# GATEHOUSE_ADMIN_PORT=18090; the upstream takes a free port. With the defaults
# the measured part takes about 40 s per round, two minutes in all: one round
# alone can land in one of the machine's slow spells (see docs/benchmarks.md).

set -euo pipefail

duration=${DURATION:-10}
warmup=${WARMUP:-2}
connections=${CONNECTIONS:-64}
targets=${TARGETS:-"direct nginx gatehouse"}
nginx_port=${NGINX_PORT:-18080}
gatehouse_port=${GATEHOUSE_PORT:-18081}
gatehouse_admin_port=${GATEHOUSE_ADMIN_PORT:-18090}
proxy_cpu=${PROXY_CPU:-0}
load_cpu=${LOAD_CPU:-1}
repeat=3
build=1
out=""

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

parse_run_options "$@"

targets=${targets//,/ }
wants() { [[ " $targets " == *" $1 "* ]]; }
for t in $targets; do
    case $t in direct | nginx | gatehouse) ;; *) echo "unknown target: $t" >&2; exit 2 ;; esac
done

tools=(wrk taskset curl pgrep)
wants nginx && tools+=(nginx)
((build)) && tools+=(cargo)
require "${tools[@]}"

packages=(gatehouse-echo)
wants gatehouse && packages+=(gatehouse-dataplane)
build_binaries "${packages[@]}"

# Other work on the machine skews every figure: the report shows how busy it was.
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
bench_setup
clk_tck=$(getconf CLK_TCK)
start_upstream

# Figures by "target round", read back through `fig`.
declare -A rps p50 p99 cpu_us busy up_cpu_us errors load_busy

# Warm-up, then the measured run with CPU readings around it.
# shellcheck disable=SC2034 # the tables are read through `fig`'s nameref
measure() {
    local name=$1 url=$2 key="$1 $3" before=0 after=0 up_before up_after report=$tmp/$1.$3.wrk requests
    local core_before core_after
    local -a procs=()
    if [[ $name != direct ]]; then mapfile -t procs < <(proxy_processes); fi

    wrk_run "$warmup" "$connections" "$url" "$tmp/$name.$3.warmup"

    up_before=$(cpu_ticks "$echo_pid")
    core_before=$(core_ticks "$load_cpu")
    if ((${#procs[@]})); then before=$(cpu_ticks "${procs[@]}"); fi
    wrk_run "$duration" "$connections" "$url" "$report" --latency
    if ((${#procs[@]})); then after=$(cpu_ticks "${procs[@]}"); fi
    core_after=$(core_ticks "$load_cpu")
    up_after=$(cpu_ticks "$echo_pid")
    check_alive "${procs[@]}"

    requests=$(wrk_requests "$report")
    rps[$key]=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$report")
    p50[$key]=$(wrk_percentile_us "$report" 50%)
    p99[$key]=$(wrk_percentile_us "$report" 99%)
    errors[$key]=$(wrk_errors "$report")
    up_cpu_us[$key]=$(ratio $(((up_after - up_before) * 1000000 / clk_tck)) "$requests" 1)
    local busy_before total_before busy_after total_after
    read -r busy_before total_before <<<"$core_before"
    read -r busy_after total_after <<<"$core_after"
    load_busy[$key]=$(ratio $(((busy_after - busy_before) * 100)) $((total_after - total_before)) 0)
    if ((${#procs[@]})); then
        cpu_us[$key]=$(ratio $(((after - before) * 1000000 / clk_tck)) "$requests" 1)
        busy[$key]=$(ratio $(((after - before) * 100)) $((duration * clk_tck)) 0)
    else
        cpu_us[$key]="-"
        busy[$key]="-"
    fi
    echo "round $3, $name: ${rps[$key]} req/s, p50 ${p50[$key]} us, p99 ${p99[$key]} us, proxy CPU ${cpu_us[$key]} us/req, proxy busy ${busy[$key]}%, load core busy ${load_busy[$key]}%, errors ${errors[$key]}" >&2
}

for ((round = 1; round <= repeat; round++)); do
    for t in direct nginx gatehouse; do
        wants "$t" || continue
        case $t in
        direct) measure direct "http://$upstream/" "$round" ;;
        nginx) start_nginx && measure nginx "$proxy_url" "$round" && stop "$proxy_pid" ;;
        gatehouse) start_gatehouse && measure gatehouse "$proxy_url" "$round" && stop "$proxy_pid" ;;
        esac
    done
done

# Each target's figures are those of its median round by requests/s, so one
# row always comes from one run.
declare -A pick range
for t in direct nginx gatehouse; do
    wants "$t" || continue
    sorted=$(for ((r = 1; r <= repeat; r++)); do echo "${rps[$t $r]} $r"; done | sort -n)
    pick[$t]=$(awk -v n="$repeat" 'NR == int((n + 1) / 2) { print $2 }' <<<"$sorted")
    range[$t]=$(awk 'NR == 1 { lo = $1 } { hi = $1 } END { print (lo == hi) ? lo : lo "–" hi }' <<<"$sorted")
done
fig() { local -n table=$1; echo "${table[$2 ${pick[$2]}]}"; }

report() {
    echo "# bench/proxy.sh: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "# $(machine_line); load average before the run $load_before"
    echo "# wrk -t1 -c$connections -d${duration}s --latency after ${warmup}s warm-up, $repeat round(s); proxy on CPU $proxy_cpu, wrk and upstream (${UPSTREAM:-minimal}) on CPU $load_cpu"
    echo
    echo "| target | requests/s | p50 (µs) | p99 (µs) | proxy CPU (µs/req) | proxy busy (% of a CPU) | load core busy (%) | upstream CPU (µs/req) | errors | requests/s over rounds |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for t in direct nginx gatehouse; do
        wants "$t" || continue
        echo "| $t | $(fig rps "$t") | $(fig p50 "$t") | $(fig p99 "$t") | $(fig cpu_us "$t") | $(fig busy "$t") | $(fig load_busy "$t") | $(fig up_cpu_us "$t") | $(fig errors "$t") | ${range[$t]} |"
    done
    if wants gatehouse; then
        echo
        echo "| ratio | requests/s | p50 | p99 | proxy CPU/req |"
        echo "|---|---:|---:|---:|---:|"
        local other
        for other in nginx direct; do
            wants "$other" || continue
            echo "| gatehouse / $other | $(ratio "$(fig rps gatehouse)" "$(fig rps "$other")") | $(ratio "$(fig p50 gatehouse)" "$(fig p50 "$other")") | $(ratio "$(fig p99 gatehouse)" "$(fig p99 "$other")") | $(ratio "$(fig cpu_us gatehouse)" "$(fig cpu_us "$other")") |"
        done
        # The two median rows may come from different rounds, and so from
        # different states of the machine; ratios within each round may not.
        if wants nginx && ((repeat > 1)); then
            local r ratios=()
            for ((r = 1; r <= repeat; r++)); do
                ratios+=("$(ratio "${rps[gatehouse $r]}" "${rps[nginx $r]}")")
            done
            echo
            echo "gatehouse / nginx requests/s per round: ${ratios[*]} (median $(printf '%s\n' "${ratios[@]}" | sort -n | awk -v n="$repeat" 'NR == int((n + 1) / 2)'))"
        fi
    fi
}

if [[ -n $out ]]; then
    report | tee "$out"
else
    report
fi
