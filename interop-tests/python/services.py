"""The standard gRPC services of a server under test, exercised with the official Python
clients: `grpcio-health-checking` (grpc_health.v1) and `grpcio-reflection`
(grpc_reflection). Driven by `tests/grpcio.rs`, which reads the lines printed here.

    services.py health PORT      Check "", "echo.TestService", "no.Such"; then Watch ""
                                 and print each status until the call ends.
    services.py reflection PORT  With grpcio-reflection's ProtoReflectionDescriptorDatabase
                                 (v1alpha) and a descriptor pool over it: list the services,
                                 resolve echo.TestService and its messages; then the same
                                 over grpc.reflection.v1 with the raw v1 stub.
"""

import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def say(*words):
    print(*words, flush=True)


def health(port):
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = health_pb2_grpc.HealthStub(channel)
    status_name = health_pb2.HealthCheckResponse.ServingStatus.Name
    for service in ["", "echo.TestService", "no.Such"]:
        try:
            r = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            say("check", repr(service), status_name(r.status))
        except grpc.RpcError as e:
            say("check", repr(service), e.code().name)
    try:
        for r in stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=60):
            say("watch", status_name(r.status))
        say("watch ended OK")
    except grpc.RpcError as e:
        say("watch ended", e.code().name)


def reflection(port):
    from google.protobuf.descriptor_pool import DescriptorPool
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    db = ProtoReflectionDescriptorDatabase(channel)
    say("services", ",".join(sorted(db.get_services())))
    pool = DescriptorPool(db)
    svc = pool.FindServiceByName("echo.TestService")
    say("service", svc.full_name, "in", svc.file.name)
    for m in svc.methods:
        say(
            "method",
            m.name,
            m.input_type.full_name,
            m.output_type.full_name,
            "client_streaming" if m.client_streaming else "-",
            "server_streaming" if m.server_streaming else "-",
        )
    req = pool.FindMessageTypeByName("echo.Request")
    say("message", req.full_name, ",".join(f.name for f in req.fields))
    try:
        pool.FindServiceByName("echo.Nope")
        say("unknown found")
    except KeyError:
        say("unknown not found")

    # grpc.reflection.v1, with stubs tests/grpcio.rs generates from the v1 proto
    # (grpcio-reflection ships v1alpha's only).
    import reflection_v1_pb2 as reflection_pb2
    import reflection_v1_pb2_grpc as reflection_pb2_grpc

    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    questions = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="grpc.health.v1.Health"),
    ]
    for r in stub.ServerReflectionInfo(iter(questions), timeout=10):
        kind = r.WhichOneof("message_response")
        if kind == "list_services_response":
            say("v1 services", ",".join(sorted(s.name for s in r.list_services_response.service)))
        elif kind == "file_descriptor_response":
            from google.protobuf import descriptor_pb2

            names = []
            for raw in r.file_descriptor_response.file_descriptor_proto:
                f = descriptor_pb2.FileDescriptorProto()
                f.ParseFromString(raw)
                names.append(f.name)
            say("v1 files", ",".join(names))
        else:
            say("v1 other", kind)


def main():
    what, port = sys.argv[1], int(sys.argv[2])
    if what == "health":
        health(port)
    elif what == "reflection":
        reflection(port)
    else:
        raise SystemExit(f"unknown command {what}")


if __name__ == "__main__":
    main()
