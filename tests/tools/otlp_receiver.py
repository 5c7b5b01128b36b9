"""An OTLP/HTTP receiver for socktrace's tests: decodes what the agent sends with the
official OpenTelemetry protobufs (the `opentelemetry-proto` package from PyPI) and appends
each request, as JSON, to a file. Not a mock of a Collector's behaviour beyond what OTLP/HTTP
specifies: POST /v1/logs and /v1/metrics, protobuf bodies, optional gzip, 200 on success.

usage: otlp_receiver.py OUT_FILE [--fail-first N] [--port PORT]
Prints "listening on PORT" once ready; the first N requests are answered 503 (to test
retries).
"""

import gzip
import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

OUT = sys.argv[1]
FAIL_FIRST = int(sys.argv[sys.argv.index("--fail-first") + 1]) if "--fail-first" in sys.argv else 0
PORT = int(sys.argv[sys.argv.index("--port") + 1]) if "--port" in sys.argv else 0
SEEN = {"requests": 0}
SIGNALS = {"/v1/logs": ("logs", ExportLogsServiceRequest), "/v1/metrics": ("metrics", ExportMetricsServiceRequest)}


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        SEEN["requests"] += 1
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        signal = SIGNALS.get(self.path)
        record = {"path": self.path, "status": 0, "content_type": self.headers.get("Content-Type"),
                  "content_encoding": self.headers.get("Content-Encoding")}
        if signal is None:
            record["status"] = 404
        elif SEEN["requests"] <= FAIL_FIRST:
            record["status"] = 503
        else:
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            message = signal[1]()
            message.ParseFromString(body)
            record["status"] = 200
            record["signal"] = signal[0]
            record["request"] = MessageToDict(message)
        with open(OUT, "a") as f:
            f.write(json.dumps(record) + "\n")
        self.send_response(record["status"])
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


HTTPServer.allow_reuse_address = True
server = HTTPServer(("127.0.0.1", PORT), Handler)
print(f"listening on {server.server_address[1]}", flush=True)
server.serve_forever()
