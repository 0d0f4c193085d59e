"""The standard gRPC services of a server under test, exercised with the official Python
clients: `grpcio-health-checking` (grpc_health.v1) and `grpcio-reflection`
(grpc_reflection). Driven by `tests/grpcio.rs`, which reads the lines printed here.

    services.py health PORT      Check "", "echo.TestService", "no.Such"; then Watch ""
                                 and print each status until the call ends.
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


def main():
    what, port = sys.argv[1], int(sys.argv[2])
    if what == "health":
        health(port)
    else:
        raise SystemExit(f"unknown command {what}")


if __name__ == "__main__":
    main()
