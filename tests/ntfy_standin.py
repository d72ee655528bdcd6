"""An ntfy server on 127.0.0.1 that speaks ntfy's publish API ("publish as JSON").

POST / with a JSON body {"topic", "title", "message", "priority", "tags", "click",
"actions"}; answers 200 with the message as ntfy does ({"id", "time", "expires",
"event": "message", "topic", ...}). With a token set, it is a protected server: no
Authorization is 403 forbidden (40301), a wrong Bearer token 401 unauthorized (40101),
each as ntfy's JSON error {"code", "http", "error", "link"}. It can be told to answer
429 or 500 for the next requests, and records every message it took.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.smtp_sink import free_port

TOPIC = re.compile(r"^[-_A-Za-z0-9]{1,64}$")
ERRORS = {
    400: (40017, "invalid request: request body must be message JSON"),
    401: (40101, "unauthorized"),
    403: (40301, "forbidden"),
    429: (42901, "limit reached: too many requests"),
    500: (50001, "internal server error"),
}


class NtfyStandIn:
    def __init__(self, token: str = ""):
        self.token = token
        self.messages: list[dict] = []  # what ntfy took, as published
        self.requests: list[dict] = []  # every request: headers and body
        self.fail_next: list[int] = []  # statuses to answer next, one per request
        self.retry_after = ""  # sent with a 429 when set
        self._lock = threading.Lock()
        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> NtfyStandIn:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def answer(self, body: bytes) -> tuple[int, dict, dict]:
        """(status, JSON answer, extra headers) for one publish request."""
        with self._lock:
            if self.fail_next:
                status = self.fail_next.pop(0)
                extra = (
                    {"Retry-After": self.retry_after} if status == 429 and self.retry_after else {}
                )
                return status, _error(status), extra
        try:
            message = json.loads(body)
        except ValueError:
            return 400, _error(400), {}
        if not isinstance(message, dict) or not TOPIC.match(str(message.get("topic", ""))):
            return 400, {"code": 40009, "http": 400, "error": "invalid topic"}, {}
        if (
            not isinstance(message.get("priority", 3), int)
            or not 1 <= message.get("priority", 3) <= 5
        ):
            return 400, {"code": 40007, "http": 400, "error": "invalid priority"}, {}
        now = int(time.time())
        published = {
            "id": secrets.token_urlsafe(9)[:12],
            "time": now,
            "expires": now + 43200,
            "event": "message",
            **{
                k: v
                for k, v in message.items()
                if k in ("topic", "title", "message", "priority", "tags", "click")
            },
        }
        if message.get("actions"):
            published["actions"] = [
                {"id": secrets.token_hex(5), **action} for action in message["actions"]
            ]
        with self._lock:
            self.messages.append(published)
        return 200, published, {}

    def _handler(self):
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet in the test output
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with standin._lock:
                    standin.requests.append(
                        {"path": self.path, "headers": dict(self.headers), "body": body}
                    )
                if self.path.rstrip("/") != "":
                    status, answer, extra = (
                        404,
                        {"code": 40401, "http": 404, "error": "page not found"},
                        {},
                    )
                elif standin.token and not (auth := self.headers.get("Authorization")):
                    status, answer, extra = 403, _error(403), {}
                elif standin.token and auth != f"Bearer {standin.token}":
                    status, answer, extra = 401, _error(401), {}
                else:
                    status, answer, extra = standin.answer(body)
                data = (json.dumps(answer) + "\n").encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in extra.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

        return Handler


def _error(status: int) -> dict:
    code, words = ERRORS[status]
    return {"code": code, "http": status, "error": words, "link": "https://ntfy.sh/docs/publish/"}
