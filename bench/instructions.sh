#!/usr/bin/env bash
# Instructions per proxied request: a figure that does not drift with the
# machine's state, for comparing two builds of the data plane.
#
# Usage: bench/instructions.sh [--duration S] [--connections N] [--top N]
#                              [--no-build]
#
# Same setup as proxy.sh (bench/lib.sh): one route to one gatehouse-echo. The
# data plane runs under `valgrind --tool=callgrind`, which counts the
# instructions the process executes in user space (not the kernel's, not
# time). After a warm-up of 2 s, the counters are zeroed, wrk runs for the
# measured time (default 5 s, 8 connections: valgrind is about 50x slower),
# and the counters are dumped; their total divided by the requests wrk
# completed is the figure. Two runs of one build agree to about 0.1%; a
# change of 1% between builds is real. Cache misses and system calls are
# not counted: a build can execute fewer instructions and still be slower,
# so confirm a gain with perf-notes.sh or proxy.sh.
#
# Prints the total per request and the functions with the largest inclusive
# cost per request (`--top`, default 25). Needs valgrind; the callgrind
# output is kept with KEEP_TMP=1 for callgrind_annotate.

set -euo pipefail

duration=${DURATION:-5}
connections=${CONNECTIONS:-8}
top=25
gatehouse_port=${GATEHOUSE_PORT:-18081}
gatehouse_admin_port=${GATEHOUSE_ADMIN_PORT:-18090}
nginx_port=${NGINX_PORT:-18080}
proxy_cpu=${PROXY_CPU:-0}
load_cpu=${LOAD_CPU:-1}
build=1

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

while (($#)); do
    case $1 in
    --duration) duration=$2; shift 2 ;;
    --connections) connections=$2; shift 2 ;;
    --top) top=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done

tools=(wrk taskset curl pgrep valgrind callgrind_control callgrind_annotate)
((build)) && tools+=(cargo)
require "${tools[@]}"
build_binaries gatehouse-echo gatehouse-dataplane

bench_setup
start_upstream
out=$tmp/callgrind.out
gatehouse_wrapper=(valgrind --tool=callgrind "--callgrind-out-file=$out" --dump-instr=no)
start_gatehouse
wrk_run 2 "$connections" "$proxy_url" "$tmp/warmup.wrk"
callgrind_control --zero "$proxy_pid" >/dev/null
wrk_run "$duration" "$connections" "$proxy_url" "$tmp/measured.wrk"
callgrind_control --dump "$proxy_pid" >/dev/null
check_alive "$proxy_pid"
requests=$(wrk_requests "$tmp/measured.wrk")
# The dump after the zeroing is the first numbered file.
dump=$out.1
for _ in $(seq 50); do [[ -s $dump ]] && break; sleep 0.1; done
[[ -s $dump ]] || { echo "callgrind wrote no dump ($dump)" >&2; exit 1; }

echo "# bench/instructions.sh: $(date -u +%Y-%m-%dT%H:%M:%SZ); $(machine_line)"
echo "# gatehouse-dataplane under callgrind; wrk -t1 -c$connections -d${duration}s after a 2 s warm-up; $requests requests"
echo
callgrind_annotate --inclusive=yes --threshold=100 --auto=no "$dump" 2>/dev/null |
    awk -v r="$requests" -v top="$top" '
        /PROGRAM TOTALS/ { gsub(",", "", $1); printf "instructions per request: %.0f\n\n", $1 / r; next }
        /^ *[0-9,]+ \( *[0-9.]+%\) +[^ ]/ && !/=>/ && shown < top && !/below main|lang_start|libc_start|short_backtrace|main\.rs|\?\?\?/ {
            n = $1; gsub(",", "", n)
            line = $0; sub(/^ *[0-9,]+ \( *[0-9.]+%\) +/, "", line); sub(/ \[[^]]*\]$/, "", line)
            sub(/^.*\/(src|library)\//, "", line)
            printf "%8.0f  %s\n", n / r, substr(line, 1, 150); shown++
        }'
