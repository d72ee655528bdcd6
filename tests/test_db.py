"""The database: SQLite settings that keep queued email through a power cut, migrations."""

import subprocess
import sys
import threading

import pytest

from outofoffice import db, migrations, models
from outofoffice.instance import Instance, InstanceError


def pragma(name):
    return db.database.execute_sql(f"PRAGMA {name}").fetchone()[0]


@pytest.mark.sqlite_only
def test_sqlite_runs_with_wal_foreign_keys_full_sync_and_a_busy_timeout(conn):
    assert pragma("journal_mode") == "wal"
    assert pragma("foreign_keys") == 1
    assert pragma("synchronous") == 2
    assert pragma("busy_timeout") >= 5000
    assert pragma("secure_delete") == 1


def test_every_table_of_the_product_exists(conn):
    tables = set(db.database.get_tables())
    for model in models.MODELS:
        assert model._meta.table_name in tables
    assert {"outbox", "magic_link", "session", "slug_hold", "ip_record", "request_count"} <= tables


def test_migrating_twice_changes_nothing(conn):
    assert migrations.current_version() == migrations.LATEST
    assert migrations.migrate() == []
    assert migrations.current_version() == migrations.LATEST


def test_a_database_from_a_newer_release_is_refused(instance):
    with db.connection():
        db.database.execute_sql("UPDATE schema_version SET version = 999")
    with pytest.raises(InstanceError, match="newer"):
        Instance.open(instance.config, migrate=True)


def test_an_outdated_database_is_not_served_without_migrating(instance):
    with db.connection():
        db.database.execute_sql("UPDATE schema_version SET version = 0")
    with pytest.raises(InstanceError, match="outofoffice migrate"):
        Instance.open(instance.config)


def test_deleting_an_account_cascades(owners):
    alpha, beta = owners
    assert models.Category.select().where(models.Category.account == alpha).count() > 0
    alpha.delete_instance()
    assert models.Category.select().where(models.Category.account == alpha).count() == 0
    assert models.Category.select().where(models.Category.account == beta).count() > 0


def test_a_version_1_database_migrates_to_the_latest(instance):
    with db.connection():
        db.database.drop_tables([models.JobRun])
        db.database.execute_sql("UPDATE schema_version SET version = 1")
        assert migrations.migrate() == [
            f"{n}: {name}" for n, (name, _) in enumerate(migrations.STEPS, 1) if n > 1
        ]
        assert models.JobRun.table_exists()
        assert migrations.current_version() == migrations.LATEST


@pytest.mark.postgresql_only
def test_requests_share_a_pool_of_postgresql_connections(make_instance):
    """Each request used to open a connection of its own; now they come from a pool of
    [storage] pool_size per process."""
    from tests.conftest import client

    instance = make_instance(storage={"pool_size": 3})
    app = client(instance)
    for _ in range(20):
        app.get("/privacy")
    with db.connection():
        (count,) = db.database.execute_sql(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name = 'outofoffice'"
        ).fetchone()
    assert 1 <= count <= 3


@pytest.mark.postgresql_only
def test_the_postgresql_password_comes_from_password_file(tmp_path, postgres_cluster):
    from click.testing import CliRunner

    from outofoffice.cli import cli
    from tests.conftest import base_sections, write_config

    role = postgres_cluster.PASSWORD_ROLE
    name = postgres_cluster.create_database(owner=role)
    url = f"postgresql://{role}@127.0.0.1:{postgres_cluster.port}/{name}"
    try:
        (tmp_path / "db-password").write_text(postgres_cluster.PASSWORD + "\n")
        good = write_config(
            tmp_path / "good.toml",
            base_sections(tmp_path, storage={"database": url, "password_file": "db-password"}),
        )
        result = CliRunner().invoke(cli, ["--config", str(good), "migrate"])
        assert result.exit_code == 0, result.output
        result = CliRunner().invoke(cli, ["--config", str(good), "check"])
        assert result.exit_code == 0, result.output
        assert "PostgreSQL 1" in result.output and postgres_cluster.PASSWORD not in result.output
        (tmp_path / "wrong").write_text("not-it\n")
        bad = write_config(
            tmp_path / "bad.toml",
            base_sections(tmp_path, storage={"database": url, "password_file": "wrong"}),
        )
        result = CliRunner().invoke(cli, ["--config", str(bad), "check"])
        assert result.exit_code == 1
        assert "password authentication failed" in result.output
        assert "not-it" not in result.output
    finally:
        db.close_all()
        postgres_cluster.drop_database(name)


@pytest.mark.sqlite_only
def test_a_write_waits_for_another_process_s_writer_and_goes_once_it_lets_go(make_instance):
    """Every process on one SQLite file queues for a lock beside it: while another
    process holds it a write waits (and is refused after write_wait_seconds, naming
    why); once it is let go, the write that waited goes."""
    make_instance(storage={"write_wait_seconds": 1})
    lock_file = db.database.obj.writes.across.path
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(lock_file)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        refused = pytest.raises(db.Unavailable, match="another process of this installation")
        with db.connection(), refused, db.write():
            models.Setting.create(name="refused", value="")
        done = []

        def write() -> None:
            with db.connection(), db.write():
                models.Setting.create(name="waited", value="")
            done.append(True)

        waiting = threading.Thread(target=write)
        waiting.start()
        holder.stdin.close()  # the other process lets go
        waiting.join(timeout=5)
        assert done == [True]
    finally:
        holder.kill()
        holder.wait()
    with db.connection():
        assert models.Setting.get_or_none(models.Setting.name == "waited") is not None
        assert models.Setting.get_or_none(models.Setting.name == "refused") is None


HOLD_LOCK = """
import fcntl, sys
f = open(sys.argv[1], "a")
fcntl.flock(f, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.read()
"""


@pytest.mark.sqlite_only
def test_another_process_wakes_the_sqlite_scheduler_however_deep_its_data_dir(
    tmp_path, make_instance
):
    deep = tmp_path / ("d" * 60) / ("e" * 60)  # a socket address holds 108 bytes
    make_instance(storage={"data_dir": str(deep)})
    woken = threading.Event()
    listener = db.listener(woken.set)
    listener.start()
    try:
        script = (
            "import sys; from outofoffice import config, db; "
            "db.bind(config.load(sys.argv[1])); db.notify()"
        )
        config_path = tmp_path / "config.toml"
        subprocess.run([sys.executable, "-c", script, str(config_path)], check=True, timeout=60)
        assert woken.wait(10)
    finally:
        listener.stop()
    assert not listener.is_alive()
    assert not list(deep.glob("*-wake.sock"))  # gone with the scheduler that made it
