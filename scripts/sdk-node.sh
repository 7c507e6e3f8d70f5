#!/usr/bin/env bash
# Installs the official Dapr JavaScript SDK (pinned in sidecar/tests/sdk/js)
# into target/sdk-node for the SDK tests.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=target/sdk-node
stamp="$dir/node_modules/.installed-from.json"
mkdir -p "$dir"
# Installed already from this very package.json: nothing to do.
if cmp -s sidecar/tests/sdk/js/package.json "$stamp"; then
  exit 0
fi
cp sidecar/tests/sdk/js/package.json "$dir/"
(cd "$dir" && npm install --silent --no-audit --no-fund)
cp sidecar/tests/sdk/js/package.json "$stamp"
