"""Writes each message as an RFC 5322 .eml file, atomically (temp file, fsync, rename)."""

import os
import re
import tempfile

from outofoffice import clock
from outofoffice.mail.base import Mailer, MailError
from outofoffice.mail.message import Message


class FileMailer(Mailer):
    name = "file"

    @property
    def folder(self):
        return self.config.mail_dir

    def send(self, message: Message) -> None:
        data = message.to_email().as_bytes()
        stem = re.sub(r"[^A-Za-z0-9.-]", "_", message.message_id.strip("<>"))
        name = f"{clock.now():%Y%m%dT%H%M%S}-{stem}.eml"
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
