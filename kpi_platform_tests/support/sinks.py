"""Local stand-ins for alert destinations: an HTTP server recording webhook posts and a plain SMTP sink."""

from __future__ import annotations

import base64
import email
import json
import socket
import socketserver
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

#: How often the server loop looks for shutdown: stopping a sink waits up to this long (the default is 0.5 s).
POLL_INTERVAL_S = 0.05


@dataclass
class WebhookSink:
    """Every POST as (path, parsed JSON body); answers `status`."""

    url: str
    posts: list[tuple[str, object]] = field(default_factory=list)
    status: int = 200

    def bodies(self, path: str) -> list[object]:
        return [body for p, body in self.posts if p == path]


@contextmanager
def webhook_sink() -> Iterator[WebhookSink]:
    sink = WebhookSink(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            sink.posts.append((self.path, json.loads(raw or b"null")))
            self.send_response(sink.status)
            self.end_headers()
            self.wfile.write(b"ok")

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


@contextmanager
def slack_sink(monkeypatch, *, min_severity: str | None = None) -> Iterator[WebhookSink]:
    """A webhook sink configured as the Slack channel (KPI_ALERT_SLACK_WEBHOOK, optionally its minimum severity)."""
    with webhook_sink() as sink:
        monkeypatch.setenv("KPI_ALERT_SLACK_WEBHOOK", f"{sink.url}/slack")
        if min_severity is not None:
            monkeypatch.setenv("KPI_ALERT_SLACK_MIN_SEVERITY", min_severity)
        yield sink


@dataclass
class SmtpSink:
    """Messages received (parsed), with the envelope and the credentials of AUTH PLAIN / LOGIN."""

    port: int
    messages: list[Message] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    logins: list[tuple[str, str]] = field(default_factory=list)


class _SmtpHandler(socketserver.StreamRequestHandler):
    sink: SmtpSink

    def reply(self, line: str) -> None:
        self.wfile.write(f"{line}\r\n".encode())

    def read(self) -> str:
        return self.rfile.readline().decode("utf-8", "replace").rstrip("\r\n")

    def handle(self) -> None:
        self.reply("220 sink ESMTP")
        sender, recipients = "", []
        while True:
            line = self.read()
            if not line and self.rfile.closed:
                return
            verb, _, rest = line.partition(" ")
            verb = verb.upper()
            if verb == "EHLO":
                self.reply("250-sink")
                self.reply("250 AUTH PLAIN LOGIN")
            elif verb == "HELO":
                self.reply("250 sink")
            elif verb == "AUTH":
                mechanism, _, initial = rest.partition(" ")
                if mechanism.upper() == "PLAIN":
                    if not initial:
                        self.reply("334 ")
                        initial = self.read()
                    _, user, password = base64.b64decode(initial).decode().split("\0")
                else:
                    self.reply("334 VXNlcm5hbWU6")
                    user = base64.b64decode(self.read()).decode()
                    self.reply("334 UGFzc3dvcmQ6")
                    password = base64.b64decode(self.read()).decode()
                self.sink.logins.append((user, password))
                self.reply("235 accepted")
            elif verb == "MAIL":
                sender, recipients = rest.split(":", 1)[1].strip().strip("<>"), []
                self.reply("250 ok")
            elif verb == "RCPT":
                recipients.append(rest.split(":", 1)[1].strip().strip("<>"))
                self.reply("250 ok")
            elif verb == "DATA":
                self.reply("354 end with .")
                lines = []
                while (data := self.rfile.readline()) not in (b".\r\n", b".\n", b""):
                    lines.append(data[1:] if data.startswith(b"..") else data)
                self.sink.messages.append(email.message_from_bytes(b"".join(lines)))
                self.sink.envelopes.append((sender, recipients))
                self.reply("250 queued")
            elif verb in ("RSET", "NOOP"):
                self.reply("250 ok")
            elif verb == "QUIT":
                self.reply("221 bye")
                return
            elif not line:
                return
            else:
                self.reply("502 not implemented")


@contextmanager
def smtp_sink() -> Iterator[SmtpSink]:
    sink = SmtpSink(port=0)
    handler = type("Handler", (_SmtpHandler,), {"sink": sink})
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    sink.port = server.server_address[1]
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": POLL_INTERVAL_S}, daemon=True
    )
    thread.start()
    try:
        yield sink
    finally:
        server.shutdown()
        server.server_close()


def closed_port() -> int:
    """A local port nothing listens on (connections are refused at once)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
