"""The one way a channel posts to a provider's HTTP API (Twilio, ntfy), with the
standard library, and turns its answer into what the outbox acts on: a 429 waits as
asked, other 4xx are for good, 5xx and an unreachable server are tried again."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable

from outofoffice.channels.base import DeliveryError

TIMEOUT_SECONDS = 15


def retry_after(value: str | None, default: float | None = None) -> float | None:
    """A Retry-After in seconds; ``default`` when the provider gave none (or a date)."""
    value = (value or "").strip()
    return float(value) if value.replace(".", "", 1).isdigit() else default


def post(
    request: urllib.request.Request,
    *,
    who: str,
    error_words: Callable[[int, str], str],
    rate_limit_wait: float | None = None,
) -> tuple[int, dict]:
    """The status and the JSON object answered ({} when it is not one). ``who`` names
    the provider in an error; ``error_words(status, body)`` says what it refused, in
    words fit to keep (no secrets, no callers' numbers)."""
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:  # noqa: S310
            status = response.status
            body = response.read(64_000).decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        words = error_words(exc.code, exc.read(4000).decode("utf-8", "replace"))
        if exc.code == 429:
            wait = retry_after(exc.headers.get("Retry-After"), rate_limit_wait)
            raise DeliveryError(words, retry_after=wait, status=429) from None
        raise DeliveryError(words, permanent=exc.code < 500, status=exc.code) from None
    except (urllib.error.URLError, OSError) as exc:
        raise DeliveryError(f"cannot reach {who}: {getattr(exc, 'reason', exc)}") from None
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    return status, parsed if isinstance(parsed, dict) else {}
