"""Where a firm is: its country, and the number a caller in danger dials there.

A firm's country defaults from its time zone (the system's zone.tab, which names each
zone's country). Callers see that country's emergency numbers, the local one first
(999 in the United Kingdom, and 112, which every mobile phone in Europe reaches).
"""

from __future__ import annotations

import re
import zoneinfo
from functools import cache
from pathlib import Path

# code: (name, the numbers for a danger to life: the one to call first, then another
# that works there too)
COUNTRIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "AR": ("Argentina", ("911",)),
    "AT": ("Austria", ("112",)),
    "AU": ("Australia", ("000", "112")),
    "BE": ("Belgium", ("112",)),
    "BR": ("Brazil", ("192", "190")),
    "CA": ("Canada", ("911",)),
    "CH": ("Switzerland", ("112",)),
    "CL": ("Chile", ("131", "133")),
    "CO": ("Colombia", ("123",)),
    "CZ": ("Czechia", ("112",)),
    "DE": ("Germany", ("112",)),
    "DK": ("Denmark", ("112",)),
    "ES": ("Spain", ("112",)),
    "FI": ("Finland", ("112",)),
    "FR": ("France", ("112",)),
    "GB": ("United Kingdom", ("999", "112")),
    "GR": ("Greece", ("112",)),
    "HK": ("Hong Kong", ("999",)),
    "HU": ("Hungary", ("112",)),
    "IE": ("Ireland", ("112", "999")),
    "IL": ("Israel", ("101", "100")),
    "IN": ("India", ("112",)),
    "IT": ("Italy", ("112",)),
    "JP": ("Japan", ("119", "110")),
    "LU": ("Luxembourg", ("112",)),
    "MX": ("Mexico", ("911",)),
    "NL": ("Netherlands", ("112",)),
    "NO": ("Norway", ("112",)),
    "NZ": ("New Zealand", ("111",)),
    "PH": ("Philippines", ("911",)),
    "PL": ("Poland", ("112",)),
    "PR": ("Puerto Rico", ("911",)),
    "PT": ("Portugal", ("112",)),
    "RO": ("Romania", ("112",)),
    "SE": ("Sweden", ("112",)),
    "SG": ("Singapore", ("995", "999")),
    "SK": ("Slovakia", ("112",)),
    "US": ("United States", ("911",)),
    "ZA": ("South Africa", ("10111", "112")),
}
CODE = re.compile(r"[A-Z]{2}")  # ISO 3166-1 alpha-2
# A country this table does not know: 112 reaches the emergency services from any
# mobile phone in most of the world.
FALLBACK = ("112",)


def emergency_numbers(country: str) -> tuple[str, ...]:
    entry = COUNTRIES.get(country)
    return entry[1] if entry else FALLBACK


@cache
def _zone_countries() -> dict[str, str]:
    """Zone -> country code, from the first zone.tab on the zoneinfo path."""
    for folder in zoneinfo.TZPATH:
        path = Path(folder) / "zone.tab"
        if path.is_file():
            found = {}
            for line in path.read_text(encoding="utf-8").splitlines():
                fields = line.split("\t")
                if len(fields) >= 3 and not line.startswith("#"):
                    found[fields[2]] = fields[0]
            return found
    return {}


def of_timezone(timezone: str) -> str:
    """The country a time zone is in ("" for UTC and the like)."""
    return _zone_countries().get(timezone, "")


def choices() -> list[tuple[str, str]]:
    """(code, name) for the settings' list, by name."""
    return sorted(((code, name) for code, (name, _) in COUNTRIES.items()), key=lambda c: c[1])
