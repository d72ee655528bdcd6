"""One Jinja2 environment for pages and emails; HTML is always autoescaped."""

import re
from functools import cache
from pathlib import Path
from urllib.parse import quote_plus

import jinja2

from outofoffice import countries

TEMPLATES = Path(__file__).parent / "templates"
NOT_DIALLED = re.compile(r"[^0-9+*#]")


def tel(phone: str) -> str:
    """A tel: URL for a number as people type it ("+1 (312) 555-0140"); only digits,
    a leading + and the keypad's * and # survive, so nothing else reaches the dialler."""
    digits = NOT_DIALLED.sub("", phone or "")
    return "tel:" + (digits[0] + digits[1:].replace("+", "") if digits else "")


def maps(address: str) -> str:
    """A directions link that phones open in their own maps app."""
    return "https://www.google.com/maps/search/?api=1&query=" + quote_plus(address)


def emergency(firm) -> tuple[str, ...]:
    """The numbers a caller of this firm dials in danger (its country's)."""
    return countries.emergency_numbers(getattr(firm, "country", "") or "")


@cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=jinja2.select_autoescape(
            enabled_extensions=("html",), disabled_extensions=("txt",), default=True
        ),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["tel"] = tel
    env.filters["maps"] = maps
    env.filters["emergency"] = emergency
    return env


def render(name: str, **context) -> str:
    return environment().get_template(name).render(**context)


def render_email(name: str, **context) -> tuple[str, str]:
    """The text and HTML parts of email ``name``."""
    return render(f"email/{name}.txt", **context), render(f"email/{name}.html", **context)
