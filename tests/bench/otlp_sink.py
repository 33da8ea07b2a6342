"""An OTLP/gRPC trace receiver that keeps nothing: it answers every
TraceService/Export call as a collector would (an empty
ExportTraceServiceResponse) and counts the calls and their bytes. Prints
`port N` once listening; on SIGTERM or SIGINT prints `requests R bytes B`
and ends. The venv `tests/emulators/install.sh grpcio` makes has grpcio.

    otlp_sink.py [PORT]      (default: a free port)
"""

import signal
import sys
import threading
from concurrent import futures

import grpc

counts = {"requests": 0, "bytes": 0}
lock = threading.Lock()


def export(request, context):
    with lock:
        counts["requests"] += 1
        counts["bytes"] += len(request)
    return b""  # ExportTraceServiceResponse with no field set


handler = grpc.method_handlers_generic_handler(
    "opentelemetry.proto.collector.trace.v1.TraceService",
    {"Export": grpc.unary_unary_rpc_method_handler(export)},
)
server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
server.add_generic_rpc_handlers((handler,))
port = server.add_insecure_port(f"127.0.0.1:{sys.argv[1] if len(sys.argv) > 1 else 0}")
server.start()
print(f"port {port}", flush=True)
done = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: done.set())
signal.signal(signal.SIGINT, lambda *_: done.set())
done.wait()
server.stop(grace=1)
print(f"requests {counts['requests']} bytes {counts['bytes']}", flush=True)
