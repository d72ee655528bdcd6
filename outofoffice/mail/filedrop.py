"""Writes each message as an RFC 5322 .eml file, atomically (temp file, fsync, rename)."""

import os
import re
import tempfile

from outofoffice import clock
from outofoffice.mail.base import Mailer, MailError
from outofoffice.mail.message import Message


def file_stem(message_id: str) -> str:
    """The part of an .eml file's name that comes from its Message-ID."""
    return re.sub(r"[^A-Za-z0-9.-]", "_", message_id.strip("<>"))


class FileMailer(Mailer):
    name = "file"

    @property
    def folder(self):
        return self.config.mail_dir

    def send(self, message: Message) -> None:
        data = message.to_email().as_bytes()
        name = f"{clock.now():%Y%m%dT%H%M%S}-{file_stem(message.message_id)}.eml"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".tmp-", suffix=".eml")
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.folder / name)
        except OSError as exc:
            raise MailError(f"cannot write to {self.folder}: {exc.strerror}") from None

    def forget(self, message_ids: list[str]) -> int:
        """Remove the .eml files of these messages (their account was deleted)."""
        removed = 0
        for message_id in message_ids:
            for path in self.folder.glob(f"*-{file_stem(message_id)}.eml"):
                path.unlink()
                removed += 1
        return removed

    def problems(self) -> list[str]:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return [f"[mail.file] path: cannot create {self.folder}: {exc.strerror}"]
        if not os.access(self.folder, os.W_OK):
            return [f"[mail.file] path: {self.folder} is not writable"]
        return []

    def describe(self) -> str:
        return f"file ({self.folder})"
