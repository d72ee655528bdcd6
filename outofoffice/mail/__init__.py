"""Outgoing email: a Message, a Mailer per backend, and the outbox that feeds them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from outofoffice.mail.base import Mailer, MailError
from outofoffice.mail.console import ConsoleMailer
from outofoffice.mail.filedrop import FileMailer
from outofoffice.mail.message import Message
from outofoffice.mail.resend import ResendMailer
from outofoffice.mail.smtp import SMTPMailer

if TYPE_CHECKING:
    from outofoffice.config import Config

BACKENDS: dict[str, type[Mailer]] = {
    cls.name: cls for cls in (ConsoleMailer, FileMailer, SMTPMailer, ResendMailer)
}


def mailer_for(config: Config) -> Mailer:
    return BACKENDS[config.mail.backend](config)


__all__ = ["BACKENDS", "Mailer", "MailError", "Message", "mailer_for"]
