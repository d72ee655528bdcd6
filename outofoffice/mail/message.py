"""One outgoing email, and its RFC 5322 form."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC
from email.charset import QP, Charset
from email.header import Header
from email.message import Message as EmailMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import format_datetime, formataddr, getaddresses, parseaddr

from outofoffice import clock

UTF8_QP = Charset("utf-8")
UTF8_QP.body_encoding = QP  # readable source, and what mail filters expect of text

_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_ADDRESS = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@{_LABEL}(?:\.{_LABEL})*")


def is_address(value: str) -> bool:
    """A bare address that every header parser reads as exactly one recipient: no
    display name, no quoting, no comments, no encoded words, no lists."""
    return (
        len(value) <= 254
        and _ADDRESS.fullmatch(value) is not None
        and len(value.partition("@")[0]) <= 64
        and "=?" not in value
        and getaddresses([value]) == [("", value)]
    )


def is_mailbox(value: str) -> bool:
    """One address with an optional display name, as in "Firm <noreply@example.com>"."""
    parsed = getaddresses([value])
    return len(parsed) == 1 and is_address(parsed[0][1]) and not _CONTROL.search(value)


def header_safe(value: str) -> str:
    """Header values never carry CR, LF or other control characters (header injection)."""
    return _CONTROL.sub(" ", value).strip()


@dataclass
class Message:
    sender: str
    to: str
    subject: str
    text: str
    html: str
    message_id: str
    reply_to: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def all_headers(self) -> dict[str, str]:
        """Headers beyond From/To/Subject that every email carries."""
        extra = {"Auto-Submitted": "auto-generated", **self.headers}
        return {header_safe(k): header_safe(v) for k, v in extra.items()}

    def to_email(self) -> EmailMessage:
        """multipart/alternative (text + HTML). Built with the classic MIME classes: the
        modern header parser costs milliseconds per message, which a busy outbox feels."""
        text = MIMEText(self.text, "plain", UTF8_QP)
        if self.html:
            msg = MIMEMultipart("alternative")
            msg.attach(text)
            msg.attach(MIMEText(self.html, "html", UTF8_QP))
        else:
            msg = text
        msg["From"] = _mailbox(self.sender)
        msg["To"] = _mailbox(self.to)
        subject = header_safe(self.subject)
        msg["Subject"] = subject if subject.isascii() else Header(subject, "utf-8")
        msg["Date"] = format_datetime(clock.now().replace(tzinfo=UTC))
        msg["Message-ID"] = header_safe(self.message_id)
        if self.reply_to:
            msg["Reply-To"] = _mailbox(self.reply_to)
        for name, value in self.all_headers().items():
            msg[name] = value
        return msg


def _mailbox(value: str) -> str:
    """One address header, its display name encoded when it is not plain ASCII."""
    name, address = parseaddr(header_safe(value))
    return formataddr((name, address), charset="utf-8")
