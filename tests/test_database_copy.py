"""Moving an installation from SQLite to PostgreSQL with `outofoffice copy-database`:
every row comes along with its id, so links already emailed keep working."""

import subprocess
import sys

import pytest

from outofoffice import accounts, config, db, dispatch, owner_setup
from outofoffice.database_copy import COPIED
from outofoffice.instance import Instance
from outofoffice.models import Account, Category
from tests.conftest import ALPHA, DATABASE, Mailbox, base_sections, request_form, write_config
from tests.servers import run_cli

pytestmark = pytest.mark.postgresql_only


def open_instance(path):
    return Instance.open(config.load(path), migrate=True, create=True)


def counts() -> dict[str, int]:
    with db.connection():
        return {m._meta.table_name: m.select().count() for m in COPIED}


def test_copy_database_moves_a_sqlite_install_and_its_emailed_links_keep_working(tmp_path):
    sqlite_file = tmp_path / "data" / "outofoffice.db"
    on_sqlite = write_config(
        tmp_path / "sqlite.toml",
        base_sections(tmp_path, storage={"database": f"sqlite:///{sqlite_file}"}),
    )
    on_postgresql = write_config(tmp_path / "pg.toml", base_sections(tmp_path))
    old = open_instance(on_sqlite)
    with db.connection():
        alpha = accounts.create_account(**ALPHA)
        vera = owner_setup.save(
            alpha, owner_setup.KINDS["vendors"], {"name": "Vera", "email": "vera@plumb.example"}
        )
        elm = owner_setup.save(alpha, owner_setup.KINDS["subjects"], {"name": "Elm Street"})
        plumbing = Category.get(Category.account == alpha, Category.name == "Plumbing")
        owner_setup.create_route(alpha, "", str(plumbing.id), "always", [str(vera.id)])
        firm = {"elm": elm, "plumbing": plumbing}
        dispatch.submit(old, alpha, request_form(firm))
    box = Mailbox(old)
    (vendor_email,) = [m for m in box.deliver() if m["To"] == "vera@plumb.example"]
    accept = next(
        line.split("/v/", 1)[1]
        for line in Mailbox.text(vendor_email).splitlines()
        if line.startswith("Accept")
    )
    with db.connection():
        dispatch.submit(old, alpha, request_form(firm, phone="+1 555 0177"))  # still queued
    before = counts()

    out = run_cli(on_sqlite, "copy-database", DATABASE["url"])
    assert "dispatch:" in out and "copied" in out

    new = open_instance(on_postgresql)
    assert not db.is_sqlite()
    assert counts() == before
    with db.connection():
        link, changed = dispatch.act(new, accept)  # the link emailed before the move
        assert changed and link.dispatch.status == "accepted"
        later = dispatch.submit(
            new, Account.get(Account.slug == "alpha"), request_form(firm, phone="+1 555 0188")
        )
        assert later.dispatch.id == max(d.id for d in type(later.dispatch).select())
    box.instance = new  # the same mail folder: what arrives now was sent from PostgreSQL
    queued = [m["To"] for m in box.deliver()]
    assert queued.count("vera@plumb.example") == 2  # the one queued before, the new one


def test_copy_database_refuses_a_target_that_holds_accounts(tmp_path):
    sqlite_file = tmp_path / "data" / "outofoffice.db"
    on_sqlite = write_config(
        tmp_path / "sqlite.toml",
        base_sections(tmp_path, storage={"database": f"sqlite:///{sqlite_file}"}),
    )
    open_instance(on_sqlite)
    with db.connection():
        accounts.create_account(**ALPHA)
    run_cli(on_sqlite, "copy-database", DATABASE["url"])
    again = subprocess.run(
        [
            sys.executable,
            "-m",
            "outofoffice",
            "--config",
            str(on_sqlite),
            "copy-database",
            DATABASE["url"],
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert again.returncode == 1
    assert "the target database is not empty (account" in again.stderr
