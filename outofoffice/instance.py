"""A running instance: validated config, the bound database, keys and the mailer.

Built once per process (``serve``, ``worker``, each CLI command) and handed to the
web app and the domain functions that need keys or mail.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import cached_property

from outofoffice import billing, db, heartbeat, keys, migrations, traffic
from outofoffice.channels import deliverers_for
from outofoffice.channels.base import Deliverer
from outofoffice.config import Config
from outofoffice.mail import Mailer, mailer_for
from outofoffice.models import Dispatch, Setting
from outofoffice.outbox import Delivery


class InstanceError(Exception):
    """The instance cannot start: the message says what to fix."""


def _load_keys(config: Config, create: bool, fresh: bool) -> keys.Keys:
    """The key file; a new one only beside a new (``fresh``) database. A database that
    already holds data was written with its own key: a fresh key could read none of it."""
    path = config.secret_key_path
    try:
        if create and fresh:
            return keys.Keys.open(path)
        if not fresh and not path.exists():
            raise InstanceError(
                f"{path}: the secret key is missing, and the database holds data written "
                "with it; restore the key from your copy (see docs/backup.md)"
            )
        return keys.Keys.load(path)
    except (keys.KeyFileError, OSError) as exc:
        raise InstanceError(str(exc)) from None


KEY_CHECK = "key-check"


def record_key(secret: keys.Keys) -> None:
    """Note in the database which key is the newest (the first start, and `rotate-key`)."""
    signature = secret.sign(KEY_CHECK, KEY_CHECK)
    Setting.insert(name=KEY_CHECK, value=signature).on_conflict(
        conflict_target=[Setting.name], update={Setting.value: signature}
    ).execute()


def _readable(secret: keys.Keys) -> bool:
    """Can this key read what is stored already (a database from before the check)?"""
    stored = Dispatch.select(Dispatch.caller_name).limit(1).scalar()
    if stored is None:
        return True
    try:
        secret.decrypt(stored)
    except keys.KeyFileError:
        return False
    return True


def _check_same_key(config: Config, secret: keys.Keys) -> None:
    """Every process of an installation must hold the same, newest key: one that made
    its own (a second machine started before the key was copied to it), or an old
    copy from before a rotation, would write or miss what the others read."""
    row = Setting.get_or_none(Setting.name == KEY_CHECK)
    if row is None and _readable(secret):
        with db.write():
            if Setting.get_or_none(Setting.name == KEY_CHECK) is None:
                record_key(secret)
        row = Setting.get(Setting.name == KEY_CHECK)
    if row is None or not keys.same(secret.sign(KEY_CHECK, KEY_CHECK), row.value):
        raise InstanceError(
            f"{config.secret_key_path}: this is not the secret key the database was written "
            "with (or an older copy of it); copy the key file from a machine that runs, "
            "or point [security] secret_key_file at it (see docs/scale-out.md)"
        )


@dataclass
class Instance:
    config: Config
    keys: keys.Keys
    migrated: tuple[str, ...] = ()  # the schema steps this start applied
    _served: tuple[str, float] = field(default=("", 0.0), repr=False)  # (url, until)

    @classmethod
    def open(cls, config: Config, *, migrate: bool = False, create: bool = True) -> Instance:
        """Bind the database and load keys; ``create`` makes the data dir, and the key
        for a new database, on first start; ``migrate`` brings the schema up to date
        (else it must be)."""
        if create:
            try:
                if not config.data_dir.exists():
                    config.data_dir.mkdir(parents=True, mode=0o700)
            except OSError as exc:
                raise InstanceError(
                    f"[storage] data_dir: cannot create {config.data_dir}: {exc.strerror}"
                ) from None
        applied: list[str] = []
        try:
            db.bind(config)
            with db.connection():
                fresh = migrations.is_new()
                secret = _load_keys(config, create, fresh)
                # a brand-new database is simply created; an older one waits for `migrate`
                if migrate or (create and fresh):
                    applied = migrations.migrate()
                else:
                    migrations.require_current()
                _check_same_key(config, secret)
                if billing.enabled(config):
                    from outofoffice.billing.lifecycle import note_switched_on

                    note_switched_on()
        except InstanceError:
            raise
        except db.DatabaseError as exc:
            raise InstanceError(f"[storage] database: {exc}") from None
        except migrations.SchemaError as exc:
            raise InstanceError(str(exc)) from None
        except Exception as exc:  # peewee/sqlite OperationalError and the like
            raise InstanceError(
                f"cannot open the database {config.database_display}: {type(exc).__name__}: "
                + str(exc).replace(config.database_url, config.database_display)
            ) from None
        return cls(config=config, keys=secret, migrated=tuple(applied))

    @cached_property
    def traffic(self) -> traffic.Counts:
        """This instance's request counts, until its web process writes them."""
        return traffic.Counts()

    @cached_property
    def mailer(self) -> Mailer:
        return mailer_for(self.config)

    @cached_property
    def deliverers(self) -> dict[str, Deliverer]:
        """The channels this installation sends by, each with its deliverer: email
        always, SMS and push when configured, webhooks always (owners add them), and the
        billing provider's cancellations when billing is on."""
        found = {"email": self.mailer, **deliverers_for(self.config)}
        if billing.enabled(self.config):  # a deleted account's subscription is canceled
            from outofoffice.billing.cancellation import Cancellation

            found["billing"] = Cancellation(self.config)
        return found

    @cached_property
    def deliveries(self) -> dict[str, Delivery]:
        """What delivery passes remember per channel (its circuit breaker among it):
        it lives as long as the deliverers."""
        return {channel: Delivery.of(d) for channel, d in self.deliverers.items()}

    @property
    def sender(self) -> str:
        return self.config.mail.from_

    @property
    def base_url(self) -> str:
        """base_url; when it is left out, the address a `serve` of this installation on
        this machine listens at (it may run with --port), so the links a second command
        prints or a worker emails open. Looked up again at most every heartbeat."""
        if not self.config.follows_serve:
            return self.config.base_url
        url, until = self._served
        if time.monotonic() >= until:
            with db.connection():
                url = heartbeat.serving_url() or self.config.base_url
            self._served = (url, time.monotonic() + heartbeat.BEAT_SECONDS)
        return url

    def url(self, path: str) -> str:
        """Every emailed or printed URL comes from base_url, never from a request."""
        return self.base_url + path

    def routing_url(self, slug: str) -> str:
        """The public address of an account's routing page (SPEC section 5)."""
        server = self.config.server
        if server.routing_pages == "subdomain":
            scheme = self.base_url.split("://", 1)[0]
            return f"{scheme}://{slug}.{server.domain}/"
        return self.url(f"/r/{slug}")
