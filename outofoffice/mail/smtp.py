"""Sends through an SMTP relay: STARTTLS, implicit TLS, or plain on a trusted network."""

import smtplib
import ssl

from outofoffice.mail.base import Mailer, MailError
from outofoffice.mail.message import Message


class SMTPMailer(Mailer):
    name = "smtp"

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
        try:
            with self._connect() as client:
                client.send_message(message.to_email())
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
