"""The mailer interface: one subclass per backend, chosen by name in config."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from outofoffice.config import Config
    from outofoffice.mail.message import Message


class MailError(Exception):
    """A failed send. ``permanent`` ones are not retried (dead letter at once)."""

    def __init__(self, reason: str, permanent: bool = False, retry_after: float | None = None):
        super().__init__(reason)
        self.permanent = permanent
        self.retry_after = retry_after


class Mailer(ABC):
    name = ""

    def __init__(self, config: Config):
        self.config = config

    @abstractmethod
    def send(self, message: Message) -> None:
        """Hand the message over, or raise MailError."""

    @contextmanager
    def session(self) -> Iterator[Mailer]:
        """What a delivery pass sends through; backends with connections keep one open
        for the whole pass (see SMTPMailer)."""
        yield self

    def problems(self) -> list[str]:
        """What stops this backend from working, for `outofoffice check`."""
        return []

    def describe(self) -> str:
        return self.name
