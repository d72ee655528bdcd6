"""Writes each message as an RFC 5322 .eml file, atomically: a hidden .part file, fsync,
then a rename, so anything reading *.eml never sees half a message."""

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
        data = message.to_bytes()
        name = f"{clock.now():%Y%m%dT%H%M%S}-{file_stem(message.message_id)}.eml"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".tmp-", suffix=".part")
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.folder / name)
        except OSError as exc:
            raise MailError(f"cannot write to {self.folder}: {exc.strerror}") from None

    def forget(self, message_ids: list[str], addresses: set[str]) -> int:
        """Remove the .eml files of these messages, and any sent to these addresses
        (their account was deleted; sign-in emails have no outbox row by then)."""
        stems = {file_stem(m) for m in message_ids}
        wanted = {f"To: {a}".encode() for a in addresses}
        removed = 0
        for path in self.folder.glob("*.eml") if self.folder.exists() else []:
            head = path.read_bytes()[:4096]
            to = next((line for line in head.splitlines() if line.startswith(b"To: ")), b"")
            if any(path.stem.endswith(stem) for stem in stems) or to.strip() in wanted:
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
