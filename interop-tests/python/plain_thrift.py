"""An Apache Thrift (PyPI `thrift`) client of the echo service over plain Thrift, no TTHeader.

    python plain_thrift.py HOST PORT framed|buffered strict|nonstrict

The stubs come from Debian's `thrift-compiler` (`thrift --gen py` of `idl/echo.thrift`, put on
PYTHONPATH by the test). Every step runs on one connection, in order, and its outcome is
printed as one line, `STEP<TAB>key=value<TAB>...` (values have no tabs or newlines): the Rust test
(`tests/plain_thrift.rs`) checks them.
"""

import sys

from thrift.protocol import TBinaryProtocol
from thrift.Thrift import TApplicationException, TMessageType
from thrift.transport import TSocket, TTransport

from echo import TestService
from echo.ttypes import EchoError, Request


def report(step, **fields):
    cells = [step] + [f"{k}={v}" for k, v in fields.items()]
    print("\t".join(c.replace("\t", " ").replace("\n", " ") for c in cells), flush=True)


def outcome(call):
    """Runs `call`; returns what happened as a dict."""
    try:
        reply = call()
        return {"ok": reply.message, "index": reply.index}
    except EchoError as e:
        return {"declared": e.reason}
    except TApplicationException as e:
        return {"app_exception": e.type, "message": e.message}


def unknown_method(client, proto):
    """Calls a method the IDL does not have, as a generated client would call any method."""
    proto.writeMessageBegin("NoSuchMethod", TMessageType.CALL, 41)
    args = TestService.PingPong_args(req=Request(message="x"))
    args.write(proto)
    proto.writeMessageEnd()
    proto.trans.flush()
    name, kind, seq = proto.readMessageBegin()
    result = {"name": name, "type": kind, "seq": seq}
    if kind == TMessageType.EXCEPTION:
        exc = TApplicationException()
        exc.read(proto)
        result.update(app_exception=exc.type, message=exc.message)
    proto.readMessageEnd()
    return result


def main():
    host, port, framing, strictness = sys.argv[1:5]
    sock = TSocket.TSocket(host, int(port))
    sock.setTimeout(10_000)
    if framing == "framed":
        trans = TTransport.TFramedTransport(sock)
    else:
        trans = TTransport.TBufferedTransport(sock)
    strict = strictness == "strict"
    proto = TBinaryProtocol.TBinaryProtocol(trans, strictRead=strict, strictWrite=strict)
    client = TestService.Client(proto)
    trans.open()
    try:
        report("pingpong", **outcome(lambda: client.PingPong(Request(message="hello"))))
        report("unknown", **unknown_method(client, proto))
        report("streaming", **outcome(lambda: client.Echo(Request(message="x"))))
        report(
            "declared",
            **outcome(lambda: client.PingPong(Request(message="x", fail="declared:nope"))),
        )
        report("failed", **outcome(lambda: client.PingPong(Request(message="x", fail="boom"))))
        report("after", **outcome(lambda: client.PingPong(Request(message="again"))))
    finally:
        trans.close()


if __name__ == "__main__":
    main()
