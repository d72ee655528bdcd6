"""The `outofoffice` command: each subcommand loads config, calls domain code, prints.

Errors are one line on stderr and a non-zero exit (click.ClickException).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path

import click

from outofoffice import __version__, accounts, billing, clock, config, db, keys, migrations, outbox
from outofoffice.instance import Instance, InstanceError
from outofoffice.mail import MailError, Message

log = logging.getLogger("outofoffice")


class State:
    """The global --config option; the config is loaded only when a command needs it."""

    def __init__(self, config_file: str | None):
        self.config_file = config_file
        self._config: config.Config | None = None

    @property
    def config(self) -> config.Config:
        if self._config is None:
            try:
                self._config = config.load(self.config_file)
            except config.ConfigError as exc:
                raise click.ClickException(str(exc)) from None
        return self._config

    def instance(self, *, migrate: bool = False, create: bool = True) -> Instance:
        """The instance; like a first start, it creates the data dir and key if missing."""
        try:
            return Instance.open(self.config, migrate=migrate, create=create)
        except InstanceError as exc:
            raise click.ClickException(str(exc)) from None


pass_state = click.make_pass_decorator(State)


class Progress:
    """A progress bar on stderr for long work, fed by domain code's progress(done,
    total) callbacks; it appears on the first call, when the total is known. Off a
    terminal there is no bar, so logs and cron mail stay readable."""

    def __init__(self, label: str):
        self.label = label
        self.bar = None

    def __call__(self, done: int, total: int) -> None:
        if not sys.stderr.isatty():
            return
        if self.bar is None:
            self.bar = click.progressbar(length=max(total, 1), label=self.label, file=sys.stderr)
            self.bar.__enter__()
        self.bar.update(done - self.bar.pos)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)


def _setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("apscheduler").setLevel(logging.WARNING)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_file",
    metavar="FILE",
    help="Config file (else $OUTOFOFFICE_CONFIG, ./config.toml, /etc/outofoffice/config.toml, "
    "built-in defaults).",
)
@click.version_option(__version__, prog_name="outofoffice")
@click.pass_context
def cli(ctx: click.Context, config_file: str | None) -> None:
    """Out of Office Pro: after-hours request routing for small firms."""
    ctx.obj = State(config_file)


# --- setting up and running ------------------------------------------------------------


@cli.command()
@click.option("--data-dir", type=click.Path(file_okay=False), help="Data folder to create.")
@click.option("--base-url", help="Public URL, e.g. https://help.example.com.")
@pass_state
def init(state: State, data_dir: str | None, base_url: str | None) -> None:
    """Write a config file, create the data folder, the secret key and the database."""
    target = Path(state.config_file or os.environ.get(config.ENV_VAR) or config.LOCAL_CONFIG)
    target = target.resolve()
    if target.exists():
        raise click.ClickException(f"{target} exists already; not overwriting it")
    data = Path(data_dir or "outofoffice-data").resolve()
    try:
        server = config.initial_server(base_url)
        cfg = config.from_mapping({"server": server, "storage": {"data_dir": str(data)}}, target)
    except config.ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "x", encoding="utf-8") as fh:
            fh.write(config.render_initial(server, data))
    except OSError as exc:
        raise click.ClickException(f"cannot write {target}: {exc.strerror}") from None
    state._config = cfg
    state.instance(migrate=True, create=True)
    click.echo(f"wrote {target}")
    click.echo(f"data folder {cfg.data_dir}, secret key {cfg.secret_key_path} (mode 0600)")
    click.echo(f"next: outofoffice --config {target} serve")


@cli.command()
@click.option("--host", help="Listen address (default: [server] host).")
@click.option("--port", type=click.IntRange(1, 65535), help="Port (default: [server] port).")
@click.option("--no-scheduler", is_flag=True, help="Serve only; run `outofoffice worker` too.")
@click.option("--listen-fd", type=int, hidden=True)  # a web process another serve started
@click.option("--parent-fd", type=int, hidden=True)
@pass_state
def serve(
    state: State,
    host: str | None,
    port: int | None,
    no_scheduler: bool,
    listen_fd: int | None,
    parent_fd: int | None,
) -> None:
    """Serve the web app (and, unless told not to, deliver email and run timers)."""
    from outofoffice.scheduler import SchedulerLocked
    from outofoffice.server import serve as run_server

    _setup_logging()
    log.info("%s", state.config.announcement)
    host = host or state.config.server.host
    port = port or state.config.server.port
    try:  # a base_url left out follows where this process listens
        state._config = state.config.serving(host, port)
    except ValueError as exc:
        raise click.ClickException(f"--host: {exc}") from None
    inst = state.instance(migrate=True, create=True)
    try:
        run_server(inst, host, port, not no_scheduler, listen_fd, parent_fd)
    except SchedulerLocked as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot listen: {exc.strerror or exc}") from None


@cli.command()
@pass_state
def worker(state: State) -> None:
    """Run only the scheduler (email delivery and timers), for split deployments."""
    from outofoffice.heartbeat import Heartbeat
    from outofoffice.scheduler import Scheduler, SchedulerLocked

    _setup_logging()
    log.info("%s", state.config.announcement)
    scheduler = Scheduler(state.instance(migrate=True, create=True))
    try:
        scheduler.start()
    except SchedulerLocked as exc:
        raise click.ClickException(str(exc)) from None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    beat = Heartbeat("scheduler")
    beat.start()  # beats once in this thread first; the handlers above keep a stop clean
    try:
        stop.wait()
    finally:
        scheduler.stop()
        beat.stop()


@cli.command()
@pass_state
def migrate(state: State) -> None:
    """Bring the database schema up to date (on a first start, create the key too)."""
    for step in state.instance(migrate=True).migrated:
        click.echo(f"applied {step}")
    click.echo(f"the database is at schema version {migrations.LATEST}")


@cli.command()
@click.option("--send-test-email", metavar="ADDR", help="Also send a test email to ADDR now.")
@click.option(
    "--send-test-sms", metavar="NUMBER", help="Also text NUMBER (+15550100199) now, through [sms]."
)
@click.option(
    "--send-test-push",
    metavar="VENDOR_EMAIL",
    help="Also push a test notification to that vendor's ntfy topic now.",
)
@click.option("--show-config", is_flag=True, help="Print the effective config, secrets hidden.")
@pass_state
def check(
    state: State,
    send_test_email: str | None,
    send_test_sms: str | None,
    send_test_push: str | None,
    show_config: bool,
) -> None:
    """Check the config, the data folder, the database, the mail backend and the SMS
    and push channels."""
    cfg = state.config
    click.echo(f"config: ok ({cfg.announcement})")
    if cfg.operator.contact_email == config.default("operator", "contact_email"):
        click.echo(
            f"warning: [operator] contact_email is still {cfg.operator.contact_email}; set it "
            "to an address people can write to (it is shown on /privacy and in emails)"
        )
    if show_config:
        click.echo(config.dump(cfg), nl=False)
    if not cfg.data_dir.is_dir() or not os.access(cfg.data_dir, os.W_OK):
        raise click.ClickException(
            f"[storage] data_dir: {cfg.data_dir} is missing or not writable "
            "(run `outofoffice init`)"
        )
    click.echo(f"data folder: ok ({cfg.data_dir})")
    inst = state.instance(create=False)  # check reports a missing key, it makes none
    click.echo(f"secret key: ok ({cfg.secret_key_path})")
    with db.connection():
        server = db.server_version()
    click.echo(
        f"database: ok ({cfg.database_display}, {server}, schema version {migrations.LATEST})"
    )
    problems = inst.mailer.problems()
    if problems:
        raise click.ClickException(problems[0])
    click.echo(f"mail: ok ({inst.mailer.describe()})")
    if send_test_email:
        if problem := accounts.email_problem(accounts.normalise_email(send_test_email)):
            raise click.ClickException(f"--send-test-email: {problem}")
        message = Message(
            sender=inst.sender,
            to=send_test_email,
            subject=f"Test email from {cfg.operator.name}",
            text="This is a test email from `outofoffice check`. Mail works.",
            html="<p>This is a test email from <code>outofoffice check</code>. Mail works.</p>",
            message_id=outbox.new_message_id(inst.sender),
        )
        try:
            inst.mailer.send(message)
        except MailError as exc:
            raise click.ClickException(f"test email not sent: {exc}") from None
        click.echo(f"test email: sent to {send_test_email}")
    _check_channels(inst, send_test_sms, send_test_push)
    _check_health(cfg)
    click.echo("all checks passed")


def _check_channels(inst: Instance, test_sms: str | None, test_push: str | None) -> None:
    """SMS and push: whether each is on and what config alone shows is wrong; a test
    message sent at once, not through the outbox, so its answer is the provider's."""
    from outofoffice import push, sms
    from outofoffice.channels.base import DeliveryError
    from outofoffice.channels.sms.base import Sms
    from outofoffice.models import Vendor

    for channel, off in (
        ("sms", '[sms] provider = "none"'),
        ("push", "[push] ntfy_url is empty"),
    ):
        deliverer = inst.deliverers.get(channel)
        if deliverer is None:
            click.echo(f"{channel}: off ({off})")
            continue
        if problems := deliverer.problems():
            raise click.ClickException(problems[0])
        click.echo(f"{channel}: ok ({deliverer.describe()})")
    if test_sms:
        if "sms" not in inst.deliverers:
            raise click.ClickException('--send-test-sms: SMS is off; set [sms] provider = "twilio"')
        number = sms.e164(test_sms)
        if number is None:
            raise click.ClickException(
                f"--send-test-sms: {test_sms!r} is not a phone number in international form, "
                "such as +15550100199"
            )
        text = f"Test message from {inst.config.operator.name}: SMS works."
        try:
            receipt = inst.deliverers["sms"].send(Sms(to=number, body=text))
        except DeliveryError as exc:
            raise click.ClickException(f"test SMS not sent: {exc}") from None
        click.echo(f"test SMS: sent to {number} ({receipt.provider_id if receipt else 'taken'})")
    if test_push:
        with db.connection():  # one person may be a vendor of several firms: each topic
            vendors = list(
                Vendor.select().where(Vendor.email == accounts.normalise_email(test_push))
            )
        if not vendors:
            raise click.ClickException(f"--send-test-push: no vendor has the email {test_push}")
        for vendor in vendors:
            try:
                with db.connection():
                    message_id = push.send_test_now(inst, vendor)
                    firm = vendor.account.business_name
            except DeliveryError as exc:
                raise click.ClickException(f"test push not sent: {exc}") from None
            click.echo(f"test push: sent to {vendor.name} of {firm} (ntfy message {message_id})")


def _check_health(cfg: config.Config) -> None:
    """What /healthz reports, for the admin: one line per fact, one per problem with
    what to do; a scheduler that is not running is no fault here (check runs before
    the service starts too)."""
    from outofoffice import health

    report = health.assess(cfg)
    problems = [p for p in report.problems if p.kind != "scheduler"]
    kinds = {p.kind for p in problems}
    if report.scheduler.startswith("running"):
        click.echo(f"scheduler: ok ({report.scheduler})")
    else:
        click.echo(
            f"scheduler: {report.scheduler} (mail waits until `outofoffice serve` or "
            "`outofoffice worker` runs)"
        )
    if report.database_writable:
        click.echo("database writes: ok")
    if report.outbox_backlog is not None and "outbox" not in kinds:
        waited = report.oldest_due_seconds
        oldest = f", the oldest due has waited {waited} s" if waited is not None else ""
        click.echo(f"outbox: ok ({report.outbox_backlog} queued{oldest})")
    since = report.mail_failing_since
    if since is None:
        click.echo("mail delivery: ok (no failures)")
    elif "mail" not in kinds:
        click.echo(f"mail delivery: failing since {since:%Y-%m-%d %H:%M:%S} UTC")
    for channel, at in report.failing_since.items():
        if channel not in kinds:
            click.echo(f"{channel} delivery: failing since {at:%Y-%m-%d %H:%M:%S} UTC")
    if report.free_mb is not None and "disk" not in kinds:
        click.echo(f"free space: ok ({report.free_mb} MiB on the data folder's disk)")
        if report.low_space:
            click.echo(
                f"warning: {report.free_mb} MiB free on the data folder's disk is under "
                f"twice [health] min_free_mb = {cfg.health.min_free_mb}: free some space "
                "before writes fail"
            )
    for problem in problems:
        click.echo(f"problem: {problem.text}; {problem.advice}")
    if problems:
        raise click.ClickException(
            f"{len(problems)} health problem{'s' if len(problems) > 1 else ''} (above)"
        )


# --- accounts --------------------------------------------------------------------------


@cli.group("accounts")
def accounts_group() -> None:
    """Create, list, inspect, disable and enable accounts."""


def _account_dict(account) -> dict:
    return {
        "slug": account.slug,
        "email": account.email,
        "name": account.name,
        "business_name": account.business_name,
        "industry": account.industry,
        "timezone": account.timezone,
        "status": account.status,
        "created_at": account.created_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def _get_account(slug_or_email: str):
    account = accounts.find(slug_or_email)
    if account is None:
        raise click.ClickException(f"no account with slug or email {slug_or_email!r}")
    return account


@accounts_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_state
def accounts_list(state: State, as_json: bool) -> None:
    """List every account."""
    from outofoffice.models import Account

    state.instance()
    with db.connection():
        rows = [_account_dict(a) for a in Account.select().order_by(Account.slug)]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no accounts")
    for row in rows:
        click.echo(
            f"{row['slug']:<24} {row['status']:<9} {row['email']:<32} {row['business_name']}"
        )


@accounts_group.command("create")
@click.option("--email", required=True, help="The owner's email address.")
@click.option("--name", required=True, help="The owner's name.")
@click.option("--business", required=True, help="The business name callers see.")
@click.option("--slug", required=True, help="Routing page address: 3-40 of a-z, 0-9, -.")
@click.option(
    "--industry",
    required=True,
    type=click.Choice(list(accounts.INDUSTRIES)),
    help="Sets labels and default categories.",
)
@click.option("--timezone", default="UTC", show_default=True, help="IANA time zone.")
@pass_state
def accounts_create(state, email, name, business, slug, industry, timezone) -> None:
    """Create an account (no email is sent; use login-link to sign in)."""
    inst = state.instance()
    with db.connection():
        try:
            account = accounts.create_account(
                email=email,
                name=name,
                business_name=business,
                slug=slug,
                industry=industry,
                timezone=timezone,
            )
        except accounts.ValidationError as exc:
            field, problem = next(iter(exc.errors.items()))
            option = "--business" if field == "business_name" else f"--{field}"
            raise click.ClickException(f"{option}: {problem}") from None
    click.echo(f"created {account.slug}: {inst.routing_url(account.slug)}")


@accounts_group.command("login-link")
@click.argument("email_or_slug")
@pass_state
def accounts_login_link(state: State, email_or_slug: str) -> None:
    """Print a one-time sign-in URL for an account."""
    inst = state.instance()
    with db.connection():
        account = _get_account(email_or_slug)
        if account.status != "active":
            raise click.ClickException(f"{account.slug} is {account.status}; enable it first")
        click.echo(accounts.login_link(inst, account))


@accounts_group.command("show")
@click.argument("slug")
@pass_state
def accounts_show(state: State, slug: str) -> None:
    """Show one account."""
    from outofoffice.models import Dispatch, Vendor

    inst = state.instance()
    with db.connection():
        account = _get_account(slug)
        info = _account_dict(account) | {
            "routing_page": inst.routing_url(account.slug),
            "vendors": Vendor.select().where(Vendor.account == account).count(),
            "dispatches": Dispatch.select().where(Dispatch.account == account).count(),
        }
        if billing.enabled(inst.config):
            info |= _billing_facts(account, inst.config)
    for key, value in info.items():
        click.echo(f"{key + ':':<16}{value}")


def _billing_facts(account, config) -> dict[str, str]:
    """The billing state and days left, and the subscription as last read from Stripe."""
    from outofoffice.billing.state import row_of, service_state

    now = clock.now()
    row = row_of(account, config.billing.trial_days)
    found = service_state(row, now, config.billing.grace_days)
    days = found.days_left(now)
    left = f" ({days} day{'s' * (days != 1)} left)" if days is not None else ""
    facts = {"billing": found.label() + left}
    if row.subscription_id:
        end = row.period_end.strftime("%Y-%m-%d") if row.period_end else "-"
        facts["subscription"] = f"{row.subscription_id} ({row.status}, period end {end})"
    return facts


def _set_status(state: State, slug: str, status: str) -> None:
    state.instance()
    with db.connection():
        try:
            account = accounts.set_status(slug, status, state.config)
        except LookupError as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(f"{account.slug} is {status}")


@accounts_group.command("disable")
@click.argument("slug")
@pass_state
def accounts_disable(state: State, slug: str) -> None:
    """Disable an account: its owner is signed out and its routing page closes."""
    _set_status(state, slug, "disabled")


@accounts_group.command("enable")
@click.argument("slug")
@pass_state
def accounts_enable(state: State, slug: str) -> None:
    """Enable a disabled account again."""
    _set_status(state, slug, "active")


@accounts_group.command("sign-out")
@click.argument("slug", required=False)
@click.option("--all", "everyone", is_flag=True, help="Every account, e.g. after a breach.")
@pass_state
def accounts_sign_out(state: State, slug: str | None, everyone: bool) -> None:
    """End an owner's sessions and unused sign-in links; the firm keeps running."""
    if bool(slug) == everyone:
        raise click.UsageError("give a SLUG or --all")
    state.instance()
    with db.connection():
        chosen = list(accounts.Account.select()) if everyone else [_get_account(slug)]
        ended = sum(accounts.end_all_sessions(account) for account in chosen)
    click.echo(f"ended {ended} session(s) of {len(chosen)} account(s)")


@accounts_group.command("delete")
@click.argument("slug")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_state
def accounts_delete(state: State, slug: str, yes: bool) -> None:
    """Delete an account: closed at once, its data deleted at the next sweep."""
    instance = state.instance()
    with db.connection():
        account = _get_account(slug)
        if account.status == "deleting":
            raise click.ClickException(f"{slug} is already being deleted")
        if not yes:
            click.confirm(
                f"Delete {account.business_name} ({slug}) and everything it holds?", abort=True
            )
        accounts.request_deletion(account, instance)
    click.echo(
        f"{slug} is closed; its data goes at the next sweep (within the hour, "
        "or now with `outofoffice sweep`)"
    )


@cli.command("rotate-key")
@pass_state
def rotate_key(state: State) -> None:
    """Move to a new secret key and re-encrypt everything stored under the old one."""
    from outofoffice import key_rotation

    state.instance()
    with db.connection():
        try:
            with Progress("re-encrypting") as progress:
                counts = key_rotation.rotate(state.config, progress)
        except keys.KeyFileError as exc:
            raise click.ClickException(str(exc)) from None
    for table, count in counts.items():
        click.echo(f"re-encrypted {count} {table} row(s)")
    click.echo(
        f"new key in {state.config.secret_key_path}; older keys stay there so links they "
        "signed still work. Restart serve and worker so new data uses the new key."
    )


@cli.group("abuse")
def abuse_group() -> None:
    """See, add and remove blocked IP addresses."""


@abuse_group.command("list")
@pass_state
def abuse_list(state: State) -> None:
    """List blocked addresses."""
    from outofoffice import abuse

    state.instance()
    with db.connection():
        rows = abuse.blocks()
    if not rows:
        click.echo("no blocked addresses")
    for row in rows:
        until = f"until {row.expires_at:%Y-%m-%d %H:%M} UTC" if row.expires_at else "for good"
        click.echo(f"{row.ip:<40} {until:<27} {row.reason}")


@abuse_group.command("block")
@click.argument("ip")
@click.option("--days", type=click.IntRange(1, 3650), help="Lift the block after N days.")
@click.option("--reason", default="", help="A note for other admins.")
@pass_state
def abuse_block(state: State, ip: str, days: int | None, reason: str) -> None:
    """Refuse requests and sign-in emails from an IP address."""
    from outofoffice import abuse

    state.instance()
    with db.connection():
        try:
            abuse.block(ip, days, reason)
        except ValueError as exc:
            raise click.ClickException(f"IP: {exc}") from None
    click.echo(f"blocked {ip}" + (f" for {days} day(s)" if days else ""))


@abuse_group.command("unblock")
@click.argument("ip")
@pass_state
def abuse_unblock(state: State, ip: str) -> None:
    """Lift the block on an IP address."""
    from outofoffice import abuse

    state.instance()
    with db.connection():
        try:
            lifted = abuse.unblock(ip)
        except ValueError as exc:
            raise click.ClickException(f"IP: {exc}") from None
    if not lifted:
        raise click.ClickException(f"{ip} is not blocked")
    click.echo(f"unblocked {ip}")


@cli.command()
@pass_state
def sweep(state: State) -> None:
    """Run every retention sweep now and print what each removed."""
    from outofoffice import retention

    state.instance()
    with db.connection(), db.singleton("sweep", wait=True):  # after a scheduler's sweep
        removed = retention.sweep_all(state.config)
    for name, count in removed.items():
        click.echo(f"{name + ':':<20}{count}")


@accounts_group.command("invite")
@click.option("--email", default="", help="Only this address may use the invitation.")
@pass_state
def accounts_invite(state: State, email: str) -> None:
    """Print a single-use signup URL (for [server] signup = "invite")."""
    inst = state.instance()
    with db.connection():
        try:
            click.echo(accounts.create_invite(inst, email))
        except accounts.ValidationError as exc:
            raise click.ClickException(f"--email: {exc.errors['email']}") from None


# --- data in and out -------------------------------------------------------------------


@cli.command("backup")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@pass_state
def backup_command(state: State, file: Path) -> None:
    """Write a consistent copy of the database to FILE, safe while serving."""
    from outofoffice import backup

    try:
        with Progress("backing up") as progress:
            made = backup.backup(state.config, file, progress)
    except backup.BackupError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"wrote {made.path} ({made.bytes:,} bytes, schema version {made.schema_version}, "
        f"{made.dispatches} dispatch(es))"
    )
    click.echo(
        f"to read it, a restore also needs the secret key {state.config.secret_key_path}: "
        "keep a copy of that key somewhere safe, apart from the backups"
    )


@cli.command("copy-database")
@click.argument("url")
@pass_state
def copy_database_command(state: State, url: str) -> None:
    """Copy every row into the empty database at URL (postgresql://USER@HOST/DB), ids
    and all, to move this installation there. Stop the service first. A password is
    best kept out of the command line: libpq reads PGPASSWORD and ~/.pgpass."""
    from outofoffice import database_copy, heartbeat

    state.instance(create=False)
    with db.connection():
        running = heartbeat.alive()
        if running:
            names = ", ".join(f"{p.host}:{p.pid}" for p in running)
            raise click.ClickException(
                f"outofoffice is running ({names}); stop it first, so nothing is written "
                "while the copy is made"
            )
        try:
            with Progress("copying") as progress:
                copied = database_copy.copy_database(state.config, url, progress)
        except database_copy.CopyError as exc:
            raise click.ClickException(str(exc)) from None
    for table, rows in copied.items():
        click.echo(f"{table + ':':<16}{rows} row(s)")
    shown = database_copy.target_config(state.config, url).database_display
    click.echo(
        f'copied; now set [storage] database = "{shown}" in the config of every machine, '
        "give each the same secret key, and start outofoffice again"
    )


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@pass_state
def stats(state: State, as_json: bool) -> None:
    """Accounts, dispatches by status, outbox backlog, the last sweep, the processes."""
    from outofoffice import stats as figures

    state.instance(create=False)
    with db.connection():
        report = figures.collect(state.config)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return

    def counts(by_status: dict[str, int]) -> str:
        detail = ", ".join(f"{status} {n}" for status, n in by_status.items())
        return f"{sum(by_status.values())}" + (f" ({detail})" if detail else "")

    box = report["outbox"]
    oldest = box["oldest_queued_minutes"]
    sweep = report["last_sweep"]
    lines = {
        "accounts": counts(report["accounts"]),
        "dispatches": counts(report["dispatches"]),
        "last 24 hours": f"{report['dispatches_last_24h']} dispatch(es)",
        "outbox": f"{box['queued']} queued"
        + (f" (oldest {oldest} min)" if oldest is not None else "")
        + f", {box['dead']} dead",
        "last sweep": sweep["at"] if sweep else "never (the scheduler runs it hourly)",
        "database": report["database"]["url"]
        + (f" ({report['database']['bytes']:,} bytes)" if "bytes" in report["database"] else ""),
    }
    for name, value in lines.items():
        click.echo(f"{name + ':':<15}{value}")
    processes = report["processes"]
    click.echo(f"{'processes:':<15}{len(processes)} alive in the last minute")
    for p in processes:
        click.echo(f"  {p['process']:<30} {p['role']:<14} last beat {p['last_beat']}")


@cli.command("export")
@click.argument("slug")
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False), help="File to write (default: stdout)."
)
@pass_state
def export_command(state: State, slug: str, output: str | None) -> None:
    """Write an account's export (SPEC section 8, JSON)."""
    from outofoffice import portability

    inst = state.instance()
    with db.connection(), Progress("exporting") as progress:
        data = portability.export(inst, _get_account(slug), progress)
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    if output:
        _write_private(Path(output), text)
        click.echo(f"wrote {output}", err=True)
    else:
        click.echo(text, nl=False)


def _write_private(path: Path, text: str) -> None:
    """An export holds callers' details: the file is readable by its owner only."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as exc:
        raise click.ClickException(f"cannot write {path}: {exc.strerror}") from None


@cli.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@pass_state
def import_command(state: State, file: str) -> None:
    """Create the account an export file describes (nothing, if the file has a problem)."""
    from outofoffice import portability

    inst = state.instance()
    try:
        data = json.loads(Path(file).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise click.ClickException(f"{file}: not a JSON export: {exc}") from None
    with db.connection():
        try:
            with Progress("importing") as progress:
                account = portability.import_account(inst, data, progress)
        except portability.ImportError_ as exc:
            problems = list(exc.errors.values())
            for problem in problems[:-1]:
                click.echo(f"{file}: {problem}", err=True)
            raise click.ClickException(
                f"{file}: {problems[-1]} ({len(problems)} problem(s); nothing was imported)"
            ) from None
    click.echo(f"imported {account.slug}: {inst.routing_url(account.slug)}")


@cli.command()
@click.option("--slug", default="sample-firm", show_default=True, help="Slug of the sample firm.")
@click.option(
    "--industry",
    default="property_management",
    type=click.Choice(list(accounts.INDUSTRIES)),
    show_default=True,
    help="Which kind of firm.",
)
@pass_state
def demo(state: State, slug: str, industry: str) -> None:
    """Create a sample firm with vendors, subjects and routes; print its URLs."""
    from outofoffice import sample

    inst = state.instance(migrate=True, create=True)
    with db.connection():
        account = sample.existing(slug)
        if account is not None:
            click.echo(f"the sample firm {account.slug} is there from an earlier demo")
            if account.status != "active":
                raise click.ClickException(
                    f"{account.slug} is {account.status}; "
                    f"`outofoffice accounts enable {account.slug}` first"
                )
        else:
            try:
                account = sample.create(slug, industry)
            except accounts.ValidationError as exc:
                if accounts.find(slug) is not None:
                    raise click.ClickException(
                        f"--slug: {slug} belongs to a firm that is not the sample one; sign "
                        f"in to it with `outofoffice accounts login-link {slug}`, or give "
                        "demo another --slug"
                    ) from None
                raise click.ClickException(f"--slug: {' '.join(exc.errors.values())}") from None
        click.echo(f"routing page: {inst.routing_url(account.slug)}")
        click.echo(f"owner login:  {accounts.login_link(inst, account)}")


# --- the outbox ------------------------------------------------------------------------


@cli.group("outbox")
def outbox_group() -> None:
    """See and retry queued and failed email."""


@outbox_group.command("list")
@click.option(
    "--status",
    type=click.Choice(["queued", "sent", "dead"]),
    help="Only rows with this status.",
)
@pass_state
def outbox_list(state: State, status: str | None) -> None:
    """List outbox rows, newest first."""
    from outofoffice.models import OutboxMessage

    state.instance()
    with db.connection():
        query = OutboxMessage.select().order_by(OutboxMessage.id.desc()).limit(200)
        if status:
            query = query.where(OutboxMessage.status == status)
        rows = list(query)
    if not rows:
        click.echo("no emails")
    for row in rows:
        error = f"  {row.last_error[:80]}" if row.last_error else ""
        click.echo(
            f"{row.id:>6} {row.status:<6} {row.kind:<7} tries {row.attempts:<2} "
            f"{row.created_at:%Y-%m-%d %H:%M} {row.recipient}{error}"
        )


@outbox_group.command("retry")
@click.argument("row_id", required=False, type=int)
@click.option("--all-failed", is_flag=True, help="Retry every dead-lettered email.")
@pass_state
def outbox_retry(state: State, row_id: int | None, all_failed: bool) -> None:
    """Queue a dead-lettered email (ID) or all of them (--all-failed) again."""
    if (row_id is None) == (not all_failed):
        raise click.ClickException("give an ID or --all-failed (one of them)")
    state.instance()
    with db.connection():
        count = outbox.retry(None if all_failed else [row_id])
    if row_id is not None and not count:
        raise click.ClickException(f"no unsent email with id {row_id}")
    click.echo(f"queued {count} email(s) again; a running server or worker sends them")


def main() -> None:
    cli(prog_name="outofoffice")
