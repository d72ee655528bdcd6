"""Rendered public pages kept per app, so a page that changes only when the owner edits
it costs a lookup instead of a render. What differs per visitor (the routing form's
token) is cut out of the stored page and put back on every hit."""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any


class PageCache:
    """The most recently served LIMIT pages, each stored as the bytes around the value
    that changes per request (the form token; a status page has none), with what the
    page was made from that a hit needs again (the firm's card). The key must change
    whenever the page would (a version the database counts), so a change made by any
    process is a new key, never a stale page."""

    LIMIT = 2_000

    def __init__(self, limit: int = LIMIT):
        self.limit = limit
        # an owner who types this into a category name cannot guess it
        self.placeholder = "\x7f" + secrets.token_hex(8)
        self._pages: OrderedDict[Hashable, tuple[list[bytes], Any]] = OrderedDict()
        self._lock = threading.Lock()

    def page(
        self, key: Hashable, render: Callable[[str], tuple[str, Any]], value: str
    ) -> tuple[bytes, Any]:
        """The page for key with value in its place, and what render returned beside
        it; render(placeholder) makes both on a miss."""
        with self._lock:
            entry = self._pages.get(key)
            if entry is not None:
                self._pages.move_to_end(key)
        if entry is None:
            html, extra = render(self.placeholder)
            entry = ([piece.encode() for piece in html.split(self.placeholder)], extra)
            with self._lock:
                self._pages[key] = entry
                if len(self._pages) > self.limit:
                    self._pages.popitem(last=False)
        return value.encode().join(entry[0]), entry[1]
