"""Prints each message to stderr: the default, so a newcomer sees the sign-in link."""

import sys

from outofoffice.mail.base import Mailer
from outofoffice.mail.message import Message


class ConsoleMailer(Mailer):
    name = "console"

    def send(self, message: Message) -> None:
        rule = "-" * 72
        sys.stderr.write(
            f"{rule}\nFrom: {message.sender}\nTo: {message.to}\nSubject: {message.subject}\n"
            f"Message-ID: {message.message_id}\n\n{message.text.rstrip()}\n{rule}\n"
        )
        sys.stderr.flush()
