#!/usr/bin/env bash
# Kind tier: builds the images, installs the control plane with the Helm chart
# into a kind cluster and checks what a user does with it: two annotated apps
# (one HTTP, one gRPC) calling each other over mutual TLS, state on a Redis
# pod, a Component edited with kubectl apply reaching a running sidecar, the
# operator pod deleted while traffic runs, and `helm upgrade`.
# Needs docker, kind, kubectl and helm.
#   bash e2e/kind/run.sh            # creates (and afterwards deletes) cluster daprs-e2e
#   KEEP_CLUSTER=1 bash e2e/kind/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
cluster=${CLUSTER:-daprs-e2e}
tag=e2e
pids=()

cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ -z "${KEEP_CLUSTER:-}" ]; then kind delete cluster --name "$cluster" >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

fail() {
  echo "FAIL: $*" >&2
  kubectl get pods -A -o wide >&2 || true
  kubectl -n dapr-system logs deploy/daprs-injector --tail=100 >&2 || true
  kubectl -n dapr-system logs deploy/daprs-operator --tail=100 >&2 || true
  kubectl -n e2e describe pods >&2 || true
  for app in httpapp grpcapp; do kubectl -n e2e logs "deploy/$app" -c daprd --tail=100 >&2 || true; done
  exit 1
}

# forward <pod> <local port> <remote port>: a port-forward that ends with the script.
forward() {
  kubectl -n e2e port-forward "pod/$1" "$2:$3" >/dev/null 2>&1 &
  pids+=($!)
  for _ in $(seq 1 50); do curl -fsS -o /dev/null "localhost:$2/v1.0/healthz" && return 0; sleep 0.2; done
  fail "port-forward to $1"
}

pod_of() { kubectl -n e2e get pods -l "app=$1" -o jsonpath='{.items[0].metadata.name}'; }

kind get clusters | grep -qx "$cluster" || kind create cluster --name "$cluster" --wait 120s
docker build -f deploy/docker/daprd.Dockerfile -t "ghcr.io/daprs/daprd:$tag" .
docker build -f deploy/docker/injector.Dockerfile -t "ghcr.io/daprs/daprs-injector:$tag" .
docker build -f deploy/docker/operator.Dockerfile -t "ghcr.io/daprs/daprs-operator:$tag" .
docker build -t "daprs-e2e-app:$tag" e2e/kind/apps
kind load docker-image --name "$cluster" "ghcr.io/daprs/daprd:$tag" "ghcr.io/daprs/daprs-injector:$tag" \
  "ghcr.io/daprs/daprs-operator:$tag" "daprs-e2e-app:$tag"

# The control plane, from the chart, as a user installs it.
helm upgrade --install daprs charts/daprs -n dapr-system --create-namespace \
  --set global.tag="$tag" --wait --timeout 5m || fail "helm install"
kubectl -n dapr-system get configmap dapr-trust-bundle -o jsonpath='{.data.ca\.crt}' | grep -q "BEGIN CERTIFICATE" \
  || fail "trust anchors not published"
anchors=$(kubectl -n dapr-system get configmap dapr-trust-bundle -o jsonpath='{.data.ca\.crt}')
[ -n "$(kubectl get mutatingwebhookconfiguration daprs-injector -o jsonpath='{.webhooks[0].clientConfig.caBundle}')" ] \
  || fail "the operator did not set the webhook caBundle"

# Redis for state, and two apps that call each other through their sidecars.
kubectl create namespace e2e --dry-run=client -o yaml | kubectl apply -f -
kubectl -n e2e apply -f - <<YAML
apiVersion: apps/v1
kind: Deployment
metadata:
  name: redis
spec:
  selector:
    matchLabels: {app: redis}
  template:
    metadata:
      labels: {app: redis}
    spec:
      containers:
      - name: redis
        image: redis:7
        ports:
        - containerPort: 6379
---
apiVersion: v1
kind: Service
metadata:
  name: redis
spec:
  selector: {app: redis}
  ports:
  - port: 6379
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: statestore
spec:
  type: state.redis
  version: v1
  metadata:
  - name: redisHost
    value: redis.e2e.svc.cluster.local:6379
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: httpapp
spec:
  selector:
    matchLabels: {app: httpapp}
  template:
    metadata:
      labels: {app: httpapp}
      annotations:
        dapr.io/enabled: "true"
        dapr.io/app-id: httpapp
        dapr.io/app-port: "8080"
    spec:
      containers:
      - name: app
        image: daprs-e2e-app:$tag
        args: ["http"]
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: grpcapp
spec:
  selector:
    matchLabels: {app: grpcapp}
  template:
    metadata:
      labels: {app: grpcapp}
      annotations:
        dapr.io/enabled: "true"
        dapr.io/app-id: grpcapp
        dapr.io/app-port: "50051"
        dapr.io/app-protocol: grpc
    spec:
      containers:
      - name: app
        image: daprs-e2e-app:$tag
        args: ["grpc"]
YAML
for d in redis httpapp grpcapp; do
  kubectl -n e2e rollout status "deploy/$d" --timeout=180s || fail "$d not ready"
done
hpod=$(pod_of httpapp)
containers=$(kubectl -n e2e get pod "$hpod" -o jsonpath='{.spec.containers[*].name} {.spec.initContainers[*].name}')
echo "$containers" | grep -qw daprd || fail "daprd was not injected: $containers"
kubectl -n e2e get pod "$hpod" -o jsonpath='{.spec.containers[*].args} {.spec.initContainers[*].args}' \
  | grep -q -- '--enable-mtls' || fail "daprd was injected without mutual TLS"
for app in httpapp grpcapp; do
  kubectl -n e2e get service "$app-dapr" -o jsonpath='{.spec.clusterIP}' | grep -qx None || fail "$app-dapr Service"
done
forward "$hpod" 13500 3500

# HTTP app → its sidecar → (mTLS) → gRPC app, which calls the HTTP app back.
reply=$(curl -fsS localhost:13500/v1.0/invoke/httpapp/method/call-grpc) || fail "HTTP → gRPC → HTTP"
echo "reply: $reply"
[ "$reply" = "grpc got ping; http says hello from http" ] || fail "unexpected reply: $reply"

# State on the Redis pod.
curl -fsS -X POST -H 'content-type: application/json' -d '[{"key":"order-1","value":{"qty":3}}]' \
  localhost:13500/v1.0/state/statestore || fail "state save"
[ "$(curl -fsS localhost:13500/v1.0/state/statestore/order-1)" = '{"qty":3}' ] || fail "state get"
kubectl -n e2e exec deploy/redis -- redis-cli --scan --pattern '*order-1*' | grep -q order-1 \
  || fail "the state is not in Redis"

# A Component applied, then edited, reaches the running sidecar without a restart.
restarts=$(kubectl -n e2e get pod "$hpod" -o jsonpath='{.status.containerStatuses[*].restartCount}')
component() {
  kubectl -n e2e apply -f - <<YAML
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: cache
spec:
  type: state.in-memory
  version: v1
  metadata: []
scopes: [$1]
YAML
}
component httpapp
seen=""
for _ in $(seq 1 100); do
  seen=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'content-type: application/json' \
    -d '[{"key":"k","value":"v"}]' localhost:13500/v1.0/state/cache)
  [ "$seen" = "204" ] && break
  sleep 0.2
done
[ "$seen" = "204" ] || fail "the new Component did not reach the sidecar: $seen"
component someone-else
for _ in $(seq 1 100); do
  seen=$(curl -s -o /dev/null -w '%{http_code}' localhost:13500/v1.0/state/cache/k)
  [ "$seen" != "204" ] && [ "$seen" != "200" ] && break
  sleep 0.2
done
{ [ "$seen" != "204" ] && [ "$seen" != "200" ]; } || fail "the edited Component's scopes did not reach the sidecar"
[ "$(kubectl -n e2e get pod "$hpod" -o jsonpath='{.status.containerStatuses[*].restartCount}')" = "$restarts" ] \
  || fail "the pod restarted"

# A v1alpha1 Subscription goes through the operator's conversion webhook.
kubectl -n e2e apply -f - <<'YAML' || fail "v1alpha1 Subscription"
apiVersion: dapr.io/v1alpha1
kind: Subscription
metadata:
  name: orders
spec:
  pubsubname: pubsub
  topic: orders
  route: /orders
YAML
[ "$(kubectl -n e2e get subscriptions.v2alpha1.dapr.io orders -o jsonpath='{.spec.routes.default}')" = "/orders" ] \
  || fail "the Subscription did not convert to v2alpha1"

# The operator pod deleted while calls run: none of them fails.
failures=$(mktemp)
(
  for _ in $(seq 1 300); do
    curl -fsS -o /dev/null localhost:13500/v1.0/invoke/httpapp/method/call-grpc || echo x >> "$failures"
    sleep 0.05
  done
) &
traffic=$!
sleep 2
kubectl -n dapr-system delete pod -l app.kubernetes.io/name=daprs-operator --wait=false
wait "$traffic"
[ ! -s "$failures" ] || fail "$(wc -l < "$failures") calls failed while the operator restarted"
kubectl -n dapr-system rollout status deploy/daprs-operator --timeout=180s || fail "operator back"

# helm upgrade with a changed value: applied, and the CA is kept.
helm upgrade daprs charts/daprs -n dapr-system --reuse-values --set dapr_operator.logLevel=debug --wait --timeout 5m \
  || fail "helm upgrade"
kubectl -n dapr-system get deploy daprs-operator -o jsonpath='{.spec.template.spec.containers[0].env}' \
  | grep -q '"name":"LOG_LEVEL","value":"debug"' || fail "the upgraded value did not reach the operator"
[ "$(kubectl -n dapr-system get configmap dapr-trust-bundle -o jsonpath='{.data.ca\.crt}')" = "$anchors" ] \
  || fail "helm upgrade replaced the CA"
reply=$(curl -fsS localhost:13500/v1.0/invoke/httpapp/method/call-grpc) || fail "calls after the upgrade"

# A pod without the annotation stays as it is.
kubectl -n e2e run plain --image=redis:7 --restart=Never >/dev/null
[ "$(kubectl -n e2e get pod plain -o jsonpath='{.spec.containers[*].name}')" = "plain" ] || fail "plain pod changed"

echo "PASS: kind e2e"
