#!/usr/bin/env bash
# Builds the grpc-go client of the proxying tests into target/sdk-go, with
# Go and grpc-go from Debian's packages (installed here when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
gocode=/usr/share/gocode/src/google.golang.org/grpc
if ! command -v go >/dev/null || [ ! -d "$gocode" ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends golang-go golang-google-grpc-dev >/dev/null
fi
out=target/sdk-go
mkdir -p "$out"
src=sidecar/tests/sdk/go/proxy_client.go
if [ "$out/proxy_client" -nt "$src" ]; then
  exit 0
fi
# Debian ships the libraries as GOPATH sources; no module download happens.
GO111MODULE=off GOPATH=/usr/share/gocode GOCACHE="$PWD/$out/cache" \
  go build -o "$out/proxy_client" "$src"
