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
       exporting over OTLP/HTTP to the echo app (which answers each export).
"""

import http.client
import http.server
import os
import re
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


def start(daprd, app_id, out, work, extra=()):
    """daprd under callgrind; returns the process and its HTTP port."""
    port = free_port()
    args = [
        "valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
        daprd, "--app-id", app_id, "--resources-path", work,
        "--dapr-http-port", str(port), "--dapr-grpc-port", str(free_port()),
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
                return p, port
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


def run(daprd, requests, work):
    out = os.path.join(work, f"callgrind.{requests}.out")
    p, port = start(daprd, "cg", out, work)
    body = b'[{"key":"k","value":{"n":1,"text":"' + b"x" * 900 + b'"}}]'
    # Half saves, half reads, all on one keep-alive connection.
    send(port, requests, lambda i: ("POST", "/v1.0/state/store", body, {"content-type": "application/json"})
         if i % 2 == 0 else ("GET", "/v1.0/state/store/k"))
    return total(p, out)


def run_invoke(daprd, requests, work, app_port):
    outs = [os.path.join(work, f"callgrind.{role}.{requests}.out") for role in ("caller", "target")]
    target, _ = start(daprd, "cg-target", outs[1], work, ["--app-port", str(app_port)])
    caller, port = start(daprd, "cg-caller", outs[0], work)
    body = b"x" * 1024
    send(port, requests, lambda i: ("POST", "/v1.0/invoke/cg-target/method/echo", body,
                                    {"content-type": "application/octet-stream"}))
    return total(caller, outs[0]), total(target, outs[1])


TRACING = []


def main():
    global TRACING
    binaries = sys.argv[1:] or ["target/release/daprd"]
    app = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=app.serve_forever, daemon=True).start()
    app_port = app.server_address[1]
    config_dir = tempfile.mkdtemp()
    TRACING = tracing_args(config_dir, app_port)
    print(f"| daprd | instructions per request ({N} requests: half 1 KiB saves, half reads) |")
    print("|---|---|")
    for daprd in binaries:
        keep = os.environ.get("CALLGRIND_KEEP")
        with tempfile.TemporaryDirectory() as tmp:
            work = keep or tmp
            os.makedirs(work, exist_ok=True)
            with open(os.path.join(work, "store.yaml"), "w") as f:
                f.write(COMPONENT)
            idle = run(daprd, 0, work)
            busy = run(daprd, N, work)
        print(f"| {daprd} | {(busy - idle) / N:,.0f} |")

    print()
    print(f"| daprd | caller instructions per request | target instructions per request ({N} 1 KiB HTTP invocations) |")
    print("|---|---|---|")
    for daprd in binaries:
        keep = os.environ.get("CALLGRIND_KEEP")
        with tempfile.TemporaryDirectory() as tmp:
            work = keep or tmp
            os.makedirs(work, exist_ok=True)
            idle = run_invoke(daprd, 0, work, app_port)
            busy = run_invoke(daprd, N, work, app_port)
        print(f"| {daprd} | {(busy[0] - idle[0]) / N:,.0f} | {(busy[1] - idle[1]) / N:,.0f} |")


if __name__ == "__main__":
    main()
