#!/usr/bin/env bash
# Quickstart: builds Gatehouse, starts three example echo backends and the
# controller in standalone mode on the manifests beside this script. The
# gateway listens on :8080; the controller's admin on 127.0.0.1:9901.
# Edit a file under manifests/ while it runs: the change applies live.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"
cargo build --release --bins
bin="$root/target/release"

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

"$bin/gatehouse-echo" --listen 127.0.0.1:9001 --name shop-v1 >/dev/null & pids+=($!)
"$bin/gatehouse-echo" --listen 127.0.0.1:9002 --name shop-v2 >/dev/null & pids+=($!)
"$bin/gatehouse-echo" --listen 127.0.0.1:9003 --name api >/dev/null & pids+=($!)

cat <<'HELP'
Gatehouse is starting. Try, in another terminal:
  curl -s -H 'Host: shop.example.com' localhost:8080/ -i            # 90% shop-v1, 10% shop-v2 (see x-echo-name)
  curl -s -H 'Host: shop.example.com' -H 'x-canary: always' localhost:8080/ -i
  curl -s -H 'Host: docs.example.com' localhost:8080/api/users      # the api backend
  curl -s -H 'Host: docs.example.com' localhost:8080/nothing -i     # 404: no route
  curl -s localhost:9901/readyz; curl -s localhost:9901/debug/status
HELP
"$bin/gatehouse-controller" standalone --dir "$here/manifests" --admin 127.0.0.1:9901 & pids+=($!)
wait "${pids[-1]}"
