#!/usr/bin/env bash
# Installs the official Dapr JavaScript SDK (pinned in sidecar/tests/sdk/js)
# into target/sdk-node for the SDK tests.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=target/sdk-node
mkdir -p "$dir"
cp sidecar/tests/sdk/js/package.json "$dir/"
if [ -f "$dir/node_modules/@dapr/dapr/package.json" ] &&
  node -e "process.exit(require('./$dir/node_modules/@dapr/dapr/package.json').version === require('./$dir/package.json').dependencies['@dapr/dapr'] ? 0 : 1)"; then
  exit 0
fi
(cd "$dir" && npm install --silent --no-audit --no-fund)
