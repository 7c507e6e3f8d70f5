#!/usr/bin/env python3
"""Writes sidecar/symbol-order.txt: daprd's functions in the order the linker
should lay them out.

A process's resident code is not the code it runs but every page the kernel
mapped around it (a fault maps its neighbours too), so functions that run
scattered among 20 MB of text that never runs keep most of the text
resident. Listed first are the functions an idle sidecar has run (start-up on
the embedded defaults, on each benchmark's resources and with mutual TLS),
then those that serve requests, hottest first; the linker (`--symbol-ordering-file`, passed by
sidecar/build.rs) places them together at the start of the text.

Usage: bench/symbol-order.py [DAPRD] [OUT]
       (defaults target/release/daprd and sidecar/symbol-order.txt)

It runs daprd alone on its embedded defaults; sidecars with mutual TLS
through `daprs-bench --mtls` (SYMBOL_ORDER_BENCH, default
target/release/daprs-bench, left out when not built); then every table of
bench/callgrind.py with CALLGRIND_REQUESTS=200 (CALLGRIND_GRPC_PYTHON and the
brokers add theirs as there), all under callgrind with names left mangled.
Regenerate it after a change of dependencies or of the release profile: a
name that no longer exists is skipped, and a new function is merely left
where the compiler put it.
"""

import collections
import glob
import os
import re
import signal
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import callgrind  # noqa: E402

# Names left mangled, as the linker knows them.
callgrind.VALGRIND = ["--demangle=no"]


def defaults_run(daprd, work):
    """daprd on its embedded defaults, idle, under callgrind."""
    p, _, _ = callgrind.start(daprd, "order", os.path.join(work, "callgrind.defaults.0.out"), work, resources=False)
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=120)


def mtls_runs(daprd, work):
    """Sidecars with mutual TLS, as `daprs-bench --mtls` starts them (each
    with a certificate from the operator's CA, which the bench runs), under
    callgrind: a short HTTP invocation run through two of them."""
    bench = os.environ.get("SYMBOL_ORDER_BENCH", "target/release/daprs-bench")
    if not os.path.exists(bench):
        print(f"{bench} not built: sidecars with mutual TLS left out")
        return
    wrapper = os.path.join(work, "daprd-under-callgrind")
    out = os.path.join(work, "callgrind.mtls.%p.out")
    with open(wrapper, "w") as f:
        f.write(f'#!/bin/sh\nexec {" ".join(callgrind.under_callgrind(out))} {daprd} "$@"\n')
    os.chmod(wrapper, 0o755)
    subprocess.run([bench, "--daprd", wrapper, "--mtls", "--only", "http", "--starts", "1",
                    "--rate", "50", "--seconds", "1", "--conns", "2"], check=True, stdout=subprocess.DEVNULL)


def self_costs(path):
    """Each function's own instructions in one callgrind file, by mangled name."""
    names, costs = {}, collections.Counter()
    fn, after_call = None, False
    with open(path) as f:
        for line in f:
            if line.startswith("fn="):
                m = re.match(r"fn=\((\d+)\)(?: (.*))?", line)
                if m.group(2):
                    names[m.group(1)] = m.group(2).strip()
                fn = names.get(m.group(1))
                if fn:
                    costs[fn] += 0
            elif line.startswith("cfn="):
                m = re.match(r"cfn=\((\d+)\)(?: (.*))?", line)
                if m.group(2):
                    names[m.group(1)] = m.group(2).strip()
            elif line.startswith("calls="):
                after_call = True
            elif line[:1].isdigit() or line[:1] in "+-*":
                if after_call:
                    after_call = False
                elif fn:
                    parts = line.split()
                    if len(parts) > 1:
                        costs[fn] += int(parts[1])
    return costs


def main():
    daprd = sys.argv[1] if len(sys.argv) > 1 else "target/release/daprd"
    dest = sys.argv[2] if len(sys.argv) > 2 else os.path.join(HERE, "..", "sidecar", "symbol-order.txt")
    nm = subprocess.run(["nm", "--defined-only", daprd], capture_output=True, text=True, check=True).stdout
    text = {p[2] for p in (line.split() for line in nm.splitlines()) if len(p) == 3 and p[1] in "tTwW"}
    with tempfile.TemporaryDirectory() as work:
        defaults_run(daprd, work)
        mtls_runs(daprd, work)
        env = dict(os.environ, CALLGRIND_KEEP=work, CALLGRIND_VALGRIND_ARGS=" ".join(callgrind.VALGRIND),
                   CALLGRIND_REQUESTS=os.environ.get("CALLGRIND_REQUESTS", "200"))
        subprocess.run([sys.executable, os.path.join(HERE, "callgrind.py"), daprd], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        runs = {os.path.basename(path): self_costs(path)
                for path in glob.glob(os.path.join(work, "callgrind.*.out")) if "nginx" not in path}
    # Start-up code first, what every run ran before what only some did, the
    # embedded defaults' (daprd's main job) ahead of the rest; then the request
    # paths, what more of them share first, hottest first among equals. What
    # only sidecars with mutual TLS ran (certificates, handshakes, records)
    # goes with start-up code: such a sidecar runs most of it before it
    # serves anything.
    idle = [costs for name, costs in runs.items() if name.endswith(".0.out")]
    busy = [costs for name, costs in runs.items() if not name.endswith(".0.out") and ".mtls." not in name]
    defaults = runs["callgrind.defaults.0.out"]
    # Per name: [run on the defaults, idle runs it was in, busy runs it was in, its instructions in those].
    key = collections.defaultdict(lambda: [0, 0, 0, 0])
    for costs in idle:
        for n in costs:
            key[n][1] += 1
    for costs in busy:
        for n, c in costs.items():
            key[n][2] += 1
            key[n][3] += c
    for costs in (costs for name, costs in runs.items() if ".mtls." in name):
        for n in costs:
            if not key[n][2]:
                key[n][1] += 1
    for n in defaults:
        key[n][0] = 1
    names = [n for n in key if n in text]
    names.sort(key=lambda n: (-key[n][0], -key[n][1], -key[n][2], -key[n][3]))
    first = [n for n in names if key[n][1]]
    rest = [n for n in names if not key[n][1]]
    with open(dest, "w") as f:
        f.write("\n".join(first + rest) + "\n")
    print(f"{dest}: {len(first)} functions run by an idle sidecar, then {len(rest)} more that serve requests")


if __name__ == "__main__":
    main()
