#!/usr/bin/env bash
# Kind tier: builds the images, installs the operator and the injector into a kind cluster,
# deploys an annotated app and checks that daprd was injected, becomes ready
# and serves the Dapr API. Needs docker, kind and kubectl.
#   bash e2e/kind/run.sh            # creates (and afterwards deletes) cluster daprs-e2e
#   KEEP_CLUSTER=1 bash e2e/kind/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
cluster=${CLUSTER:-daprs-e2e}
tag=e2e

cleanup() {
  if [ -z "${KEEP_CLUSTER:-}" ]; then kind delete cluster --name "$cluster" >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

fail() {
  echo "FAIL: $*" >&2
  kubectl get pods -A -o wide >&2 || true
  kubectl -n dapr-system logs deploy/daprs-injector --tail=100 >&2 || true
  kubectl -n dapr-system logs deploy/daprs-operator --tail=100 >&2 || true
  kubectl -n e2e describe pods >&2 || true
  kubectl -n e2e logs deploy/echo -c daprd --tail=100 >&2 || true
  exit 1
}

kind get clusters | grep -qx "$cluster" || kind create cluster --name "$cluster" --wait 120s
docker build -f deploy/docker/daprd.Dockerfile -t "ghcr.io/daprs/daprd:$tag" .
docker build -f deploy/docker/injector.Dockerfile -t "ghcr.io/daprs/daprs-injector:$tag" .
docker build -f deploy/docker/operator.Dockerfile -t "ghcr.io/daprs/daprs-operator:$tag" .
kind load docker-image --name "$cluster" "ghcr.io/daprs/daprd:$tag" "ghcr.io/daprs/daprs-injector:$tag" \
  "ghcr.io/daprs/daprs-operator:$tag"

# The operator first: CRDs, then the CA (it creates dapr-trust-bundle).
kubectl apply -f deploy/crds/
sed -e "s#ghcr.io/daprs/daprs-operator:latest#ghcr.io/daprs/daprs-operator:$tag#" deploy/operator/operator.yaml | kubectl apply -f -
kubectl -n dapr-system rollout status deploy/daprs-operator --timeout=180s || fail "operator not ready"
kubectl -n dapr-system get configmap dapr-trust-bundle -o jsonpath='{.data.ca\.crt}' | grep -q "BEGIN CERTIFICATE" \
  || fail "trust anchors not published"

# The injector; the operator issues its serving certificate (Secret
# daprs-injector-tls) and sets the webhook's caBundle.
sed -e "s#ghcr.io/daprs/daprs-injector:latest#ghcr.io/daprs/daprs-injector:$tag#" \
    -e "s#ghcr.io/daprs/daprd:latest#ghcr.io/daprs/daprd:$tag#" deploy/injector/injector.yaml | kubectl apply -f -
for _ in $(seq 1 60); do
  bundle=$(kubectl get mutatingwebhookconfiguration daprs-injector -o jsonpath='{.webhooks[0].clientConfig.caBundle}')
  [ -n "$bundle" ] && break
  sleep 1
done
[ -n "$bundle" ] || fail "the operator did not set the webhook caBundle"
kubectl -n dapr-system rollout status deploy/daprs-injector --timeout=180s || fail "injector not ready"

# An annotated app: http-echo answers every path with its text.
kubectl create namespace e2e --dry-run=client -o yaml | kubectl apply -f -
kubectl -n e2e apply -f - <<'YAML'
apiVersion: apps/v1
kind: Deployment
metadata:
  name: echo
spec:
  replicas: 1
  selector:
    matchLabels: {app: echo}
  template:
    metadata:
      labels: {app: echo}
      annotations:
        dapr.io/enabled: "true"
        dapr.io/app-id: "echo"
        dapr.io/app-port: "5678"
        dapr.io/log-level: "debug"
    spec:
      containers:
      - name: echo
        image: hashicorp/http-echo:1.0
        args: ["-text=hello from echo", "-listen=:5678"]
        ports:
        - containerPort: 5678
YAML
kubectl -n e2e rollout status deploy/echo --timeout=180s || fail "echo not ready"

# The operator gave the app its Service, and checks Components.
kubectl -n e2e get service echo-dapr -o jsonpath='{.spec.clusterIP}' | grep -qx None || fail "echo-dapr Service"
kubectl -n e2e apply -f - <<'YAML'
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: broken
spec:
  type: pubsub.kafka
  version: v1
  metadata:
  - name: consumerGroup
    value: g
YAML
for _ in $(seq 1 30); do
  reason=$(kubectl -n e2e get component broken -o jsonpath='{.status.conditions[0].reason}')
  [ "$reason" = "MissingMetadata" ] && break
  sleep 1
done
[ "$reason" = "MissingMetadata" ] || fail "component status: $reason"

pod=$(kubectl -n e2e get pods -l app=echo -o jsonpath='{.items[0].metadata.name}')
containers=$(kubectl -n e2e get pod "$pod" -o jsonpath='{.spec.containers[*].name} {.spec.initContainers[*].name}')
echo "containers: $containers"
echo "$containers" | grep -qw daprd || fail "daprd was not injected"
[ "$(kubectl -n e2e get pod "$pod" -o jsonpath='{.metadata.labels.dapr\.io/sidecar-injected}')" = "true" ] \
  || fail "label dapr.io/sidecar-injected missing"

kubectl -n e2e port-forward "pod/$pod" 13500:3500 >/dev/null 2>&1 &
pf=$!
trap 'kill $pf 2>/dev/null || true; cleanup' EXIT
for _ in $(seq 1 50); do curl -fsS -o /dev/null localhost:13500/v1.0/healthz && break; sleep 0.2; done
[ "$(curl -s -o /dev/null -w '%{http_code}' localhost:13500/v1.0/healthz)" = "204" ] || fail "healthz"
reply=$(curl -fsS localhost:13500/v1.0/invoke/echo/method/anything) || fail "invoke"
echo "invoke reply: $reply"
[ "$reply" = "hello from echo" ] || fail "unexpected reply: $reply"
[ "$(curl -fsS localhost:13500/v1.0/metadata | grep -o '"id":"echo"')" = '"id":"echo"' ] || fail "metadata"

# A Component applied now reaches the running sidecar through the operator.
kubectl -n e2e apply -f - <<'YAML'
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: statestore
spec:
  type: state.in-memory
  version: v1
  metadata: []
YAML
saved=""
for _ in $(seq 1 50); do
  saved=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'content-type: application/json' \
    -d '[{"key":"k","value":"v"}]' localhost:13500/v1.0/state/statestore)
  [ "$saved" = "204" ] && break
  sleep 0.2
done
[ "$saved" = "204" ] || fail "state save through the new component: $saved"
[ "$(curl -fsS localhost:13500/v1.0/state/statestore/k)" = '"v"' ] || fail "state get"

# Another app's sidecar calls echo's over mutual TLS.
kubectl -n e2e apply -f - <<'YAML'
apiVersion: apps/v1
kind: Deployment
metadata:
  name: client
spec:
  replicas: 1
  selector:
    matchLabels: {app: client}
  template:
    metadata:
      labels: {app: client}
      annotations:
        dapr.io/enabled: "true"
        dapr.io/app-id: "client"
    spec:
      containers:
      - name: client
        image: hashicorp/http-echo:1.0
        args: ["-text=client", "-listen=:5678"]
YAML
kubectl -n e2e rollout status deploy/client --timeout=180s || fail "client not ready"
cpod=$(kubectl -n e2e get pods -l app=client -o jsonpath='{.items[0].metadata.name}')
kubectl -n e2e port-forward "pod/$cpod" 23500:3500 >/dev/null 2>&1 &
cpf=$!
trap 'kill $pf $cpf 2>/dev/null || true; cleanup' EXIT
for _ in $(seq 1 50); do curl -fsS -o /dev/null localhost:23500/v1.0/healthz && break; sleep 0.2; done
reply=$(curl -fsS localhost:23500/v1.0/invoke/echo/method/anything) || fail "invoke across sidecars"
[ "$reply" = "hello from echo" ] || fail "unexpected reply across sidecars: $reply"

# A pod without the annotation stays as it is.
kubectl -n e2e run plain --image=hashicorp/http-echo:1.0 --restart=Never -- -text=x >/dev/null
[ "$(kubectl -n e2e get pod plain -o jsonpath='{.spec.containers[*].name}')" = "plain" ] || fail "plain pod changed"

echo "PASS: kind e2e"
