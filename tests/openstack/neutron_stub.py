"""A minimal Neutron stand-in for the novaha test stack.

Servers boot with ``"networks": "none"``, yet Nova still asks Neutron a few
questions during boot, evacuation and deletion (``/``, ``/v2.0/extensions``,
``/v2.0/ports?device_id=...``, ``/v2.0/networks?shared=...``). An empty
list answers every one of them. Anything else is logged and refused with
404 so that a new kind of call shows up in the log instead of passing
silently.

Usage: neutron_stub.py PORT  (binds 127.0.0.1 only)
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _send(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        path = urlparse(self.path).path.rstrip("/")
        port = self.server.server_address[1]
        if path in ("", "/"):
            self._send(200, {"versions": [{"id": "v2.0", "status": "CURRENT",
                "links": [{"rel": "self", "href": f"http://127.0.0.1:{port}/v2.0/"}]}]})
            return
        if path == "/v2.0":
            self._send(200, {"resources": []})
            return
        parts = path.split("/")
        if len(parts) == 3 and parts[1] == "v2.0":
            # A collection: /v2.0/ports, /v2.0/networks, /v2.0/extensions...
            name = parts[2].removesuffix(".json").replace("-", "_")
            self._send(200, {name: []})
            return
        self._send(404, {"NeutronError": {"type": "NotFound",
                   "message": f"neutron stub: no {path}", "detail": ""}})

    def _refuse(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self._send(404, {"NeutronError": {"type": "NotFound",
                   "message": f"neutron stub: {self.command} {self.path} not supported",
                   "detail": ""}})

    do_POST = do_PUT = do_DELETE = _refuse

    def log_message(self, fmt, *args):
        sys.stderr.write("neutron-stub %s\n" % (fmt % args))


def main():
    port = int(sys.argv[1])
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
