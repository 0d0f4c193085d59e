"""Rich error details (google.rpc.Status in grpc-status-details-bin) with grpcio's
`grpcio-status` and googleapis-common-protos' `google.rpc` messages. Driven by
`tests/grpcio.rs`, which reads the lines printed here.

    status_details.py read PORT    Call /echo.TestService/PingPong (message "details") on our
                                   server, read the error with rpc_status.from_call, and print
                                   one line per detail: "<Type> ok" when it equals the fixture
                                   below, "<Type> MISMATCH <text>" otherwise; then "done".
    status_details.py serve PORT   Serve /echo.TestService/PingPong failing with
                                   INVALID_ARGUMENT "from grpcio" and the fixture, packed by
                                   rpc_status.to_status; print "serving" once ready, and stop
                                   when stdin closes.

The fixture is the one `tests/grpcio.rs` builds on our side (`fixture()` there).
"""

import sys

import grpc
from google.protobuf import any_pb2, duration_pb2, text_format
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status


def say(*words):
    print(*words, flush=True)


def fixture():
    d = error_details_pb2
    return [
        d.ErrorInfo(reason="QUOTA_EXCEEDED", domain="example.com", metadata={"zone": "eu"}),
        d.RetryInfo(retry_delay=duration_pb2.Duration(seconds=1, nanos=500_000_000)),
        d.DebugInfo(stack_entries=["a.rs:1", "b.rs:2"], detail="boom"),
        d.QuotaFailure(
            violations=[d.QuotaFailure.Violation(subject="clientip:127.0.0.1", description="daily limit")]
        ),
        d.PreconditionFailure(
            violations=[
                d.PreconditionFailure.Violation(type="TOS", subject="user:1", description="not accepted")
            ]
        ),
        d.BadRequest(
            field_violations=[
                d.BadRequest.FieldViolation(field="name", description="empty"),
                d.BadRequest.FieldViolation(field="age", description="negative"),
            ]
        ),
        d.RequestInfo(request_id="req-1", serving_data="trace"),
        d.ResourceInfo(resource_type="table", resource_name="users", owner="team", description="missing"),
        d.Help(links=[d.Help.Link(description="docs", url="https://example.com/docs")]),
        d.LocalizedMessage(locale="de-DE", message="Fehler"),
    ]


def read(port):
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    call = channel.unary_unary("/echo.TestService/PingPong")
    # echo.Request{message: "details"}: field 1, length-delimited.
    request = b"\x0a\x07details"
    try:
        call(request, timeout=10)
        say("no error")
        return
    except grpc.RpcError as e:
        # from_call checks that the google.rpc.Status's code and message are the trailers'.
        status = rpc_status.from_call(e)
        say("status", e.code().name, e.details())
    if status is None:
        say("no details")
        return
    say("details", len(status.details), status.code, status.message)
    want = {type(m).DESCRIPTOR.full_name: m for m in fixture()}
    for any_msg in status.details:
        name = any_msg.TypeName()
        expected = want.get(name)
        if expected is None:
            say(name, "UNEXPECTED")
            continue
        got = type(expected)()
        if not any_msg.Unpack(got):
            say(name, "UNPACK FAILED")
        elif got == expected:
            say(name.split(".")[-1], "ok")
        else:
            say(name.split(".")[-1], "MISMATCH", text_format.MessageToString(got, as_one_line=True))
    say("done")


def serve(port):
    from concurrent import futures

    def ping_pong(request, context):
        details = []
        for m in fixture():
            a = any_pb2.Any()
            a.Pack(m)
            details.append(a)
        st = status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message="from grpcio", details=details)
        context.abort_with_status(rpc_status.to_status(st))

    handler = grpc.method_handlers_generic_handler(
        "echo.TestService",
        {"PingPong": grpc.unary_unary_rpc_method_handler(ping_pong)},
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    say("serving")
    sys.stdin.read()
    server.stop(None)


def main():
    what, port = sys.argv[1], int(sys.argv[2])
    if what == "read":
        read(port)
    elif what == "serve":
        serve(port)
    else:
        raise SystemExit(f"unknown command {what}")


if __name__ == "__main__":
    main()
