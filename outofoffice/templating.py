"""One Jinja2 environment for pages and emails; HTML is always autoescaped."""

from functools import cache
from pathlib import Path

import jinja2

TEMPLATES = Path(__file__).parent / "templates"


@cache
def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=jinja2.select_autoescape(
            enabled_extensions=("html",), disabled_extensions=("txt",), default=True
        ),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render(name: str, **context) -> str:
    return environment().get_template(name).render(**context)


def render_email(name: str, **context) -> tuple[str, str]:
    """The text and HTML parts of email ``name``."""
    return render(f"email/{name}.txt", **context), render(f"email/{name}.html", **context)
