"""A consistent copy of the SQLite database while the service runs.

The copy reads inside one read transaction, so it is the database exactly as it was
when the backup began; WAL lets the service keep writing meanwhile. It is checked
and renamed into place only when whole, and is readable by its owner only. Caller
details in it stay encrypted: restoring needs the secret key as well, which is kept
apart on purpose (a stolen backup alone reveals no caller).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from outofoffice.config import Config

PAGES_PER_STEP = 256


class BackupError(Exception):
    """The backup could not be made; the message says what to change."""


@dataclass(frozen=True)
class Backup:
    path: Path
    bytes: int
    schema_version: int
    dispatches: int


def sqlite_path(config: Config) -> Path:
    url = config.database_url
    if not url.startswith("sqlite:///"):
        raise BackupError(
            "backup copies SQLite databases; this instance uses "
            f"{config.database_display}: back that up with pg_dump"
        )
    return Path(url.removeprefix("sqlite:///"))


def backup(
    config: Config, target: Path, progress: Callable[[int, int], None] | None = None
) -> Backup:
    """Copy the database to target, a new file; progress(done, total) counts pages.

    The copy is built in a private folder beside the target and linked into place,
    which fails rather than overwrite: a file or link someone plants at the target
    or beside it is never written through."""
    source_path = sqlite_path(config)
    try:
        if not source_path.exists():
            raise BackupError(f"there is no database at {source_path} yet")
        if target.is_symlink() or target.exists():
            raise BackupError(f"{target} already exists; choose a new file name")
        workdir = Path(tempfile.mkdtemp(prefix=".outofoffice-backup-", dir=target.parent))
    except OSError as exc:
        raise BackupError(f"cannot back up to {target}: {exc.strerror}") from None
    partial = workdir / "copy.db"
    try:
        os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        result = _copy(source_path, partial, progress)
        try:
            os.link(partial, target)
        except FileExistsError:
            raise BackupError(f"{target} already exists; choose a new file name") from None
        directory = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # the new name itself survives a power cut
        finally:
            os.close(directory)
    except OSError as exc:
        raise BackupError(f"cannot back up to {target}: {exc.strerror}") from None
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return Backup(target, target.stat().st_size, *result)


def _copy(source_path: Path, partial: Path, progress) -> tuple[int, int]:
    source = sqlite3.connect(source_path, timeout=30, isolation_level=None)
    copy = sqlite3.connect(partial, isolation_level=None)
    try:
        source.execute("BEGIN")  # one snapshot for the whole copy
        source.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()

        def step(status: int, remaining: int, total: int) -> None:
            if progress:
                progress(total - remaining, total)

        source.backup(copy, pages=PAGES_PER_STEP, progress=step)
        source.execute("COMMIT")
        copy.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
        problems = copy.execute("PRAGMA quick_check").fetchall()
        if problems != [("ok",)]:
            raise BackupError(f"the copy failed its check: {problems[0][0]}")
        version = copy.execute("SELECT version FROM schema_version").fetchone()[0]
        dispatches = copy.execute('SELECT COUNT(*) FROM "dispatch"').fetchone()[0]
    except sqlite3.Error as exc:
        raise BackupError(f"backup failed: {exc}") from None
    finally:
        copy.close()
        source.close()
    with open(partial, "rb") as fh:
        os.fsync(fh.fileno())
    return version, dispatches
