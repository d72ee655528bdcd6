"""A webhook receiver on 127.0.0.1 that checks every delivery with an independent
implementation of the Standard Webhooks specification (the `standardwebhooks`
package), as a customer's endpoint would.

It answers 204 to a delivery that verifies and 400 to one that does not, or 500 to the
first ``fail_first`` deliveries, or a fixed ``answer`` status.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from tests.smtp_sink import free_port


@dataclass
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes
    verified: bool
    answered: int
    payload: dict | None = None
    refusal: str = ""


@dataclass
class Receiver:
    secret: str = ""  # set once the endpoint is added and its secret known
    fail_first: int = 0  # answer 500 to this many deliveries first
    answer: int | None = None  # answer this status to every delivery (after fail_first)
    deliveries: list[Delivery] = field(default_factory=list)
    port: int = 0
    tls: ssl.SSLContext | None = None  # serve https with this context
    host: str = "127.0.0.1"  # the name the URL gives (its certificate's, under https)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{self.host}:{self.port}/hooks"

    @property
    def verified(self) -> list[Delivery]:
        return [d for d in self.deliveries if d.verified]

    @property
    def refused(self) -> list[Delivery]:
        return [d for d in self.deliveries if not d.verified]

    def types(self) -> list[str]:
        return [d.payload["type"] for d in self.verified if d.payload]

    def start(self) -> Receiver:
        receiver = self
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {k: v for k, v in self.headers.items()}
                payload, refusal = None, ""
                try:
                    payload = Webhook(receiver.secret).verify(body, headers)
                except (WebhookVerificationError, ValueError) as exc:
                    refusal = str(exc) or type(exc).__name__
                with lock:
                    failing = sum(1 for d in receiver.deliveries) < receiver.fail_first
                    status = (
                        500
                        if failing
                        else 400
                        if refusal
                        else receiver.answer
                        if receiver.answer is not None
                        else 204
                    )
                    receiver.deliveries.append(
                        Delivery(self.path, headers, body, not refusal, status, payload, refusal)
                    )
                reply = json.dumps({"error": "try later"}).encode() if status >= 500 else b""
                self.send_response(status)
                if status == 429:
                    self.send_header("Retry-After", "30")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):  # quiet
                pass

        self.port = free_port()
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        if self.tls:
            self._server.socket = self.tls.wrap_socket(self._server.socket, server_side=True)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


@dataclass
class Dripper:
    """An endpoint that takes a delivery, then answers a byte every ``pause`` seconds:
    each read of its answer succeeds in time, the whole answer takes far longer.
    ``silent``: it takes the connection and says nothing at all (TLS never starts)."""

    pause: float = 0.2
    silent: bool = False
    port: int = 0
    requests: int = 0
    cut_off: bool = False  # the sender hung up before the answer was whole
    _server: ThreadingHTTPServer | None = None
    _listener: socket.socket | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def start(self) -> Dripper:
        self.port = free_port()
        if self.silent:
            self._listener = socket.create_server(("127.0.0.1", self.port))
            return self  # the kernel completes connections; nobody ever reads them
        dripper = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                dripper.requests += 1
                answer = b"HTTP/1.1 204 No Content\r\nX-Slow: " + b"z" * 200 + b"\r\n\r\n"
                try:
                    for byte in answer:
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        time.sleep(dripper.pause)
                except OSError:
                    dripper.cut_off = True
                self.close_connection = True

            def log_message(self, *args):  # quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._listener is not None:
            self._listener.close()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
