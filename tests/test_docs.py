"""The documents name real things: every test that docs/security.md cites as proof
exists, and every command the admin docs tell them to run exists."""

import ast
import re
from pathlib import Path

import click

from outofoffice.cli import cli

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


def test_every_outofoffice_command_in_the_docs_exists():
    known = set(command_paths(cli))
    for doc in DOCS:
        for line in re.findall(
            r"`?(?:sudo -u \w+ )?outofoffice ((?:[a-z][a-z-]+ ?){1,2})", doc.read_text()
        ):
            words = line.split()
            assert " ".join(words[:1]) in known or " ".join(words) in known, (doc.name, line)
            if words and words[0] in ("accounts", "abuse", "outbox") and len(words) > 1:
                assert " ".join(words[:2]) in known, (doc.name, line)
