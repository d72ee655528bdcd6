"""A real SMTP server (aiosmtpd) on a free loopback port that keeps what it receives."""

from __future__ import annotations

import asyncio
import email
import email.policy
import socket
import threading
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _Handler:
    def __init__(self, sink: SMTPSink):
        self.sink = sink

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        with self.sink.lock:
            self.sink.greetings += 1  # one per connection a client opened
        return responses

    async def handle_DATA(self, server, session, envelope):
        # a slow relay: each message (or those to one address) takes this long to accept
        delay = max([self.sink.slow.get(r, 0.0) for r in envelope.rcpt_tos] + [self.sink.delay])
        if delay:
            await asyncio.sleep(delay)
        if self.sink.refuse:
            return self.sink.refuse
        message = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        if self.sink.on_message:  # runs before the client hears 250: a fault between the two
            self.sink.on_message(message)
        with self.sink.lock:
            self.sink.messages.append(message)
            self.sink.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 OK"


class SMTPSink:
    def __init__(self, username: str = "", password: str = "", port: int | None = None):
        self.messages: list = []
        self.envelopes: list = []
        self.lock = threading.Lock()
        self.refuse = ""  # e.g. "451 try later" or "550 no such user"
        self.delay = 0.0
        self.slow: dict[str, float] = {}  # recipient -> seconds its message takes to accept
        self.greetings = 0  # EHLOs: the connections clients opened
        self.on_message = None  # called with each message just before it is accepted
        self.port = port or free_port()
        kwargs = {}
        if username:

            def authenticate(server, session, envelope, mechanism, auth_data):
                ok = isinstance(auth_data, LoginPassword) and (
                    auth_data.login.decode(),
                    auth_data.password.decode(),
                ) == (username, password)
                return AuthResult(success=ok)

            kwargs = {
                "authenticator": authenticate,
                "auth_require_tls": False,
                "auth_required": True,
            }
        self.controller = Controller(_Handler(self), hostname="127.0.0.1", port=self.port, **kwargs)

    def __enter__(self) -> SMTPSink:
        self.controller.start()
        return self

    def __exit__(self, *exc) -> None:
        self.controller.stop()

    def wait_for(self, count: int = 1, timeout: float = 10.0) -> list:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.messages) >= count:
                    return list(self.messages)
            time.sleep(0.05)
        raise AssertionError(
            f"expected {count} email(s) within {timeout}s, got {len(self.messages)}"
        )
