"""Apps that call each other through their sidecars.

http (port 8080): GET /hello answers "hello from http"; GET /call-grpc makes
a gRPC call to the grpc app through its own sidecar's gRPC port, addressed
with dapr-app-id metadata, and answers what came back.

grpc (port 50051): /echo.Echo/Say answers "grpc got <request>; http says
<reply>", where the reply is the http app's /hello, invoked through the
sidecar's HTTP API. Messages are raw bytes: no protobuf is needed to proxy.
"""
import os
import sys
import urllib.request
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc

# The injector gives app containers their sidecar's ports.
SIDECAR_HTTP = "http://127.0.0.1:" + os.environ.get("DAPR_HTTP_PORT", "3500")
SIDECAR_GRPC = "127.0.0.1:" + os.environ.get("DAPR_GRPC_PORT", "50001")
PORT = int(os.environ.get("APP_PORT", "0"))


def raw(b):
    return b


class Http(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/hello":
            body = b"hello from http"
        elif self.path == "/call-grpc":
            with grpc.insecure_channel(SIDECAR_GRPC) as ch:
                say = ch.unary_unary("/echo.Echo/Say", request_serializer=raw, response_deserializer=raw)
                body = say(b"ping", metadata=[("dapr-app-id", "grpcapp")], timeout=10)
        else:
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def say(request, context):
    with urllib.request.urlopen(f"{SIDECAR_HTTP}/v1.0/invoke/httpapp/method/hello", timeout=10) as r:
        reply = r.read()
    return b"grpc got " + request + b"; http says " + reply


def main():
    if sys.argv[1:] == ["http"]:
        ThreadingHTTPServer(("0.0.0.0", PORT or 8080), Http).serve_forever()
    elif sys.argv[1:] == ["grpc"]:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        handler = grpc.unary_unary_rpc_method_handler(say, request_deserializer=raw, response_serializer=raw)
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("echo.Echo", {"Say": handler}),))
        server.add_insecure_port(f"0.0.0.0:{PORT or 50051}")
        server.start()
        server.wait_for_termination()
    else:
        sys.exit("usage: app.py http|grpc")


if __name__ == "__main__":
    main()
