"""The two ways to reach a `MetaSimulator`: a `requests` adapter in process, or a real HTTP server on loopback.

In process is fast and needs no port, so unit tests and the default wiring use it; over HTTP the client's real
stack (connection pool, timeouts, dropped sockets) is exercised, and other programs can use the simulator through
`KPI_META_API_URL`. Both turn a `TransportFault` into what a client would see from Meta: a connection error or a
read timeout.
"""

from __future__ import annotations

import io
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import Any
from urllib.parse import unquote, urlsplit
from wsgiref.simple_server import ServerHandler, WSGIRequestHandler, WSGIServer

import requests
import requests.adapters
from requests.structures import CaseInsensitiveDict

from kpi_platform import settings
from kpi_platform.simulator.app import MetaSimulator, SimulatorConfig
from kpi_platform.simulator.faults import FaultConfig, TransportFault

# --- In process: a requests adapter -------------------------------------------------------------------------


def _environ(request: requests.PreparedRequest) -> dict[str, Any]:
    """The WSGI environ a server would build for `request`."""
    url = urlsplit(request.url or "")
    body = request.body or b""
    if isinstance(body, str):
        body = body.encode("utf-8")
    elif not isinstance(body, bytes):
        body = b"".join(chunk.encode("utf-8") if isinstance(chunk, str) else chunk for chunk in body)
    environ: dict[str, Any] = {
        "REQUEST_METHOD": request.method or "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": unquote(url.path, "iso-8859-1"),
        "QUERY_STRING": url.query,
        "SERVER_NAME": url.hostname or "localhost",
        "SERVER_PORT": str(url.port or (443 if url.scheme == "https" else 80)),
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": url.netloc.rpartition("@")[2],
        "CONTENT_TYPE": request.headers.get("Content-Type", ""),
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": url.scheme or "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    for name, value in request.headers.items():
        key = "HTTP_" + name.upper().replace("-", "_")
        if key not in ("HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH", "HTTP_HOST"):
            environ[key] = value
    return environ


class SimulatorAdapter(requests.adapters.BaseAdapter):
    """Serves a `requests.Session` from a `MetaSimulator` without a socket.

    A "drop" fault raises `requests.ConnectionError`, a "timeout" raises `requests.ReadTimeout` at once.
    """

    def __init__(self, simulator: MetaSimulator) -> None:
        super().__init__()
        self.simulator = simulator

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: Any = True,
        cert: Any = None,
        proxies: Any = None,
    ) -> requests.Response:
        captured: dict[str, Any] = {}

        def start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Callable[[bytes], None]:
            captured.update(status=status, headers=headers)
            return lambda _data: None

        try:
            chunks = self.simulator.wsgi_app(_environ(request), start_response)
        except TransportFault as fault:
            if fault.kind == "drop":
                raise requests.ConnectionError(
                    "Connection aborted: the simulator dropped it", request=request
                ) from None
            raise requests.ReadTimeout("Read timed out (simulated)", request=request) from None
        body = b"".join(chunks)
        response = requests.Response()
        code, _, reason = captured["status"].partition(" ")
        response.status_code = int(code)
        response.reason = reason
        response.headers = CaseInsensitiveDict(captured["headers"])
        response.encoding = requests.utils.get_encoding_from_headers(response.headers)
        response.raw = io.BytesIO(body)
        response.url = request.url or ""
        response.request = request
        response.connection = self  # type: ignore[assignment]  # typed HTTPAdapter; requests only calls .send()
        return response

    def close(self) -> None:
        """Nothing to release: no sockets."""


def mount_simulator(
    session: requests.Session, simulator: MetaSimulator, *, base_url: str = settings.SIMULATOR_BASE_URL
) -> SimulatorAdapter:
    """Route every request of `session` under `base_url` to `simulator`; returns the mounted adapter."""
    adapter = SimulatorAdapter(simulator)
    session.mount(base_url.rstrip("/") + "/", adapter)
    return adapter


# --- Over real HTTP: a threaded loopback server -------------------------------------------------------------


class _FaultAwareHandler(ServerHandler):
    #: The request handler this handler answers for (set right after construction).
    request_handler: WSGIRequestHandler

    def handle_error(self) -> None:
        fault = sys.exc_info()[1]
        if not isinstance(fault, TransportFault):
            super().handle_error()
            return
        if fault.kind == "timeout":
            time.sleep(fault.seconds)
        # Nothing has been written: returning closes the socket, so the client sees a connection without a response.
        self.request_handler.close_connection = True


class _QuietRequestHandler(WSGIRequestHandler):
    """wsgiref's handler without access logs (URLs carry the access token) and with transport faults."""

    #: Always the `_ThreadingWSGIServer` it is served by.
    server: WSGIServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def handle(self) -> None:
        self.raw_requestline = self.rfile.readline(65537)
        if len(self.raw_requestline) > 65536:
            self.send_error(414)
            return
        if not self.parse_request():
            return
        handler = _FaultAwareHandler(
            self.rfile,
            self.wfile,  # type: ignore[arg-type]  # typeshed wants IO[bytes]; wsgiref's own handle() passes this
            self.get_stderr(),
            self.get_environ(),
            multithread=True,
        )
        handler.request_handler = self
        app = self.server.get_app()
        assert app is not None, "_make_server sets the simulator's app before serving"
        handler.run(app)


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    block_on_close = False


@dataclass
class RunningServer:
    """A simulator listening on a loopback port in a background thread; a context manager that shuts it down."""

    simulator: MetaSimulator
    host: str
    port: int
    _server: _ThreadingWSGIServer
    _thread: threading.Thread

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def shutdown(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()


def _make_server(simulator: MetaSimulator, host: str, port: int) -> _ThreadingWSGIServer:
    server = _ThreadingWSGIServer((host, port), _QuietRequestHandler)
    server.set_app(simulator.wsgi_app)
    return server


def serve(simulator: MetaSimulator, *, host: str = "127.0.0.1", port: int = 0) -> RunningServer:
    """Start serving `simulator` over HTTP (port 0 picks a free one); stop it with `.shutdown()` or `with`."""
    server = _make_server(simulator, host, port)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="meta-simulator", daemon=True
    )
    thread.start()
    return RunningServer(
        simulator=simulator, host=host, port=server.server_address[1], _server=server, _thread=thread
    )


def run_forever(
    *,
    host: str = "127.0.0.1",
    port: int,
    faults: FaultConfig | None = None,
    config: SimulatorConfig | None = None,
) -> None:
    """Serve a simulator in the foreground until interrupted, printing its URL first."""
    server = _make_server(MetaSimulator(config, faults), host, port)
    url = f"http://{host}:{server.server_address[1]}"
    print(
        f"Meta API simulator listening on {url} (set {settings.ENV_META_URL}={url} to use it); Ctrl+C stops it."
    )
    sys.stdout.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
