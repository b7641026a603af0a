#!/usr/bin/env bash
# Filter benchmark: what gatehouse.dev filters cost on a route.
#
# Usage: bench/filters.sh [--targets "plain filtered jwt-only"] [--duration S]
#                         [--warmup S] [--connections N] [--repeat N]
#                         [--no-build] [--out FILE]
#
# One data plane (`--workers 1`, pinned to CPU 0) serves one snapshot with
# three HTTPRoutes on one listener, all to the same upstream (gatehouse-echo,
# two-byte body, on CPU 1 beside wrk):
#   plain      Host plain.bench     no filter
#   filtered   Host filtered.bench  ipAccess (allow 127.0.0.0/8), jwtAuth (ES256,
#                                   inline JWKS, sub copied to x-user) and
#                                   rateLimit (keyed by the sub claim)
#   jwt-only   Host jwt.bench       jwtAuth alone, to split the cost
# The snapshot is compiled from manifests by `gatehouse-controller compile`, so
# the filters are configured as users configure them. A fresh ES256 key and a
# token valid for ten years are minted per run (jwt/examples/mint.rs); wrk sends
# the same `Authorization: Bearer` header on every request to filtered and
# jwt-only. The rate limit allows 1e9 requests per second so that it never
# refuses: every request does the full work, and a run with any non-2xx answer
# or socket error is reported as failed (exit status 1), not as a figure.
#
# Measured per target, as bench/proxy.sh does: requests/s, p50 and p99 (wrk
# `--latency`), errors, and the data plane's CPU per request (utime+stime from
# /proc/PID/stat over the measured run, divided by the requests wrk completed);
# "busy" is that CPU time over the run's duration; the upstream's CPU per
# request is a cross-check. Each target gets a warm-up (default 2 s), then a
# measured run (default 10 s), 64 connections, one wrk thread.
#
# `--repeat N` (default 3) runs N rounds, each target once per round; the
# order rotates from round to round so that no target always runs first, and
# drifting background load hits every target alike. Each row is the target's
# round with the median requests/s. The ratios to plain are given twice: from
# those median rows, and as the median of the per-round ratios (each taken
# between runs seconds apart, so less exposed to drift).
#
# Prints a Markdown table and the ratios; `--out FILE` also writes them to FILE.
# Builds the release binaries it needs (`--no-build` skips that), installs
# nothing, needs two CPUs and jq, talks only over loopback, stops every
# process it started on exit; KEEP_TMP=1 keeps the temporary directory
# (manifests, compiled snapshot, explain output, logs, wrk output; the token
# and public key, never a private key).
#
# Ports (override with the environment): GATEHOUSE_PORT=18081,
# GATEHOUSE_ADMIN_PORT=18090; the upstream takes a free port. With the defaults
# a round takes about 40 s.

set -euo pipefail

duration=${DURATION:-10}
warmup=${WARMUP:-2}
connections=${CONNECTIONS:-64}
targets=${TARGETS:-"plain filtered jwt-only"}
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

all_targets=(plain filtered jwt-only)
targets=${targets//,/ }
selected=()
for t in $targets; do
    case $t in plain | filtered | jwt-only) ;; *) echo "unknown target: $t" >&2; exit 2 ;; esac
done
# Kept in the fixed order above, whatever order they were given in.
for t in "${all_targets[@]}"; do [[ " $targets " == *" $t "* ]] && selected+=("$t"); done
((${#selected[@]})) || { echo "no target selected" >&2; exit 2; }
[[ $repeat =~ ^[1-9][0-9]*$ ]] || { echo "--repeat needs a positive number" >&2; exit 2; }
wants() { [[ " ${selected[*]} " == *" $1 "* ]]; }

command -v jq >/dev/null || { echo "missing: jq (on Debian: apt-get install -y jq)" >&2; exit 1; }
require wrk taskset curl cargo
build_binaries gatehouse-controller gatehouse-dataplane gatehouse-echo
mint=$bin_dir/examples/mint
if ((build)); then
    echo "building gatehouse-jwt example mint (release)" >&2
    (cd "$root" && cargo build --release --quiet -p gatehouse-jwt --example mint)
fi
[[ -x $mint ]] || { echo "missing $mint (drop --no-build?)" >&2; exit 1; }
need_free_port "$gatehouse_port" GATEHOUSE_PORT
need_free_port "$gatehouse_admin_port" GATEHOUSE_ADMIN_PORT

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
bench_setup
clk_tck=$(getconf CLK_TCK)
start_upstream

# A key and a token for this run only; the private key stays inside mint.
"$mint" --out "$tmp/jwt" --issuer https://issuer.bench --subject bench-user 2>"$tmp/mint.log" || {
    cat "$tmp/mint.log" >&2
    exit 1
}
token=$(<"$tmp/jwt/token.txt")
jwks=$(<"$tmp/jwt/jwks.json")

host_of() {
    case $1 in plain) echo plain.bench ;; filtered) echo filtered.bench ;; jwt-only) echo jwt.bench ;; esac
}

write_manifests() {
    local dir=$1
    mkdir -p "$dir"
    cat >"$dir/gateway.yaml" <<EOF
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: gatehouse}
spec: {controllerName: gatehouse.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: bench, namespace: default}
spec:
  gatewayClassName: gatehouse
  listeners:
  - {name: http, port: $gatehouse_port, protocol: HTTP}
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: default}
spec:
  ports: [{name: http, port: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: echo
  namespace: default
  labels: {kubernetes.io/service-name: echo}
addressType: IPv4
ports: [{name: http, port: ${upstream##*:}}]
endpoints: [{addresses: ["${upstream%:*}"], conditions: {ready: true}}]
EOF
    cat >"$dir/filters.yaml" <<EOF
apiVersion: gatehouse.dev/v1alpha1
kind: Filter
metadata: {name: ip, namespace: default}
spec: {type: IPAccess, ipAccess: {allow: ["127.0.0.0/8"]}}
---
apiVersion: gatehouse.dev/v1alpha1
kind: Filter
metadata: {name: jwt, namespace: default}
spec:
  type: JWTAuth
  jwtAuth:
    issuer: https://issuer.bench
    jwks: {inline: '$jwks'}
    algorithms: [ES256]
    claimsToHeaders: [{claim: sub, header: x-user}]
---
apiVersion: gatehouse.dev/v1alpha1
kind: Filter
metadata: {name: rate, namespace: default}
spec: {type: RateLimit, rateLimit: {requests: 1000000000, period: 1s, key: {type: Claim, name: sub}}}
EOF
    local name filters
    for name in plain filtered jwt-only; do
        case $name in
        plain) filters="" ;;
        filtered) filters="ip jwt rate" ;;
        jwt-only) filters="jwt" ;;
        esac
        {
            echo "---"
            echo "apiVersion: gateway.networking.k8s.io/v1"
            echo "kind: HTTPRoute"
            echo "metadata: {name: $name, namespace: default}"
            echo "spec:"
            echo "  parentRefs: [{name: bench}]"
            echo "  hostnames: [$(host_of "$name")]"
            echo "  rules:"
            echo "  - backendRefs: [{name: echo, port: 80}]"
            if [[ -n $filters ]]; then
                echo "    filters:"
                for f in $filters; do
                    echo "    - {type: ExtensionRef, extensionRef: {group: gatehouse.dev, kind: Filter, name: $f}}"
                done
            fi
        } >>"$dir/routes.yaml"
    done
}

# Compiles the manifests; refuses a snapshot in which any object is not
# Accepted or has unresolved references, since a rejected filter would make
# the filtered route answer 500 (or not exist) rather than do the work.
compile_snapshot() {
    local dir=$tmp/manifests compiled=$tmp/compiled.json bad
    write_manifests "$dir"
    "$bin_dir/gatehouse-controller" compile --dir "$dir" >"$compiled" 2>"$tmp/compile.log" || {
        cat "$tmp/compile.log" >&2
        exit 1
    }
    bad=$(jq -c '[.statuses[] | . as $o | .. | objects
        | select(has("type") and has("status") and (.type == "Accepted" or .type == "ResolvedRefs") and .status != "True")
        | {kind: $o.kind, name: $o.metadata.name, type, reason, message}]' "$compiled")
    if [[ $bad != "[]" ]]; then
        echo "the bench manifests do not compile cleanly: $bad" >&2
        exit 1
    fi
    jq -e '.snapshots.default' "$compiled" >"$tmp/snapshot.json" || {
        echo "no snapshot for group default in the compile output" >&2
        exit 1
    }
    # What each request meets, for the record (kept with KEEP_TMP=1).
    local t
    for t in "${all_targets[@]}"; do
        "$bin_dir/gatehouse-controller" explain --dir "$dir" \
            --request "GET http://$(host_of "$t"):$gatehouse_port/" \
            -H "Authorization: Bearer $token" >"$tmp/explain.$t.txt" 2>&1 || true
    done
}

# Like lib.sh's start_gatehouse, with the compiled snapshot and its listener
# (on 0.0.0.0 in the snapshot) bound on loopback only.
start_dataplane() {
    local log=$tmp/dataplane.log
    RUST_LOG=${GATEHOUSE_LOG:-warn} spawn taskset -c "$proxy_cpu" "$bin_dir/gatehouse-dataplane" \
        --snapshot "$tmp/snapshot.json" --listen-address 127.0.0.1 \
        --admin "127.0.0.1:$gatehouse_admin_port" --workers 1 >"$log" 2>&1
    proxy_pid=$started
    proxy_url="http://127.0.0.1:$gatehouse_port/"
    local t
    for t in "${selected[@]}"; do wait_route "$t"; done
}

# Headers wrk and curl send for a target.
target_headers() {
    echo "Host: $(host_of "$1")"
    [[ $1 == plain ]] || echo "Authorization: Bearer $token"
}

# Polls until the target's route answers the upstream's body with its
# headers; then checks that the filtered routes refuse a request without the
# token, proof that the filters run.
wait_route() {
    local t=$1 deadline=$((SECONDS + 10)) status
    local -a args=()
    while IFS= read -r h; do args+=(-H "$h"); done < <(target_headers "$t")
    while :; do
        [[ $(curl -fsS --max-time 1 "${args[@]}" "$proxy_url" 2>/dev/null) == ok ]] && break
        if ((SECONDS >= deadline)) || ! kill -0 "$proxy_pid" 2>/dev/null; then
            echo "target $t is not served at $proxy_url; last lines of the data plane's log:" >&2
            tail -n 20 "$tmp/dataplane.log" >&2 || true
            exit 1
        fi
        sleep 0.05
    done
    if [[ $t != plain ]]; then
        status=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 -H "Host: $(host_of "$t")" "$proxy_url")
        [[ $status == 401 ]] || { echo "target $t answered $status, not 401, without a token: are its filters in place?" >&2; exit 1; }
    fi
}

declare -A rps p50 p99 cpu_us busy up_cpu_us errors

# Warm-up, then the measured run with CPU readings around it.
# shellcheck disable=SC2034 # the tables are read through `fig`'s nameref
measure() {
    local name=$1 round=$2 key="$1 $2" before after up_before up_after requests
    local report=$tmp/$name.$round.wrk
    local -a args=()
    while IFS= read -r h; do args+=(-H "$h"); done < <(target_headers "$name")

    wrk_run "$warmup" "$connections" "$proxy_url" "$tmp/$name.$round.warmup" "${args[@]}"

    up_before=$(cpu_ticks "$echo_pid")
    before=$(cpu_ticks "$proxy_pid")
    wrk_run "$duration" "$connections" "$proxy_url" "$report" --latency "${args[@]}"
    after=$(cpu_ticks "$proxy_pid")
    up_after=$(cpu_ticks "$echo_pid")
    check_alive

    requests=$(wrk_requests "$report")
    rps[$key]=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$report")
    p50[$key]=$(wrk_percentile_us "$report" 50%)
    p99[$key]=$(wrk_percentile_us "$report" 99%)
    errors[$key]=$(wrk_errors "$report")
    cpu_us[$key]=$(ratio $(((after - before) * 1000000 / clk_tck)) "$requests" 1)
    busy[$key]=$(ratio $(((after - before) * 100)) $((duration * clk_tck)) 0)
    up_cpu_us[$key]=$(ratio $(((up_after - up_before) * 1000000 / clk_tck)) "$requests" 1)
    echo "round $round, $name: ${rps[$key]} req/s, p50 ${p50[$key]} us, p99 ${p99[$key]} us, data plane CPU ${cpu_us[$key]} us/req, errors ${errors[$key]}" >&2
}

compile_snapshot
start_dataplane

n=${#selected[@]}
for ((round = 1; round <= repeat; round++)); do
    for ((i = 0; i < n; i++)); do
        measure "${selected[(i + round - 1) % n]}" "$round"
    done
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

# Each target's figures are those of its median round by requests/s, so one
# row always comes from one run.
declare -A pick range
for t in "${selected[@]}"; do
    sorted=$(for ((r = 1; r <= repeat; r++)); do echo "${rps[$t $r]} $r"; done | sort -n)
    pick[$t]=$(awk -v n="$repeat" 'NR == int((n + 1) / 2) { print $2 }' <<<"$sorted")
    range[$t]=$(awk 'NR == 1 { lo = $1 } { hi = $1 } END { print (lo == hi) ? lo : lo "–" hi }' <<<"$sorted")
done
fig() { local -n table=$1; echo "${table[$2 ${pick[$2]}]}"; }

# Median over rounds of table[t r] / table[plain r].
round_ratio() {
    local -n table=$1
    local t=$2 r
    # `ratio` prints no newline: one value per line for sort.
    for ((r = 1; r <= repeat; r++)); do echo "$(ratio "${table[$t $r]}" "${table[plain $r]}" 4)"; done |
        sort -g | awk '{ v[NR] = $1 } END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%.2f", m }'
}

per_round() {
    local -n table=$1
    local t=$2 r list=()
    for ((r = 1; r <= repeat; r++)); do list+=("$(ratio "${table[$t $r]}" "${table[plain $r]}")"); done
    local IFS=,
    echo "${list[*]}" | sed 's/,/, /g'
}

# A ratio as a signed change: 0.88 -> -12%.
percent() { awk -v x="$1" 'BEGIN { printf "%+.0f%%", (x - 1) * 100 }'; }

total_errors=0
for t in "${selected[@]}"; do
    for ((r = 1; r <= repeat; r++)); do total_errors=$((total_errors + ${errors[$t $r]})); done
done

report() {
    echo "# bench/filters.sh: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "# $(machine_line); load average before the run $load_before, after $load_after"
    echo "# wrk -t1 -c$connections -d${duration}s --latency after ${warmup}s warm-up, $repeat round(s), order rotated per round; data plane (--workers 1) on CPU $proxy_cpu, wrk and upstream on CPU $load_cpu"
    echo "# filtered = ipAccess + jwtAuth (ES256) + rateLimit (key: sub claim); jwt-only = jwtAuth alone"
    echo
    echo "| target | requests/s | p50 (µs) | p99 (µs) | data plane CPU (µs/req) | data plane busy (% of a CPU) | upstream CPU (µs/req) | errors | requests/s over rounds |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    for t in "${selected[@]}"; do
        echo "| $t | $(fig rps "$t") | $(fig p50 "$t") | $(fig p99 "$t") | $(fig cpu_us "$t") | $(fig busy "$t") | $(fig up_cpu_us "$t") | $(fig errors "$t") | ${range[$t]} |"
    done
    if wants plain && ((n > 1)); then
        echo
        echo "| ratio | requests/s | data plane CPU/req | p50 | p99 | requests/s, median of rounds | CPU/req, median of rounds | requests/s per round | CPU/req per round |"
        echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
        for t in filtered jwt-only; do
            wants "$t" || continue
            echo "| $t / plain | $(ratio "$(fig rps "$t")" "$(fig rps plain)") | $(ratio "$(fig cpu_us "$t")" "$(fig cpu_us plain)") | $(ratio "$(fig p50 "$t")" "$(fig p50 plain)") | $(ratio "$(fig p99 "$t")" "$(fig p99 plain)") | $(round_ratio rps "$t") | $(round_ratio cpu_us "$t") | $(per_round rps "$t") | $(per_round cpu_us "$t") |"
        done
        echo
        for t in filtered jwt-only; do
            wants "$t" || continue
            echo "$t against plain: requests/s $(percent "$(round_ratio rps "$t")"), data plane CPU per request $(percent "$(round_ratio cpu_us "$t")") (medians of the per-round ratios)."
        done
    fi
    if ((total_errors)); then
        echo
        echo "**Not a valid comparison: $total_errors request(s) failed or were refused (see the errors column).**"
    fi
}

if [[ -n $out ]]; then
    report | tee "$out"
else
    report
fi
((total_errors == 0)) || exit 1
