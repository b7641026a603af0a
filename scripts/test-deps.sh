#!/usr/bin/env bash
# What the test suite needs beyond Rust: kube-lite, a real Kubernetes API
# server built once from Debian packages (cached in ~/.cache; several minutes
# the first time), Helm v4 from PyPI for the chart tests, and kubectl.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore helm-python-sdk==0.2.2
bash ../shared/kube-lite/setup.sh
command -v kubectl >/dev/null || { echo "kubectl is needed by the Kubernetes-mode tests" >&2; exit 1; }
