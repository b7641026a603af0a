# shellcheck shell=bash disable=SC2034,SC2154
# (Variables are shared with the sourcing script: see below.)
# Shared by the benchmark scripts in bench/: sourced, never run.
#
# Starts the upstream and the proxies under test the same way for every
# script, so that a figure from proxy.sh and one from perf-notes.sh describe
# the same setup. A script sets these before calling `bench_setup`:
#   proxy_cpu, load_cpu                        CPUs for the proxy, and for wrk + upstream
#   nginx_port, gatehouse_port, gatehouse_admin_port
# and gets: root, bin_dir, tmp, echo_pid, upstream (IP:PORT), and from
# start_nginx / start_gatehouse: proxy_pid, proxy_url.

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin_dir=${CARGO_TARGET_DIR:-$root/target}/release
pids=()
gatehouse_wrapper=()

# The script's header comment, from its second line to the first blank one.
usage() { sed -n '2,/^$/{s/^# \{0,1\}//;p}' "$0"; }

# The options of the scripts that run rounds of wrk (proxy.sh, filters.sh):
# sets targets, duration, warmup, connections, repeat, build and out, whose
# defaults the script sets first.
parse_run_options() {
    while (($#)); do
        case $1 in
        --targets) targets=$2; shift 2 ;;
        --duration) duration=$2; shift 2 ;;
        --warmup) warmup=$2; shift 2 ;;
        --connections) connections=$2; shift 2 ;;
        --repeat) repeat=$2; shift 2 ;;
        --no-build) build=0; shift ;;
        --out) out=$2; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
        esac
    done
}

# Names every missing tool at once, then exits.
require() {
    local missing=() debs=()
    local -A deb=([wrk]=wrk [nginx]=nginx-light [taskset]=util-linux [curl]=curl
        [pgrep]=procps [perf]=linux-perf [valgrind]=valgrind)
    for tool in "$@"; do
        command -v "$tool" >/dev/null || [[ -x /usr/sbin/$tool ]] && continue
        missing+=("$tool")
        [[ -n ${deb[$tool]:-} ]] && debs+=("${deb[$tool]}")
    done
    if ((${#missing[@]})); then
        echo "missing: ${missing[*]}" >&2
        ((${#debs[@]})) && echo "on Debian: apt-get install -y ${debs[*]}" >&2
        [[ " ${missing[*]} " == *" cargo "* ]] && echo "cargo: install a Rust toolchain (rustup)" >&2
        exit 1
    fi
    if (($(nproc) < 2)); then
        echo "needs at least 2 CPUs (proxy on CPU $proxy_cpu, load and upstream on CPU $load_cpu); nproc=$(nproc)" >&2
        exit 1
    fi
}

# Builds the given packages (release) unless `build` is 0, then checks that
# their binaries exist.
build_binaries() {
    if ((${build:-1})); then
        local args=()
        for p in "$@"; do args+=(-p "$p"); done
        echo "building $* (release)" >&2
        (cd "$root" && cargo build --release --quiet "${args[@]}")
    fi
    for p in "$@"; do
        [[ -x $bin_dir/$p ]] || { echo "missing binary $bin_dir/$p (drop --no-build?)" >&2; exit 1; }
    done
}

bench_cleanup() {
    local status=$?
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        kill -TERM "${pids[i]}" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [[ ${KEEP_TMP:-0} == 1 ]]; then
        echo "kept $tmp" >&2
    else
        rm -rf "$tmp"
    fi
    exit "$status"
}

bench_setup() {
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/gatehouse-bench.XXXXXX")
    trap bench_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

# Runs a command in the background and remembers it for cleanup; sets `started`.
spawn() {
    "$@" &
    started=$!
    pids+=("$started")
}

stop() {
    kill -TERM "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    local kept=()
    for pid in "${pids[@]}"; do [[ $pid == "$1" ]] || kept+=("$pid"); done
    pids=("${kept[@]}")
}

port_free() {
    ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

need_free_port() {
    port_free "$1" || { echo "port $1 is in use (set $2)" >&2; exit 1; }
}

# Polls until URL answers the upstream's body: proof that the whole path
# (proxy, route, pool, upstream) serves, not only that a socket is bound.
wait_ok() {
    local url=$1 log=$2 pid=$3 deadline=$((SECONDS + 10))
    while ((SECONDS < deadline)); do
        [[ $(curl -fsS --max-time 1 "$url" 2>/dev/null) == ok ]] && return 0
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    echo "not serving $url; last lines of $log:" >&2
    tail -n 20 "$log" >&2 || true
    exit 1
}

# The upstream on a free port, pinned to load_cpu; waits for its readiness
# line. `gatehouse-echo --minimal` by default: it shares its core with wrk,
# and the less it costs, the more of that core is left before it, rather
# than the proxy, limits requests/s. UPSTREAM=hyper runs the echo's full
# mode (hyper, two tokio workers) as the benchmarks did before 2026-12-05.
start_upstream() {
    mkfifo "$tmp/echo.out"
    local mode=()
    case ${UPSTREAM:-minimal} in
    minimal) mode=(--minimal) ;;
    hyper) ;;
    *) echo "UPSTREAM must be minimal or hyper, not $UPSTREAM" >&2; exit 2 ;;
    esac
    # Not through `spawn`: a redirection of a function call would open the
    # FIFO in this shell and block before anything reads it.
    taskset -c "$load_cpu" "$bin_dir/gatehouse-echo" --listen 127.0.0.1:0 --body ok "${mode[@]}" \
        >"$tmp/echo.out" 2>"$tmp/echo.err" &
    echo_pid=$!
    pids+=("$echo_pid")
    # Held open until exit so the echo never writes into a closed pipe.
    exec {echo_fd}<"$tmp/echo.out"
    local ready
    read -r -t 10 -u "$echo_fd" ready || {
        echo "gatehouse-echo did not start" >&2
        cat "$tmp/echo.err" >&2
        exit 1
    }
    upstream=${ready#listening on }
}

start_nginx() {
    need_free_port "$nginx_port" NGINX_PORT
    local dir=$tmp/nginx affinity=1
    mkdir -p "$dir"
    # nginx's mask is a bit string whose rightmost bit is CPU 0.
    for ((i = 0; i < proxy_cpu; i++)); do affinity+=0; done
    cat >"$dir/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes 1;
worker_cpu_affinity $affinity;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events {
    worker_connections 4096;
}
http {
    access_log off;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    # The defaults (1000) would reconnect every 1000 requests; the data plane
    # keeps connections for as long as the client does.
    keepalive_requests 1000000;
    upstream echo {
        server $upstream;
        keepalive 128;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$nginx_port;
        location / {
            proxy_pass http://echo;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # What the data plane does to every request (keep Host, add
            # these three), so that both proxies do the same job.
            proxy_set_header Host \$http_host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header X-Request-Id \$request_id;
        }
    }
}
EOF
    local nginx_bin
    nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
    spawn taskset -c "$proxy_cpu" "$nginx_bin" -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" \
        >"$dir/stdout.log" 2>&1
    proxy_pid=$started
    wait_ok "http://127.0.0.1:$nginx_port/" "$dir/error.log" "$proxy_pid"
    proxy_url="http://127.0.0.1:$nginx_port/"
}

# One port, one listener for any host, one prefix-"/" route to the upstream:
# the cheapest route a Gateway can have, as nginx's single location is.
write_snapshot() {
    cat >"$1" <<EOF
{
  "group": "default",
  "ports": [{
    "address": "127.0.0.1", "port": 8080, "bindPort": $gatehouse_port, "protocol": "PROTOCOL_HTTP",
    "listeners": [{
      "origin": {"kind": "Gateway", "namespace": "default", "name": "bench", "section": "http"},
      "hostname": "",
      "hosts": [{"hostname": "", "matches": [{"path": {"type": "PATH_MATCH_PATH_PREFIX", "value": "/"}, "rule": 0}]}]
    }]
  }],
  "rules": [{
    "origin": {"kind": "HTTPRoute", "namespace": "default", "name": "bench", "section": "0"},
    "backends": [{"weight": 1, "cluster": 0}]
  }],
  "clusters": [{"name": "default/echo:80", "endpoints": [{"address": "${upstream%:*}", "port": ${upstream##*:}}]}]
}
EOF
}

# `gatehouse_wrapper` (an array, empty by default) prefixes the data plane
# command, e.g. with valgrind; `gatehouse_bin` replaces the binary.
start_gatehouse() {
    need_free_port "$gatehouse_port" GATEHOUSE_PORT
    need_free_port "$gatehouse_admin_port" GATEHOUSE_ADMIN_PORT
    local dir=$tmp/gatehouse
    mkdir -p "$dir"
    write_snapshot "$dir/snapshot.json"
    # Warnings only, as nginx runs with its access log off.
    RUST_LOG=${GATEHOUSE_LOG:-warn} spawn taskset -c "$proxy_cpu" "${gatehouse_wrapper[@]}" "${gatehouse_bin:-$bin_dir/gatehouse-dataplane}" \
        --snapshot "$dir/snapshot.json" --admin "127.0.0.1:$gatehouse_admin_port" --workers 1 \
        >"$dir/dataplane.log" 2>&1
    proxy_pid=$started
    wait_ok "http://127.0.0.1:$gatehouse_port/" "$dir/dataplane.log" "$proxy_pid"
    proxy_url="http://127.0.0.1:$gatehouse_port/"
}

# The proxy's processes: nginx's worker is a child of its master.
proxy_processes() {
    echo "$proxy_pid"
    pgrep -P "$proxy_pid" || true
}

# Sum of utime+stime, in clock ticks, of the given processes (all threads).
cpu_ticks() {
    local total=0 stat fields
    for pid in "$@"; do
        stat=$(<"/proc/$pid/stat") || {
            echo "process $pid ($(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || echo gone)) exited during the run" >&2
            exit 1
        }
        # The command name is in parentheses and may hold spaces: cut after it.
        read -ra fields <<<"${stat##*) }"
        total=$((total + fields[11] + fields[12]))
    done
    echo "$total"
}

# One CPU's busy and total clock ticks since boot, from /proc/stat (idle and
# iowait count as not busy).
core_ticks() {
    awk -v cpu="cpu$1" '$1 == cpu { total = 0; for (i = 2; i <= NF; i++) total += $i; print total - $5 - $6, total }' /proc/stat
}

# utime and stime, in clock ticks, summed over the given processes.
cpu_user_sys() {
    local user=0 sys=0 stat fields
    for pid in "$@"; do
        stat=$(<"/proc/$pid/stat") || { echo "process $pid exited during the run" >&2; exit 1; }
        read -ra fields <<<"${stat##*) }"
        user=$((user + fields[11]))
        sys=$((sys + fields[12]))
    done
    echo "$user $sys"
}

# Every process started is still there: a figure from a run during which the
# upstream or a proxy process died (the OOM killer, say) is not one.
check_alive() {
    for pid in "${pids[@]}" "$@"; do
        kill -0 "$pid" 2>/dev/null || {
            echo "process $pid exited during the run (logs: KEEP_TMP=1; dmesg may name the OOM killer)" >&2
            exit 1
        }
    done
}

# Runs wrk (1 thread, pinned to load_cpu): wrk_run SECONDS CONNECTIONS URL OUTPUT [wrk args].
wrk_run() {
    local seconds=$1 conns=$2 url=$3 output=$4
    shift 4
    timeout $((seconds + 5)) taskset -c "$load_cpu" wrk -t1 -c"$conns" -d"${seconds}s" "$@" "$url" >"$output" 2>&1
}

# Requests wrk completed, from its report.
wrk_requests() {
    local n
    n=$(awk '/requests in/ { print $1 }' "$1")
    [[ $n =~ ^[0-9]+$ && $n -gt 0 ]] || { echo "wrk completed no request:" >&2; cat "$1" >&2; exit 1; }
    echo "$n"
}

# A latency from wrk's `--latency` distribution (50%, 99%) in µs; wrk prints
# 812.00us, 1.23ms, 1.01s or 2.00m.
wrk_percentile_us() {
    awk -v p="$2" '$1 == p {
        n = $2 + 0; u = $2; sub(/^[0-9.]+/, "", u)
        f = (u == "us") ? 1 : (u == "ms") ? 1e3 : (u == "s") ? 1e6 : (u == "m") ? 6e7 : -1
        if (f > 0) printf "%.0f", n * f; else print "nan"
        exit
    }' "$1"
}

# Socket errors plus non-2xx/3xx answers.
wrk_errors() {
    awk '
        /Socket errors:/ { gsub(",", ""); s += $4 + $6 + $8 + $10 }
        /Non-2xx or 3xx responses:/ { s += $5 }
        END { print s + 0 }' "$1"
}

# a / b with `digits` decimals, "-" when either is missing or b is zero.
ratio() {
    awk -v a="$1" -v b="$2" -v d="${3:-2}" 'BEGIN {
        if (a == "-" || b == "-" || b + 0 == 0) print "-"; else printf("%." d "f", a / b)
    }'
}

machine_line() {
    echo "$(nproc) CPUs, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), kernel $(uname -r)"
}
