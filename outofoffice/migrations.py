"""Schema versions: an ordered list of steps, each applied in its own transaction.

Step N takes a database at version N-1 to version N. ``schema_version`` holds one row.
A code release never serves a database it does not understand: an older schema is
migrated (``outofoffice migrate``; ``serve`` does it on start), a newer one is refused.

Step 1 creates the tables from models.py. Once a release changes a model, step 1
must keep creating the version-1 shape (copy the version-1 model definitions into it)
and the change goes into a new step, so an old database and a new one end up alike.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import peewee

from outofoffice import countries, db, keys, models

log = logging.getLogger(__name__)


class SchemaError(Exception):
    pass


def _v1_initial(database: peewee.Database) -> None:
    database.create_tables(models.V1_MODELS)


def _v2_job_runs(database: peewee.Database) -> None:
    database.create_tables([models.JobRun])


def _add_missing_columns(database: peewee.Database, table: str, fields: dict) -> None:
    """Step 1 builds tables from today's models, so a database this release made may
    have a later step's columns already."""
    from playhouse.migrate import SchemaMigrator, migrate

    have = {column.name for column in database.get_columns(table)}
    real = database.obj if isinstance(database, peewee.DatabaseProxy) else database
    migrator = SchemaMigrator.from_database(real)  # older peewee knows no proxy
    migrate(
        *(
            migrator.add_column(table, name, field)
            for name, field in fields.items()
            if name not in have
        )
    )


def _v3_many_processes(database: peewee.Database) -> None:
    """Claims on outbox rows, the processes' heartbeats, which key wrote the data."""
    fields = {
        "claimed_by": models.OutboxMessage.claimed_by,
        "claimed_until": models.OutboxMessage.claimed_until,
    }
    _add_missing_columns(database, "outbox", fields)
    database.create_tables([models.ProcessBeat, models.Setting])


def _v4_firm_branding(database: peewee.Database) -> None:
    """The firm's colour and logo on its callers' and vendors' pages."""
    fields = {"brand_colour": models.Account.brand_colour, "logo_hash": models.Account.logo_hash}
    _add_missing_columns(database, "account", fields)
    database.create_tables([models.Logo])


def _v5_outbox_priority(database: peewee.Database) -> None:
    """Emergencies first when a backlog is sent."""
    _add_missing_columns(database, "outbox", {"priority": models.OutboxMessage.priority})
    database.execute_sql("UPDATE outbox SET priority = 1 WHERE kind = 'vendor'")


def _v6_channels(database: peewee.Database) -> None:
    """SMS, push and webhooks: every channel's messages in the one outbox; the vendors'
    texts handled, so that one is acted on once."""
    outbox = models.OutboxMessage
    _add_missing_columns(
        database,
        "outbox",
        {
            "channel": outbox.channel,
            "provider_id": outbox.provider_id,
            "last_status": outbox.last_status,
            "endpoint_id": outbox.endpoint_id,
        },
    )
    _add_missing_columns(
        database,
        "vendor",
        {"channels": models.Vendor.channels, "push_topic": models.Vendor.push_topic},
    )
    _add_missing_columns(database, "account", {"caller_sms": models.Account.caller_sms})
    _add_missing_columns(database, "dispatch", {"offered_at": models.Dispatch.offered_at})
    database.create_tables([models.WebhookEndpoint, models.SmsReply])
    for vendor_id in [v.id for v in models.Vendor.select(models.Vendor.id)]:
        models.Vendor.update(push_topic=keys.new_push_topic()).where(
            models.Vendor.id == vendor_id, models.Vendor.push_topic == ""
        ).execute()


def _v7_pages_version(database: peewee.Database) -> None:
    """Routing pages served from a cache: a count of changes to what they show."""
    database.create_tables([models.PagesVersion])
    for table in ("subject", "category"):
        db.count_changes(table, "pages_version")
    db.count_changes("account", "pages_version", column="id")


def _v8_status_pages(database: peewee.Database) -> None:
    """Callers' status pages from a cache: they name the vendor who accepted."""
    db.count_changes("vendor", "pages_version")


def _v9_billing(database: peewee.Database) -> None:
    """Trials and Stripe subscriptions, the webhook events handled, the notices sent."""
    database.create_tables([models.AccountBilling, models.BillingEvent, models.BillingNotice])


def _v10_country(database: peewee.Database) -> None:
    """The firm's country, for its callers' emergency number: from its time zone."""
    _add_missing_columns(database, "account", {"country": models.Account.country})
    for account_id, timezone in models.Account.select(
        models.Account.id, models.Account.timezone
    ).tuples():
        models.Account.update(country=countries.of_timezone(timezone)).where(
            models.Account.id == account_id, models.Account.country == ""
        ).execute()


STEPS: list[tuple[str, Callable[[peewee.Database], None]]] = [
    ("initial schema", _v1_initial),
    ("when each background job last ran", _v2_job_runs),
    ("claims and heartbeats for many processes", _v3_many_processes),
    ("the firm's colour and logo", _v4_firm_branding),
    ("emergencies first in the outbox", _v5_outbox_priority),
    ("SMS, push and webhooks", _v6_channels),
    ("routing pages from a cache", _v7_pages_version),
    ("status pages from a cache", _v8_status_pages),
    ("billing: trials and subscriptions", _v9_billing),
    ("the firm's country and its emergency number", _v10_country),
]
LATEST = len(STEPS)


def current_version() -> int:
    database = db.database
    if not database.table_exists("schema_version"):
        return 0
    row = database.execute_sql("SELECT version FROM schema_version").fetchone()
    return row[0] if row else 0


def is_new() -> bool:
    """A database no release has written to yet."""
    return not db.database.table_exists("schema_version")


def migrate() -> list[str]:
    """Apply every pending step; returns what was applied."""
    with db.singleton("migrate", wait=True):  # processes starting together: one migrates
        return _migrate()


def _migrate() -> list[str]:
    database = db.database
    applied = []
    with db.write():
        database.execute_sql("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER)")
    version = current_version()
    if version > LATEST:
        raise SchemaError(
            f"the database is at schema version {version}, newer than this release "
            f"understands ({LATEST}); upgrade outofoffice"
        )
    for number in range(version + 1, LATEST + 1):
        name, step = STEPS[number - 1]
        with db.write():
            step(database)
            database.execute_sql("DELETE FROM schema_version")
            database.execute_sql(
                f"INSERT INTO schema_version (version) VALUES ({database.param})",  # noqa: S608
                (number,),
            )
        log.info("migrated the database to version %d (%s)", number, name)
        applied.append(f"{number}: {name}")
    return applied


def require_current() -> None:
    version = current_version()
    if version > LATEST:
        raise SchemaError(
            f"the database is at schema version {version}, newer than this release ({LATEST})"
        )
    if version < LATEST:
        raise SchemaError(
            f"the database is at schema version {version}, this release needs {LATEST}: "
            "run `outofoffice migrate`"
        )
