"""One outgoing email, and its RFC 5322 form."""

from __future__ import annotations

import binascii
import re
import secrets
from dataclasses import dataclass, field
from datetime import UTC
from email.header import Header
from email.utils import format_datetime, formataddr, getaddresses, parseaddr

from outofoffice import clock

CRLF = "\r\n"
HEADER_LINE = 78  # RFC 5322's recommended line length; longer values are folded

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

    def envelope(self) -> tuple[str, list[str]]:
        """SMTP's MAIL FROM and RCPT TO: the addresses of From and To."""
        return _address(self.sender), [_address(self.to)]

    def to_bytes(self) -> bytes:
        """The message as sent: multipart/alternative (text + HTML), each part UTF-8 in
        quoted-printable (readable source, and what mail filters expect of text), CRLF
        line ends. Written out directly: the email package's generator and header
        folding cost about a millisecond a message, which a busy outbox feels."""
        headers = [
            ("From", _mailbox(self.sender)),
            ("To", _mailbox(self.to)),
            ("Subject", _encoded("Subject", header_safe(self.subject))),
            ("Date", format_datetime(clock.now().replace(tzinfo=UTC))),
            ("Message-ID", header_safe(self.message_id)),
            *([("Reply-To", _mailbox(self.reply_to))] if self.reply_to else []),
            *((name, _encoded(name, value)) for name, value in self.all_headers().items()),
            ("MIME-Version", "1.0"),
        ]
        lines = [f"{name}: {value}" for name, value in headers if name]
        if self.html:
            boundary = "==oop-" + secrets.token_hex(12)  # "=" never survives in QP text
            lines += [
                f'Content-Type: multipart/alternative; boundary="{boundary}"',
                "",
                f"--{boundary}",
                *_part("plain", self.text),
                f"--{boundary}",
                *_part("html", self.html),
                f"--{boundary}--",
                "",
            ]
        else:
            lines += _part("plain", self.text)
        return CRLF.join(lines).encode("ascii")


def _part(subtype: str, body: str) -> list[str]:
    # every line end one kind before encoding: a lone CR (a caller can type one) would
    # otherwise travel as it is, which relays refuse and some read as the end of data
    lines = body.replace("\r\n", "\n").replace("\r", "\n")
    encoded = binascii.b2a_qp(lines.encode("utf-8"), istext=True).decode("ascii")
    return [
        f'Content-Type: text/{subtype}; charset="utf-8"',
        "Content-Transfer-Encoding: quoted-printable",
        "",
        *encoded.split("\n"),
    ]


def _encoded(name: str, value: str) -> str:
    """A header value as it may travel: RFC 2047 words when it is not plain ASCII, and
    folded when its line would be long."""
    if value.isascii() and len(name) + 2 + len(value) <= HEADER_LINE:
        return value
    charset = "us-ascii" if value.isascii() else "utf-8"
    header = Header(value, charset, maxlinelen=HEADER_LINE, header_name=name)
    return header.encode(linesep=CRLF)


def _address(value: str) -> str:
    return parseaddr(header_safe(value))[1]


def _mailbox(value: str) -> str:
    """One address header, its display name encoded when it is not plain ASCII."""
    name, address = parseaddr(header_safe(value))
    return formataddr((name, address), charset="utf-8")
