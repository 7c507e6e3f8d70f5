#!/usr/bin/env python3
"""Instructions per request through one daprd, counted by callgrind.

Instruction counts do not depend on what else the machine is doing, so this
is the figure to compare between two builds (a timing on this shared machine
is not). daprd runs under `valgrind --tool=callgrind` twice, with the same
in-memory state store: once serving nothing, once serving N requests on one
keep-alive connection; the difference divided by N is the cost of a request.

Then the same for HTTP service invocation: a caller daprd and a target daprd,
both under callgrind, in front of a small echo app; N 1 KiB POSTs to
`/v1.0/invoke/cg-target/method/echo` on one keep-alive connection.

Usage: bench/callgrind.py [DAPRD ...]   (default target/release/daprd)
       CALLGRIND_REQUESTS=2000 changes N; CALLGRIND_KEEP=DIR keeps the
       callgrind.N.out files there for callgrind_annotate;
       CALLGRIND_TRACING=1 runs every daprd with tracing at sampling rate 1,
       exporting over OTLP/HTTP to the echo app (which answers each export);
       CALLGRIND_GRPC_PYTHON=PYTHON (one with grpcio and the Dapr SDK, such
       as target/sdk-venv/bin/python) adds N gRPC `InvokeService` calls of
       1 KiB on one channel through the same pair of sidecars, then N
       proxied calls (`dapr-app-id`) of a 1 KiB unary echo method that a
       gRPC app serves behind the target;
       it also adds the state table's requests made over gRPC;
       CALLGRIND_VALGRIND_ARGS adds valgrind arguments for every daprd;
       CALLGRIND_ONLY=state,grpc-state,http,grpc,proxied,bindings,nginx,locks,
       pubsub,pubsub-redis,pubsub-jetstream picks tables.

The output binding table is one daprd with a `bindings.http` component
pointing at the echo app: N `POST /v1.0/bindings/web` of a `post` with 1 KiB
of JSON data, each answered with the data echoed.

The locks table is one daprd with `lock.redis` (CALLGRIND_REDIS, below):
N HTTP calls, a lock then its unlock, each pair on a resource of its own.

For scale, the nginx table counts one nginx reverse-proxy hop (one worker,
HTTP/1.1 keep-alive upstream, as daprs-bench runs it) in front of the same
echo app, with the invocation table's requests sent to it (when nginx is
installed).

Last, pub/sub: one daprd with `pubsub.in-memory` in front of an HTTP app
subscribed to one topic (`GET /dapr/subscribe`); N 1 KiB JSON publishes on
one keep-alive connection, each delivered to the app as a CloudEvent. The
figure is per message: its publish request and its delivery. The same
again on `pubsub.redis` (CALLGRIND_REDIS, default 127.0.0.1:6379) and
`pubsub.jetstream` (CALLGRIND_NATS, default 127.0.0.1:4222), each run on an
empty stream, adds what a broker's client costs.
"""

import http.client
import http.server
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

N = int(os.environ.get("CALLGRIND_REQUESTS", "2000"))
# More daprd arguments for every process, e.g. "--enable-metrics=false".
EXTRA = os.environ.get("CALLGRIND_DAPRD_ARGS", "").split()
# More valgrind arguments for every daprd, e.g. "--demangle=no" (bench/symbol-order.py).
VALGRIND = os.environ.get("CALLGRIND_VALGRIND_ARGS", "").split()
COMPONENT = """apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: store
spec:
  type: state.in-memory
  version: v1
  metadata: []
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Echo(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


PUBSUB = """apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: bus
spec:
  type: pubsub.{kind}
  version: v1
  metadata: {metadata}
"""
BINDING = """apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: web
spec:
  type: bindings.http
  version: v1
  metadata: [{{name: url, value: 'http://127.0.0.1:{port}/echo'}}]
"""
REDIS = os.environ.get("CALLGRIND_REDIS", "127.0.0.1:6379")
NATS = os.environ.get("CALLGRIND_NATS", "127.0.0.1:4222")
BROKERS = {
    "in-memory": "[]",
    "redis": f"[{{name: redisHost, value: '{REDIS}'}}]",
    "jetstream": f"[{{name: natsURL, value: 'nats://{NATS}'}}, {{name: streamName, value: CALLGRIND}}]",
}


def empty_stream(broker):
    """Deletes the broker's stream, so each run starts with none."""
    if broker == "redis":
        host, port = REDIS.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(b"DEL t\r\n")
            s.recv(64)
    elif broker == "jetstream":
        host, port = NATS.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.recv(4096)  # INFO
            s.sendall(b"CONNECT {}\r\nSUB _INBOX.cg 1\r\nPUB $JS.API.STREAM.DELETE.CALLGRIND _INBOX.cg 0\r\n\r\n")
            reply = b""
            while b"MSG _INBOX.cg" not in reply:
                chunk = s.recv(4096)
                if not chunk:
                    break
                reply += chunk


class Subscriber(http.server.BaseHTTPRequestHandler):
    """Subscribes to topic `t` of `bus` and counts what is delivered."""

    protocol_version = "HTTP/1.1"
    delivered = 0
    lock = threading.Condition()

    def do_GET(self):
        body = b'[{"pubsubname": "bus", "topic": "t", "route": "/ev"}]'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()
        with Subscriber.lock:
            Subscriber.delivered += 1
            Subscriber.lock.notify_all()

    def log_message(self, *args):
        pass


def run_binding(daprd, requests, work):
    out = os.path.join(work, f"callgrind.bindings.{requests}.out")
    p, port, _ = start(daprd, "cg-bindings", out, work)
    body = b'{"operation":"post","data":{"n":1,"text":"' + b"x" * 1000 + b'"}}'
    send(port, requests, lambda i: ("POST", "/v1.0/bindings/web", body, {"content-type": "application/json"}))
    return total(p, out)


LOCK = """apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: lockstore
spec:
  type: lock.redis
  version: v1
  metadata:
  - name: redisHost
    value: "{redis}"
"""


def run_locks(daprd, requests, work):
    """Alternate lock and unlock calls, each pair on a resource of its own."""
    out = os.path.join(work, f"callgrind.locks.{requests}.out")
    p, port, _ = start(daprd, "cg-locks", out, work)

    def request(i):
        resource = f'"resourceId":"cg-{os.getpid()}-{i // 2}","lockOwner":"cg"'
        if i % 2 == 0:
            return ("POST", "/v1.0-alpha1/lock/lockstore", "{" + resource + ',"expiryInSeconds":60}',
                    {"content-type": "application/json"})
        return ("POST", "/v1.0-alpha1/unlock/lockstore", "{" + resource + "}", {"content-type": "application/json"})

    send(port, requests, request)
    return total(p, out)


NGINX = """daemon off;
master_process off;
worker_processes 1;
error_log {work}/nginx-error.log crit;
pid {work}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {work}/body;
  proxy_temp_path {work}/proxy;
  fastcgi_temp_path {work}/fastcgi;
  uwsgi_temp_path {work}/uwsgi;
  scgi_temp_path {work}/scgi;
  upstream next {{ server 127.0.0.1:{upstream}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port};
    keepalive_requests 1000000;
    location / {{
      proxy_pass http://next;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_request_buffering off;
    }}
  }}
}}
"""


def run_nginx(nginx, requests, work, app_port):
    out = os.path.join(work, f"callgrind.nginx.{requests}.out")
    port = free_port()
    conf = os.path.join(work, "nginx.conf")
    with open(conf, "w") as f:
        f.write(NGINX.format(work=work, upstream=app_port, port=port))
    p = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", nginx, "-p", work, "-c", conf],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.time() > deadline:
                p.kill()
                sys.exit("nginx did not start under valgrind")
            time.sleep(0.2)
    body = b"x" * 1024
    send(port, requests, lambda i: ("POST", "/echo", body, {"content-type": "application/octet-stream"}))
    return total(p, out)


def run_pubsub(daprd, requests, work, app_port, broker):
    out = os.path.join(work, f"callgrind.pubsub-{broker}.{requests}.out")
    empty_stream(broker)
    with Subscriber.lock:
        Subscriber.delivered = 0
    p, port, _ = start(daprd, "cg-pubsub", out, work, ["--app-port", str(app_port)])
    # Ready once the app's subscription has started.
    while True:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        c.request("GET", "/v1.0/healthz")
        if c.getresponse().status == 204:
            break
        time.sleep(0.1)
    body = b'{"n":1,"text":"' + b"x" * 1000 + b'"}'
    send(port, requests, lambda i: ("POST", "/v1.0/publish/bus/t", body, {"content-type": "application/json"}))
    with Subscriber.lock:
        if not Subscriber.lock.wait_for(lambda: Subscriber.delivered >= requests, timeout=300):
            sys.exit(f"{Subscriber.delivered} of {requests} events delivered")
    return total(p, out)


def pubsub_table(binaries, broker):
    app = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Subscriber)
    threading.Thread(target=app.serve_forever, daemon=True).start()
    yaml = PUBSUB.format(kind=broker, metadata=BROKERS[broker])
    per_request_table(binaries, [f"instructions per message ({N} 1 KiB publishes on pubsub.{broker}, each delivered to an HTTP app)"],
                      {"bus.yaml": yaml}, lambda daprd, n, work: [run_pubsub(daprd, n, work, app.server_address[1], broker)])


def per_request_table(binaries, headings, files, measure, what="daprd"):
    """Prints each daprd's instructions per request, a column per process:
    `measure` (totals under callgrind, one per process) of N requests less
    that of none, with `files` as resources."""
    print()
    print(f"| {what} | " + " | ".join(headings) + " |")
    print("|---" * (len(headings) + 1) + "|")
    for daprd in binaries:
        keep = os.environ.get("CALLGRIND_KEEP")
        with tempfile.TemporaryDirectory() as tmp:
            work = keep or tmp
            os.makedirs(work, exist_ok=True)
            for name, text in files.items():
                with open(os.path.join(work, name), "w") as f:
                    f.write(text)
            idle = measure(daprd, 0, work)
            busy = measure(daprd, N, work)
        print(f"| {daprd} | " + " | ".join(f"{(b - i) / N:,.0f}" for b, i in zip(busy, idle)) + " |")


def tracing_args(work, app_port):
    """--config naming a Configuration that traces everything to the echo app."""
    if not os.environ.get("CALLGRIND_TRACING"):
        return []
    path = os.path.join(work, "config", "traced.yaml")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(TRACED.format(port=app_port))
    return ["--config", path]


TRACED = """apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: traced
spec:
  tracing:
    samplingRate: "1"
    otel:
      endpointAddress: 127.0.0.1:{port}
      isSecure: false
      protocol: http
"""


def under_callgrind(out):
    """The command line that runs a daprd under callgrind, writing to `out`."""
    return ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *VALGRIND]


def start(daprd, app_id, out, work, extra=(), resources=True):
    """daprd under callgrind, with `work` as its resources (else on its
    embedded defaults); returns the process and its HTTP and gRPC ports."""
    port, grpc_port = free_port(), free_port()
    args = [
        *under_callgrind(out),
        daprd, "--app-id", app_id, *(["--resources-path", work] if resources else []),
        "--dapr-http-port", str(port), "--dapr-grpc-port", str(grpc_port),
        "--metrics-port", str(free_port()), "--dapr-listen-addresses", "127.0.0.1",
        "--log-level", "warn", *EXTRA, *TRACING, *extra,
    ]
    env = dict(os.environ, DAPRS_HOME=work)
    p = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while True:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", "/v1.0/healthz/outbound")
            if c.getresponse().status == 204:
                return p, port, grpc_port
        except OSError:
            pass
        if time.time() > deadline:
            p.kill()
            sys.exit("daprd did not start under valgrind")
        time.sleep(0.2)


def total(p, out):
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=120)
    with open(out) as f:
        for line in f:
            m = re.match(r"^(?:summary|totals):\s+(\d+)", line)
            if m:
                return int(m.group(1))
    sys.exit(f"no totals in {out}")


def send(port, requests, request):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for i in range(requests):
        c.request(*request(i))
        r = c.getresponse()
        r.read()
        assert r.status in (200, 204), r.status
    c.close()


def run(daprd, requests, work, grpc_python=None):
    out = os.path.join(work, f"callgrind.{requests}.out")
    p, port, grpc_port = start(daprd, "cg", out, work)
    if grpc_python:
        subprocess.run([grpc_python, "-c", GRPC_STATE_CLIENT, str(grpc_port), str(requests)], check=True)
        return total(p, out)
    body = b'[{"key":"k","value":{"n":1,"text":"' + b"x" * 900 + b'"}}]'
    # Half saves, half reads, all on one keep-alive connection.
    send(port, requests, lambda i: ("POST", "/v1.0/state/store", body, {"content-type": "application/json"})
         if i % 2 == 0 else ("GET", "/v1.0/state/store/k"))
    return total(p, out)


# The same half saves, half reads, as gRPC SaveState and GetState calls.
GRPC_STATE_CLIENT = """
import sys, grpc
from dapr.proto.common.v1 import common_pb2
from dapr.proto.runtime.v1 import dapr_pb2_grpc, state_pb2
stub = dapr_pb2_grpc.DaprStub(grpc.insecure_channel("127.0.0.1:" + sys.argv[1]))
item = common_pb2.StateItem(key="k", value=b'{"n":1,"text":"' + b"x" * 900 + b'"}')
for i in range(int(sys.argv[2])):
    if i % 2 == 0:
        stub.SaveState(state_pb2.SaveStateRequest(store_name="store", states=[item]))
    else:
        assert len(stub.GetState(state_pb2.GetStateRequest(store_name="store", key="k")).data) > 900
"""


GRPC_CLIENT = """
import sys, grpc
from dapr.proto.common.v1 import common_pb2
from dapr.proto.runtime.v1 import dapr_pb2_grpc, invoke_pb2
from google.protobuf import any_pb2
stub = dapr_pb2_grpc.DaprStub(grpc.insecure_channel("127.0.0.1:" + sys.argv[1]))
ext = common_pb2.HTTPExtension(verb=common_pb2.HTTPExtension.POST)
msg = common_pb2.InvokeRequest(method="echo", data=any_pb2.Any(value=b"x" * 1024),
                               content_type="application/octet-stream", http_extension=ext)
for _ in range(int(sys.argv[2])):
    assert len(stub.InvokeService(invoke_pb2.InvokeServiceRequest(id="cg-target", message=msg)).data.value) == 1024
"""


# A gRPC app whose one method echoes its request's bytes undecoded.
GRPC_APP = """
import grpc
from concurrent import futures
echo = grpc.unary_unary_rpc_method_handler(lambda req, ctx: req)
server = grpc.server(futures.ThreadPoolExecutor(4))
server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("cg.Echo", {"Echo": echo}),))
print(server.add_insecure_port("127.0.0.1:0"), flush=True)
server.start()
server.wait_for_termination()
"""

PROXY_CLIENT = """
import sys, grpc
echo = grpc.insecure_channel("127.0.0.1:" + sys.argv[1]).unary_unary("/cg.Echo/Echo")
for _ in range(int(sys.argv[2])):
    assert len(echo(b"x" * 1024, metadata=(("dapr-app-id", "cg-target"),))) == 1024
"""


def run_invoke(daprd, requests, work, app_port, grpc_python=None, proxied=False):
    """`proxied`: `app_port` is a gRPC app's, called through the proxy."""
    kind = "proxied" if proxied else "grpc" if grpc_python else "http"
    outs = [os.path.join(work, f"callgrind.{kind}.{role}.{requests}.out") for role in ("caller", "target")]
    app = ["--app-port", str(app_port)] + (["--app-protocol", "grpc"] if proxied else [])
    target, _, _ = start(daprd, "cg-target", outs[1], work, app)
    caller, port, grpc_port = start(daprd, "cg-caller", outs[0], work)
    if grpc_python:
        client = PROXY_CLIENT if proxied else GRPC_CLIENT
        subprocess.run([grpc_python, "-c", client, str(grpc_port), str(requests)], check=True)
    else:
        body = b"x" * 1024
        send(port, requests, lambda i: ("POST", "/v1.0/invoke/cg-target/method/echo", body,
                                        {"content-type": "application/octet-stream"}))
    return total(caller, outs[0]), total(target, outs[1])


TRACING = []


def main():
    global TRACING
    binaries = sys.argv[1:] or ["target/release/daprd"]
    only = set(filter(None, os.environ.get("CALLGRIND_ONLY", "").split(",")))
    wanted = lambda table: not only or table in only  # noqa: E731
    app = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=app.serve_forever, daemon=True).start()
    app_port = app.server_address[1]
    config_dir = tempfile.mkdtemp()
    TRACING = tracing_args(config_dir, app_port)
    grpc_python = os.environ.get("CALLGRIND_GRPC_PYTHON")
    if wanted("state"):
        state_table(binaries)
    if grpc_python and wanted("grpc-state"):
        state_table(binaries, grpc_python)
    if wanted("http"):
        invoke_table(binaries, app_port, f"{N} 1 KiB HTTP invocations")
    if grpc_python and wanted("grpc"):
        invoke_table(binaries, app_port, f"{N} 1 KiB gRPC InvokeService calls", grpc_python)
    if grpc_python and wanted("proxied"):
        app = subprocess.Popen([grpc_python, "-c", GRPC_APP], stdout=subprocess.PIPE, text=True)
        try:
            grpc_app_port = int(app.stdout.readline())
            invoke_table(binaries, grpc_app_port, f"{N} proxied 1 KiB unary gRPC calls", grpc_python, True)
        finally:
            app.kill()
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if nginx and wanted("nginx"):
        per_request_table([nginx], [f"instructions per request ({N} 1 KiB POSTs through one reverse-proxy hop)"],
                          {}, lambda binary, n, work: [run_nginx(binary, n, work, app_port)], "nginx")
    if wanted("bindings"):
        per_request_table(binaries, [f"instructions per request ({N} 1 KiB output binding calls to bindings.http)"],
                          {"web.yaml": BINDING.format(port=app_port)},
                          lambda daprd, n, work: [run_binding(daprd, n, work)])
    if wanted("locks"):
        per_request_table(binaries, [f"instructions per request ({N} lock and unlock calls on lock.redis, alternating)"],
                          {"lock.yaml": LOCK.format(redis=REDIS)},
                          lambda daprd, n, work: [run_locks(daprd, n, work)])
    for broker, table in [("in-memory", "pubsub"), ("redis", "pubsub-redis"), ("jetstream", "pubsub-jetstream")]:
        if wanted(table):
            pubsub_table(binaries, broker)


def state_table(binaries, grpc_python=None):
    over = "gRPC SaveState and GetState" if grpc_python else "HTTP"
    per_request_table(binaries, [f"instructions per request ({N} requests over {over}: half 1 KiB saves, half reads)"],
                      {"store.yaml": COMPONENT}, lambda daprd, n, work: [run(daprd, n, work, grpc_python)])


def invoke_table(binaries, app_port, what, grpc_python=None, proxied=False):
    """Prints each daprd's instructions per invocation, as caller and as target."""
    per_request_table(binaries, ["caller instructions per request", f"target instructions per request ({what})"],
                      {}, lambda daprd, n, work: run_invoke(daprd, n, work, app_port, grpc_python, proxied))


if __name__ == "__main__":
    main()
