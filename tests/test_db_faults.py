"""Faults of the database under a write: the write lock held by another process, a full
disk, a database that refuses writes. A write waits at most [storage] write_wait_seconds
and then says why; pages that only read never wait for it; the caller who could not be
served is told to phone the firm and keeps what they typed."""

from __future__ import annotations

import gc
import logging
import sqlite3
import threading
import time
from contextlib import contextmanager

import pytest

from outofoffice import accounts, db
from outofoffice.models import Dispatch, Setting
from tests.conftest import DATABASE, path_of, request_form, sign_in
from tests.test_caller_web import vendor_paths
from tests.test_route_table import dashboard_routes, fill, object_ids

WAIT = 1  # [storage] write_wait_seconds in these tests
PHONE = "+1 312 555 0140"


@pytest.fixture
def instance(make_instance):
    """Four request threads: at most two of them may wait to write."""
    return make_instance(storage={"write_wait_seconds": WAIT}, server={"threads": 4})


@pytest.fixture
def alpha(firm):
    """Alpha's routing (conftest's firm), and the office phone callers are sent to."""
    with db.connection():
        firm["account"].contact_phone = PHONE
        firm["account"].save()
    return firm


def database_path(instance) -> str:
    return instance.config.database_url.removeprefix("sqlite:///")


@contextmanager
def write_lock_held(instance):
    """Another connection holds SQLite's write lock, as a backup script or a sqlite3
    shell in another process would."""
    other = sqlite3.connect(database_path(instance), isolation_level=None, timeout=10)
    other.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        other.execute("ROLLBACK")
        other.close()


@contextmanager
def writes_refused(instance, database_kind):
    """The database takes no write: on SQLite its write lock is held elsewhere; on
    PostgreSQL the database is read-only, as a standby is."""
    if database_kind == "sqlite":
        with write_lock_held(instance):
            yield "held by another process"
        return
    import psycopg2

    name = DATABASE["url"].rsplit("/", 1)[1]
    admin = psycopg2.connect(DATABASE["url"])
    admin.autocommit = True
    try:
        with admin.cursor() as cursor:
            cursor.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
        db.close_all()  # the pool connects afresh, read-only
        yield "refuses writes"
    finally:
        with admin.cursor() as cursor:
            cursor.execute("SET default_transaction_read_only = off")
            cursor.execute(f'ALTER DATABASE "{name}" RESET default_transaction_read_only')
        admin.close()
        db.close_all()


def a_write():
    with db.write():
        value = str(time.monotonic())
        Setting.insert(name="probe", value=value).on_conflict(
            conflict_target=[Setting.name], update={Setting.value: value}
        ).execute()


def timed(call) -> tuple[float, BaseException | None]:
    began = time.monotonic()
    try:
        call()
    except Exception as exc:
        return time.monotonic() - began, exc
    return time.monotonic() - began, None


# --- the bounded wait -----------------------------------------------------------------


@pytest.mark.sqlite_only
def test_a_write_waits_at_most_write_wait_seconds_then_names_the_held_lock(instance, conn):
    with write_lock_held(instance):
        took, error = timed(a_write)
    assert isinstance(error, db.Unavailable) and error.cause == "lock"
    assert "write lock is held by another process" in str(error)
    assert WAIT - 0.2 <= took < WAIT + 1.0
    a_write()  # released: writes go through again


@pytest.mark.sqlite_only
def test_writers_queued_behind_a_waiting_one_wait_no_longer_in_all(instance):
    """The first writer waits in SQLite's busy handler, the second in this process's
    queue behind it; neither waits more than write_wait_seconds from its own start."""
    results: dict[str, tuple] = {}

    def writer(name):
        with db.connection():
            results[name] = timed(a_write)

    with write_lock_held(instance):
        first = threading.Thread(target=writer, args=("first",))
        first.start()
        time.sleep(0.5)  # the second comes while the first already waits
        second = threading.Thread(target=writer, args=("second",))
        second.start()
        first.join(5)
        second.join(5)
    for name in ("first", "second"):
        took, error = results[name]
        assert isinstance(error, db.Unavailable), name
        assert took < WAIT + 0.5, (name, took)


@contextmanager
def two_writes_ahead():
    """One write in its transaction until the block ends, and one queued behind it:
    with 4 threads, all the room there is for writes waiting."""
    inside, done = threading.Barrier(3), threading.Event()

    def holder():
        with db.connection(), db.write():
            inside.wait(5)
            done.wait(5)

    def queued():
        with db.connection():
            inside.wait(5)
            a_write()

    threads = [threading.Thread(target=holder), threading.Thread(target=queued)]
    for thread in threads:
        thread.start()
    inside.wait(5)
    time.sleep(0.05)  # the second is in the queue by now
    try:
        yield
    finally:
        done.set()
        for thread in threads:
            thread.join(5)


@pytest.mark.sqlite_only
def test_a_refused_write_leaves_no_cursor_for_the_garbage_collector(instance, conn):
    """The failed statement's cursor goes with the write: collected later, in whatever
    thread, its reset would wait for the connection while holding the GIL, and another
    thread may be using that connection for a write that waits for the lock."""
    gc.collect()
    gc.disable()
    try:
        with write_lock_held(instance):
            _, error = timed(a_write)
        del error
        left = [o for o in gc.get_objects() if isinstance(o, sqlite3.Cursor)]
    finally:
        gc.enable()
    assert left == []


@pytest.mark.sqlite_only
def test_beyond_threads_less_two_a_writer_waits_while_the_writes_ahead_move(instance):
    results = []

    def third():
        with db.connection():
            results.append(timed(a_write))

    with two_writes_ahead():
        thread = threading.Thread(target=third)
        thread.start()
        time.sleep(0.1)  # a burst: the two ahead finish while the third waits for room
    thread.join(5)
    took, error = results[0]
    assert error is None and took < WAIT


@pytest.mark.sqlite_only
def test_once_the_writes_ahead_are_stuck_a_writer_beyond_them_is_refused_at_once(instance):
    """With 4 threads two may wait to write; once they are stuck (another process
    holds the lock), a third is refused at once, so two threads stay free for reads."""
    with two_writes_ahead(), db.connection():
        time.sleep(db.STUCK_SECONDS)
        took, error = timed(a_write)
    assert isinstance(error, db.Unavailable)
    assert "wait for it already" in str(error)
    assert took < 0.1


@pytest.mark.sqlite_only
def test_a_write_inside_a_write_joins_it_and_waits_for_nothing(instance, conn):
    with db.write():
        Setting.create(name="outer", value="1")
        with db.write():
            Setting.create(name="inner", value="1")
    assert Setting.select().where(Setting.name.in_(["outer", "inner"])).count() == 2


# --- the cause, not a failed rollback ---------------------------------------------------


@pytest.mark.sqlite_only
def test_a_full_disk_is_named_and_not_hidden_by_the_failed_rollback(instance, conn):
    """SQLite rolls back by itself on a full disk; peewee's ROLLBACK after it used to
    raise "cannot rollback - no transaction is active" in place of the cause.
    max_page_count makes this database full the way a full disk does (SQLITE_FULL)."""
    pages = db.database.execute_sql("PRAGMA page_count").fetchone()[0]
    db.database.execute_sql(f"PRAGMA max_page_count = {pages}")
    try:
        with pytest.raises(db.Unavailable) as raised, db.write():
            for n in range(400):
                Setting.create(name=f"filler-{n}", value="x" * 2000)
    finally:
        db.database.execute_sql("PRAGMA max_page_count = 4294967294")
    assert raised.value.cause == "disk_full"
    assert f"the disk holding the database {database_path(instance)} is full" in str(raised.value)
    assert "rollback" not in str(raised.value) and "rollback" not in str(raised.value.__cause__)
    assert Setting.select().where(Setting.name.startswith("filler-")).count() == 0
    a_write()  # the connection is fit for the next write


@pytest.mark.sqlite_only
def test_a_database_that_refuses_writes_is_named(instance, conn):
    db.database.execute_sql("PRAGMA query_only = 1")
    try:
        _, error = timed(a_write)
    finally:
        db.database.execute_sql("PRAGMA query_only = 0")
    assert isinstance(error, db.Unavailable) and error.cause == "read_only"
    assert "cannot be written" in str(error)


def test_an_error_of_the_statement_itself_is_raised_as_it_is(instance, conn):
    Setting.create(name="taken", value="1")
    with pytest.raises(db.peewee.IntegrityError), db.write():
        Setting.create(name="taken", value="2")
    a_write()


def test_an_error_inside_a_write_is_not_replaced_by_the_rollback(instance, conn):
    with pytest.raises(LookupError, match="the caller's own error"), db.write():
        Setting.create(name="kept?", value="1")
        raise LookupError("the caller's own error")
    assert not Setting.select().where(Setting.name == "kept?").exists()


# --- what callers, vendors and owners see -----------------------------------------------


def test_a_refused_request_answers_503_with_the_form_kept_and_the_firms_phone(
    app, alpha, database_kind, instance, caplog
):
    form = request_form(
        alpha, category=str(alpha["locked"].id), description="Locked out, baby inside"
    )
    with writes_refused(instance, database_kind) as cause, caplog.at_level(logging.WARNING):
        page = app.post("/r/alpha", form, status=503)
    assert page.headers["Retry-After"].isdigit()
    notice = page.html.find(id="error-summary")
    assert "We could not take your request just now" in notice.text
    assert "Please phone Alpha Properties at +1 312 555 0140" in notice.text
    assert notice.find("a")["href"] == "tel:+13125550140"
    assert page.html.find(id="f-name")["value"] == "Tina Tenant"
    assert page.html.find(id="f-phone")["value"] == "+1 555 0199"
    assert page.html.find(id="f-description").text == "Locked out, baby inside"
    assert page.html.find(id="f-subject").find("option", selected=True)["value"] == form["subject"]
    assert (
        page.html.find("input", {"name": "category", "checked": True})["value"] == form["category"]
    )
    told = [r.getMessage() for r in caplog.records if cause in r.getMessage()]
    assert len(told) == 1 and "Tina" not in told[0] and "baby" not in told[0]
    with db.connection():
        assert Dispatch.select().count() == 0
    # the caller sends it again, from the same page, once the database takes writes
    assert page.forms[0].submit().status_int == 303
    with db.connection():
        assert Dispatch.select().count() == 1


@pytest.mark.sqlite_only
def test_pages_that_only_read_answer_while_the_write_lock_is_held(app, alpha, instance, mailbox):
    sent = app.post("/r/alpha", request_form(alpha))
    status_path = sent.headers["Location"]
    accept = vendor_paths(mailbox, "vera@plumb.example")["Accept"]
    sign_in(app, instance, alpha["account"])
    with db.connection():
        d = Dispatch.get()
        sign_in_link = path_of(accounts.login_link(instance, alpha["account"]))
    ids = object_ids(instance, alpha, d)
    public = ["/", "/privacy", "/login", "/signup", sign_in_link]
    paths = ["/r/alpha", status_path, accept, *public] + [
        fill(rule, ids) for rule in dashboard_routes(app, "GET")
    ]
    assert len(paths) > 12
    with write_lock_held(instance):
        for path in paths:
            took, _ = timed(lambda path=path: app.get(path, status=200))
            # a page that wrote would wait write_wait_seconds, then answer 503
            assert took < WAIT - 0.2, (path, took)


@pytest.mark.sqlite_only
def test_a_vendor_answer_not_recorded_gets_a_503_and_the_button_again(
    app, alpha, instance, mailbox
):
    app.post("/r/alpha", request_form(alpha))
    accept = vendor_paths(mailbox, "vera@plumb.example")["Accept"]
    form = app.get(accept).forms[0]
    with write_lock_held(instance):
        page = form.submit(status=503)
    assert page.headers["Retry-After"].isdigit()
    assert "Your answer was not recorded" in page.text and "Try again in a moment" in page.text
    assert [b.text.strip() for b in page.html.find_all("button")] == ["Accept"]
    with db.connection():
        assert Dispatch.get().status == "sent"
    done = page.forms[0].submit()
    assert "you accepted this request" in done.text
    with db.connection():
        assert Dispatch.get().status == "accepted"


@pytest.mark.sqlite_only
def test_other_pages_get_an_honest_503_with_retry_after(app, alpha, instance):
    form = app.get("/login").forms[0]
    form["email"] = "ann@alpha.example"
    with write_lock_held(instance):
        refused = form.submit(status=503)
    assert refused.headers["Retry-After"].isdigit()
    assert "nothing changed. Try again in a minute" in refused.text


@pytest.mark.sqlite_only
def test_the_write_ahead_log_is_bounded_and_the_busy_timeout_follows_the_config(make_instance):
    make_instance()  # the defaults

    def pragma(name):
        return db.database.execute_sql(f"PRAGMA {name}").fetchone()[0]

    with db.connection():
        assert pragma("wal_autocheckpoint") == 1000
        assert 0 < pragma("journal_size_limit") <= 16 * 1024 * 1024
        assert pragma("busy_timeout") == 5000  # [storage] write_wait_seconds = 5
