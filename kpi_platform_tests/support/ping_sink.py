"""A local stand-in for an uptime monitor's ping URL (healthchecks.io style): records every GET, answers `status`."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

#: How often the server loop looks for shutdown: stopping a sink waits up to this long (the default is 0.5 s).
POLL_INTERVAL_S = 0.05


@dataclass
class PingSink:
    """`url` is the server's root; `pings` the paths (with query) of every GET received."""

    url: str
    pings: list[str] = field(default_factory=list)
    status: int = 200


@contextmanager
def ping_sink() -> Iterator[PingSink]:
    sink = PingSink(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            sink.pings.append(self.path)
            self.send_response(sink.status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"OK")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    sink.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": POLL_INTERVAL_S}, daemon=True
    )
    thread.start()
    try:
        yield sink
    finally:
        server.shutdown()
        server.server_close()
