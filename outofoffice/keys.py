"""The secret key and everything derived from it.

The key file holds one base64 key per line, newest first: the first encrypts and
signs, the others still decrypt (rotation). Each purpose gets its own sub-key through
HKDF, so a CSRF token can never be replayed as an action link.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import stat
import tempfile
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_BYTES = 32
PURPOSES = (
    "csrf",
    "action-link",
    "status-link",
    "form-token",
    "encryption",
    "phone-digest",
    "key-check",
    "joined",
    "billing-reference",  # names an account to Stripe (billing/lifecycle.py)
    "billing",  # names a subscription's cancellation in the outbox, not by its id
)


class KeyFileError(Exception):
    """The key file is missing, unreadable, malformed or too open."""


def new_token() -> str:
    return secrets.token_urlsafe(32)


def new_push_topic() -> str:
    """A vendor's ntfy topic: whoever knows it can read the vendor's notifications (on
    ntfy.sh a topic is its password), so it is as unguessable as a token."""
    return "ooo-" + secrets.token_urlsafe(18)


def hash_token(token: str) -> str:
    """How every bearer token is stored: sha256, hex."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def same(a: str | bytes, b: str | bytes) -> bool:
    if isinstance(a, str):
        a = a.encode("utf-8", "surrogatepass")
    if isinstance(b, str):
        b = b.encode("utf-8", "surrogatepass")
    return hmac.compare_digest(a, b)


def _new_key_line() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(KEY_BYTES)).decode() + "\n"


def add_key(path: Path) -> None:
    """Put a new key first in the key file; older keys stay below it so what they
    encrypted or signed is still readable. Atomic, 0600, and owned by whoever owned the
    file before (an admin running this as root must not take the key from the service)."""
    before = path.stat()
    text = _new_key_line() + path.read_text(encoding="ascii")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".secret-")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
        if (before.st_uid, before.st_gid) != (os.getuid(), os.getgid()):
            os.fchown(fh.fileno(), before.st_uid, before.st_gid)
    os.replace(tmp, path)


def create_key_file(path: Path) -> bool:
    """Write a fresh key with mode 0600 unless one exists; True when it wrote one. The
    key is whole before it has its name (linked into place), so a process starting at
    the same moment reads either no file or a complete one, never a half-written one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".secret-")  # 0600
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(_new_key_line())
            fh.flush()
            os.fsync(fh.fileno())
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        os.unlink(tmp)
    return True


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Keys:
    def __init__(self, masters: list[bytes], path: Path | None = None):
        if not masters:
            raise KeyFileError("no key")
        self._masters = masters
        self._derived: dict[tuple[int, str], bytes] = {}
        self.path = path
        self._loaded_at = path.stat().st_mtime_ns if path else 0

    @classmethod
    def load(cls, path: Path) -> Keys:
        try:
            mode = path.stat().st_mode
            lines = path.read_text(encoding="ascii").split()
        except FileNotFoundError:
            raise KeyFileError(
                f"{path}: secret key file not found (run `outofoffice init`)"
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyFileError(f"{path}: cannot read the secret key: {exc}") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyFileError(f"{path}: secret key is readable by others; chmod 600 it")
        try:
            masters = [_unb64(line) for line in lines]
        except ValueError:
            raise KeyFileError(f"{path}: not a key file (one base64 key per line)") from None
        if not masters or any(len(m) < KEY_BYTES for m in masters):
            raise KeyFileError(f"{path}: each key must be at least {KEY_BYTES} bytes")
        return cls(masters, path)

    @classmethod
    def open(cls, path: Path) -> Keys:
        """Load the key, creating it first if this is the first start."""
        create_key_file(path)
        return cls.load(path)

    def subkey(self, purpose: str, index: int = 0) -> bytes:
        if purpose not in PURPOSES:
            raise ValueError(f"unknown key purpose {purpose!r}")
        cached = self._derived.get((index, purpose))
        if cached is None:
            hkdf = HKDF(
                algorithm=hashes.SHA256(),
                length=32,
                salt=None,
                info=b"outofoffice/" + purpose.encode(),
            )
            cached = self._derived[(index, purpose)] = hkdf.derive(self._masters[index])
        return cached

    def sign(self, purpose: str, message: str) -> str:
        mac = hmac.new(self.subkey(purpose), message.encode("utf-8"), hashlib.sha256)
        return _b64(mac.digest())

    def verify(self, purpose: str, message: str, signature: str, reload: bool = True) -> bool:
        """Constant-time check against every key, so rotation keeps old links valid; on
        a miss the key file is read again once, in case another process rotated it."""
        for index in range(len(self._masters)):
            mac = hmac.new(self.subkey(purpose, index), message.encode("utf-8"), hashlib.sha256)
            if same(_b64(mac.digest()), signature):
                return True
        if reload and self.path and self._file_changed():
            self._reload()
            return self.verify(purpose, message, signature, reload=False)
        return False

    def _file_changed(self) -> bool:
        try:
            return self.path.stat().st_mtime_ns != self._loaded_at
        except OSError:
            return False

    def _reload(self) -> None:
        fresh = Keys.load(self.path)
        self._masters, self._derived = fresh._masters, {}
        self._loaded_at = fresh._loaded_at

    def _key_id(self, index: int) -> str:
        return hashlib.sha256(self.subkey("encryption", index)).hexdigest()[:8]

    def encrypt(self, plaintext: str) -> str:
        """AES-256-GCM, tagged with the key it was made with."""
        nonce = secrets.token_bytes(12)
        sealed = AESGCM(self.subkey("encryption")).encrypt(nonce, plaintext.encode(), None)
        return f"v1.{self._key_id(0)}.{_b64(nonce + sealed)}"

    def is_current(self, token: str) -> bool:
        """Was this value encrypted with the newest key?"""
        return token.split(".", 2)[1:2] == [self._key_id(0)]

    def decrypt(self, token: str) -> str:
        try:
            version, key_id, body = token.split(".", 2)
            raw = _unb64(body)
        except ValueError:
            raise KeyFileError("not an encrypted value") from None
        if self.path and key_id not in {self._key_id(i) for i in range(len(self._masters))}:
            self._reload()  # `outofoffice rotate-key` ran while this process was up
        for index in range(len(self._masters)):
            if version == "v1" and self._key_id(index) == key_id:
                try:
                    aead = AESGCM(self.subkey("encryption", index))
                    return aead.decrypt(raw[:12], raw[12:], None).decode()
                except InvalidTag:
                    raise KeyFileError("an encrypted value was altered") from None
        raise KeyFileError("encrypted with a key this instance no longer has")
