"""Calls the test Echo service through daprd with Python's grpcio, as a user
of gRPC proxying would: the service's own stubs plus one dapr-app-id header.

Usage: grpc_proxy_client.py <daprd gRPC port> <app-id> <descriptor set file>
Prints "ok <check>" for each check that passes; exits non-zero on the first failure.
"""

import sys

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

port, app, descriptors = sys.argv[1], sys.argv[2], sys.argv[3]

with open(descriptors, "rb") as f:
    fds = descriptor_pb2.FileDescriptorSet.FromString(f.read())
pool = descriptor_pool.DescriptorPool()
for file in fds.file:
    pool.Add(file)
Msg = message_factory.GetMessageClass(pool.FindMessageTypeByName("daprs.test.v1.Msg"))


def check(name, cond, detail=""):
    if not cond:
        print(f"FAILED {name}: {detail}", flush=True)
        sys.exit(1)
    print(f"ok {name}", flush=True)


channel = grpc.insecure_channel(f"127.0.0.1:{port}")


def method(kind, name):
    return getattr(channel, kind)(
        f"/daprs.test.v1.Echo/{name}",
        request_serializer=Msg.SerializeToString,
        response_deserializer=Msg.FromString,
    )


md = [("dapr-app-id", app), ("x-echo", "py"), ("x-raw-bin", b"\x00\xff\x10")]

unary = method("unary_unary", "Unary")
reply, call = unary.with_call(Msg(text="hi"), metadata=md)
check("unary", reply.text.startswith(f"hi|caller="), reply.text)
headers = dict(call.initial_metadata())
check("metadata", headers.get("x-echo") == "py", headers)
check("binary metadata", headers.get("x-raw-bin") == b"\x00\xff\x10", headers)

try:
    unary(Msg(text="fail"), metadata=md)
    check("error status", False, "no error")
except grpc.RpcError as e:
    check(
        "error status",
        e.code() == grpc.StatusCode.FAILED_PRECONDITION and e.details() == "the app refused",
        f"{e.code()} {e.details()}",
    )

replies = list(method("unary_stream", "ServerStream")(Msg(count=100, data=b"x" * 10), metadata=md))
check("server streaming", [r.count for r in replies] == list(range(100)), len(replies))

reply = method("stream_unary", "ClientStream")(iter([Msg(text=str(i)) for i in range(3)]), metadata=md)
check("client streaming", reply.count == 3 and reply.text.startswith("012"), reply)

replies = list(method("stream_stream", "Bidi")(iter([Msg(text="a"), Msg(text="b")]), metadata=md))
check("bidirectional streaming", [r.text for r in replies] == ["echo:a", "echo:b"], replies)

try:
    unary(Msg(text="sleep"), metadata=md, timeout=0.3)
    check("deadline", False, "no error")
except grpc.RpcError as e:
    check("deadline", e.code() == grpc.StatusCode.DEADLINE_EXCEEDED, e.code())

try:
    unary(Msg(text="x"), metadata=[("dapr-app-id", "nobody-serves-this")], timeout=5)
    check("unknown app", False, "no error")
except grpc.RpcError as e:
    check("unknown app", e.code() == grpc.StatusCode.UNAVAILABLE, e.code())
