"""Sends through an SMTP relay: STARTTLS, implicit TLS, or plain on a trusted network."""

from __future__ import annotations

import smtplib
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager

from outofoffice.mail.base import Mailer, MailError
from outofoffice.mail.message import Message


class SMTPMailer(Mailer):
    name = "smtp"

    @property
    def parallel(self) -> int:
        return self.config.mail.smtp.connections

    def _connect(self) -> smtplib.SMTP:
        opts = self.config.mail.smtp
        if opts.security == "ssl":
            client = smtplib.SMTP_SSL(
                opts.host, opts.port, timeout=opts.timeout, context=ssl.create_default_context()
            )
        else:
            client = smtplib.SMTP(opts.host, opts.port, timeout=opts.timeout)
            if opts.security == "starttls":
                client.starttls(context=ssl.create_default_context())
        if opts.username:
            client.login(opts.username, opts.password)
        return client

    def send(self, message: Message) -> None:
        with self.session() as session:
            session.send(message)

    @contextmanager
    def session(self) -> Iterator[_Session]:
        session = _Session(self)
        try:
            yield session
        finally:
            session.close()

    def _send(self, client: smtplib.SMTP, message: Message) -> None:
        try:
            client.sendmail(*message.envelope(), message.to_bytes())
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            raise MailError(
                f"recipient refused: {exc.recipients}", permanent=all(c >= 500 for c in codes)
            ) from None
        except smtplib.SMTPResponseException as exc:
            text = exc.smtp_error.decode("utf-8", "replace") if exc.smtp_error else ""
            permanent = exc.smtp_code >= 500 and not isinstance(
                exc, smtplib.SMTPAuthenticationError
            )
            raise MailError(f"SMTP {exc.smtp_code} {text}".strip(), permanent=permanent) from None
        except (OSError, smtplib.SMTPException, ssl.SSLError) as exc:
            raise MailError(f"cannot reach {self.describe()}: {exc}") from None

    def problems(self) -> list[str]:
        opts = self.config.mail.smtp
        if opts.username and not opts.password:
            return ["[mail.smtp] password: required when username is set (or password_file)"]
        return []

    def describe(self) -> str:
        opts = self.config.mail.smtp
        return f"smtp ({opts.host}:{opts.port}, {opts.security})"


class _Session:
    """One SMTP connection: opened on the first message, reused for the next ones (the
    scheduler keeps it between passes), dropped after any failure so the next message
    starts clean. One unused for a while is asked NOOP first: a relay may have closed
    it meanwhile, and that must cost a reconnect, not a failed try."""

    CHECK_AFTER = 5.0  # seconds unused

    def __init__(self, mailer: SMTPMailer):
        self.mailer = mailer
        self.client: smtplib.SMTP | None = None
        self.used_at = 0.0

    def _alive(self) -> bool:
        try:
            return self.client.noop()[0] == 250
        except (OSError, smtplib.SMTPException):
            return False

    def send(self, message: Message) -> None:
        try:
            idle = time.monotonic() - self.used_at > self.CHECK_AFTER
            if self.client is not None and idle and not self._alive():
                self.close()
            if self.client is None:
                self.client = self.mailer._connect()
            self.used_at = time.monotonic()
            self.mailer._send(self.client, message)
        except (OSError, smtplib.SMTPException, ssl.SSLError) as exc:
            self.close()
            raise MailError(f"cannot reach {self.mailer.describe()}: {exc}") from None
        except MailError:
            self.close()
            raise

    @contextmanager
    def session(self) -> Iterator[_Session]:
        """Already a session: passes inside one job run share the connection."""
        yield self

    def close(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            try:
                client.quit()
            except (OSError, smtplib.SMTPException):
                client.close()
