#!/usr/bin/env bash
# Runs the whole test suite: starts the servers the tests need, then every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/services.sh
bash scripts/sdk-venv.sh
bash scripts/sdk-node.sh
bash scripts/sdk-go.sh
bash scripts/helm.sh || echo "Helm could not be installed; the chart tests will skip"
export DAPRS_SDK_PYTHON="$PWD/target/sdk-venv/bin/python" DAPRS_SDK_NODE="$PWD/target/sdk-node" DAPRS_SDK_GO="$PWD/target/sdk-go/proxy_client" DAPRS_REQUIRE_SDK=1
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
