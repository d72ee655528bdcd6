"""The documents name real things: every test that docs/security.md cites as proof
exists, and every command the docs show (in code) exists."""

import ast
import re
from pathlib import Path

import click
import pytest

from outofoffice.cli import cli

pytestmark = pytest.mark.no_database

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def defined_tests(path: Path) -> set[str]:
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef):
            names |= {f"{node.name}::{f.name}" for f in node.body if isinstance(f, ast.FunctionDef)}
    return names


def test_every_test_cited_in_the_security_page_exists():
    text = (ROOT / "docs" / "security.md").read_text()
    cited = set(re.findall(r"(tests/[\w/]+\.py)::([\w:]+)", text))
    assert len(cited) > 50
    missing = [f"{f}::{t}" for f, t in cited if t not in defined_tests(ROOT / f)]
    assert not missing


def command_paths(group: click.Command, path=()):
    yield " ".join(path)
    for name, command in getattr(group, "commands", {}).items():
        yield from command_paths(command, (*path, name))


COMMAND = re.compile(
    r"(?<!-u )(?<![-\w/])outofoffice (?:--config \S+\s*(?:\\\s*)?)?([a-z][a-z-]+(?: [a-z][a-z-]+)?)"
)


def test_every_outofoffice_command_in_the_docs_exists():
    known = set(command_paths(cli))
    seen = 0
    for doc in DOCS:
        text = doc.read_text()
        code = re.findall(r"```.*?```", text, re.S) + re.findall(r"`[^`\n]+`", text)
        for found in COMMAND.findall("\n".join(code)):
            words = found.split()
            group = words[0] in ("accounts", "abuse", "outbox")
            assert " ".join(words[: 2 if group else 1]) in known, (doc.name, found)
            seen += 1
    assert seen > 40
