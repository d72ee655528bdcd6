"""The schema, nothing else.

Times are naive UTC. Columns holding a caller's words or a queued email body hold
ciphertext (see keys.Keys.encrypt); token columns hold sha256 hex digests.
"""

import json

import peewee

from outofoffice import clock
from outofoffice.db import database


class JSONField(peewee.TextField):
    def db_value(self, value):
        return None if value is None else json.dumps(value, separators=(",", ":"))

    def python_value(self, value):
        return None if value is None else json.loads(value)


class BaseModel(peewee.Model):
    class Meta:
        database = database
        legacy_table_names = False


def _fk(model, **kwargs):
    return peewee.ForeignKeyField(model, on_delete="CASCADE", **kwargs)


class Account(BaseModel):
    slug = peewee.CharField(max_length=40, unique=True)
    email = peewee.CharField(max_length=254, unique=True)
    name = peewee.CharField(max_length=100)  # the owner's name
    business_name = peewee.CharField(max_length=100)
    industry = peewee.CharField(max_length=32)
    timezone = peewee.CharField(max_length=64, default="UTC")
    contact_phone = peewee.CharField(max_length=32, default="")
    notify = peewee.CharField(max_length=16, default="every")  # every|failures|digest|none
    digest_hour = peewee.IntegerField(default=8)
    escalate_after_minutes = peewee.IntegerField(default=15)
    business_hours = JSONField(default=dict)  # {"mon": [["09:00","17:00"]], "holidays": [...]}
    status = peewee.CharField(max_length=16, default="active")  # active|disabled|deleting
    created_at = peewee.DateTimeField(default=clock.now)
    deletion_requested_at = peewee.DateTimeField(null=True)
    billing_customer = peewee.CharField(max_length=255, default="")
    billing_status = peewee.CharField(max_length=32, default="")
    brand_colour = peewee.CharField(max_length=16, default="")  # a name from BRAND_COLOURS
    logo_hash = peewee.CharField(max_length=64, default="")  # "" = no logo; names its URL
    caller_sms = peewee.BooleanField(default=False)  # callers get their updates by SMS
    # ISO 3166 code, defaulted from the timezone: which emergency number callers see
    country = peewee.CharField(max_length=2, default="")


class Vendor(BaseModel):
    account = _fk(Account, backref="vendors")
    name = peewee.CharField(max_length=100)
    company = peewee.CharField(max_length=100, default="")
    email = peewee.CharField(max_length=254)
    phone = peewee.CharField(max_length=32, default="")
    notes = peewee.TextField(default="")
    active = peewee.BooleanField(default=True)
    created_at = peewee.DateTimeField(default=clock.now)
    # how the vendor is reached besides email (schema step 6): a subset of
    # email, sms, push, email always among them; and the vendor's own ntfy topic
    channels = JSONField(default=lambda: ["email"])
    push_topic = peewee.CharField(max_length=64, default="")


class Subject(BaseModel):
    account = _fk(Account, backref="subjects")
    name = peewee.CharField(max_length=100)
    address = peewee.CharField(max_length=255, default="")
    reference = peewee.CharField(max_length=100, default="")
    created_at = peewee.DateTimeField(default=clock.now)


class Category(BaseModel):
    account = _fk(Account, backref="categories")
    name = peewee.CharField(max_length=100)
    description = peewee.TextField(default="")  # the caller's safety / self-help text
    emergency = peewee.BooleanField(default=False)
    position = peewee.IntegerField(default=0)


class PagesVersion(BaseModel):
    """A count that grows whenever what the firm's public pages show changes (the
    account's row, its subjects, categories and vendors): written by the database's own
    triggers (schema steps 7 and 8, so no path that writes them can forget it), read with the
    account's id as the key of its cached pages."""

    account = peewee.ForeignKeyField(Account, primary_key=True, on_delete="CASCADE")
    version = peewee.BigIntegerField(default=0)  # begins at a random count


class Route(BaseModel):
    account = _fk(Account, backref="routes")
    subject = _fk(Subject, null=True)  # null: any subject
    category = _fk(Category, null=True)  # null: any category
    when = peewee.CharField(max_length=16, default="always")  # always|business_hours|after_hours
    created_at = peewee.DateTimeField(default=clock.now)


class RouteVendor(BaseModel):
    route = _fk(Route, backref="chain")
    vendor = _fk(Vendor)
    position = peewee.IntegerField()

    class Meta:
        indexes = ((("route", "vendor"), True),)


class Dispatch(BaseModel):
    account = _fk(Account, backref="dispatches")
    reference = peewee.CharField(max_length=16, unique=True)
    subject = peewee.ForeignKeyField(Subject, null=True, on_delete="SET NULL")
    category = peewee.ForeignKeyField(Category, null=True, on_delete="SET NULL")
    route = peewee.ForeignKeyField(Route, null=True, on_delete="SET NULL")
    subject_label = peewee.CharField(max_length=255, default="")  # as it was when submitted
    category_label = peewee.CharField(max_length=100, default="")
    caller_name = peewee.TextField()  # encrypted
    caller_phone = peewee.TextField()  # encrypted
    caller_phone_digest = peewee.CharField(max_length=64, index=True)  # keyed, for repeats
    description = peewee.TextField()  # encrypted
    status = peewee.CharField(max_length=16, default="open")
    chain = JSONField(default=list)  # vendor ids, frozen from the route when submitted
    chain_position = peewee.IntegerField(default=0)
    vendor = peewee.ForeignKeyField(Vendor, null=True, on_delete="SET NULL")
    status_token_hash = peewee.CharField(max_length=64, unique=True)
    escalate_at = peewee.DateTimeField(null=True, index=True)
    offered_at = peewee.DateTimeField(null=True)  # when the current vendor was asked
    created_at = peewee.DateTimeField(default=clock.now, index=True)
    updated_at = peewee.DateTimeField(default=clock.now)


class DispatchEvent(BaseModel):
    dispatch = _fk(Dispatch, backref="events")
    account = _fk(Account)
    at = peewee.DateTimeField(default=clock.now)
    kind = peewee.CharField(max_length=32)
    vendor = peewee.ForeignKeyField(Vendor, null=True, on_delete="SET NULL")
    detail = peewee.TextField(default="")


class WebhookEndpoint(BaseModel):
    """An owner's URL that hears of the account's dispatches (schema step 6)."""

    account = _fk(Account, backref="webhook_endpoints")
    url = peewee.TextField()
    secret = peewee.TextField()  # encrypted "whsec_..."
    events = JSONField(default=list)  # dispatch.created, dispatch.accepted, ...
    active = peewee.BooleanField(default=True)
    created_at = peewee.DateTimeField(default=clock.now)


class OutboxMessage(BaseModel):
    """One message to send, whatever its channel: an email, an SMS, a push
    notification or a webhook delivery."""

    account = _fk(Account, null=True)
    dispatch = _fk(Dispatch, null=True)
    vendor = peewee.ForeignKeyField(Vendor, null=True, on_delete="SET NULL")
    kind = peewee.CharField(max_length=32)  # login|signup|vendor|owner|alert|digest|caller|...
    recipient = peewee.CharField(max_length=254)  # address, E.164 phone, topic, endpoint host
    subject = peewee.CharField(max_length=255)  # the email's subject, push title, event type
    body_text = peewee.TextField(default="")  # encrypted; emptied once delivered
    body_html = peewee.TextField(default="")  # encrypted; emptied once delivered
    headers = JSONField(default=dict)
    message_id = peewee.CharField(max_length=255, unique=True)
    status = peewee.CharField(max_length=16, default="queued", index=True)  # queued|sent|dead
    attempts = peewee.IntegerField(default=0)
    next_attempt_at = peewee.DateTimeField(default=clock.now, index=True)
    last_error = peewee.TextField(default="")
    created_at = peewee.DateTimeField(default=clock.now)
    expires_at = peewee.DateTimeField()  # dead-lettered after this
    sent_at = peewee.DateTimeField(null=True)
    # PostgreSQL: which process is delivering it, until when (schema step 3)
    claimed_by = peewee.CharField(max_length=64, null=True)
    claimed_until = peewee.DateTimeField(null=True)
    # what goes first when the relay answers again (schema step 5): the vendor of an
    # emergency, other vendors, then owners' notices, sign-in emails and digests
    priority = peewee.SmallIntegerField(default=2)
    # schema step 6: email|sms|push|webhook; the provider's id for it (a Twilio message
    # SID, for its delivery reports); the HTTP status of the last try; a webhook's
    # endpoint (no foreign key: step 1 builds this table before endpoints exist; the
    # endpoint's deletion deletes its rows)
    channel = peewee.CharField(max_length=16, default="email")
    provider_id = peewee.CharField(max_length=64, default="", index=True)
    last_status = peewee.SmallIntegerField(null=True)
    endpoint_id = peewee.IntegerField(null=True, index=True)

    class Meta:
        table_name = "outbox"


class SmsReply(BaseModel):
    """A vendor's text we handled, by the provider's id for it (Twilio's MessageSid,
    schema step 6): the same text again, Twilio retrying or a captured one replayed,
    acts no more. Swept after 30 days."""

    message_sid = peewee.CharField(max_length=64, unique=True)
    received_at = peewee.DateTimeField(default=clock.now, index=True)
    dispatch = peewee.ForeignKeyField(Dispatch, null=True, on_delete="SET NULL")  # acted on


class MagicLink(BaseModel):
    token_hash = peewee.CharField(max_length=64, unique=True)
    purpose = peewee.CharField(max_length=16)  # login|signup
    account = _fk(Account, null=True)
    email = peewee.CharField(max_length=254)
    payload = JSONField(null=True)  # signup form, until the link is used
    created_at = peewee.DateTimeField(default=clock.now)
    expires_at = peewee.DateTimeField(index=True)
    used_at = peewee.DateTimeField(null=True)


class Session(BaseModel):
    token_hash = peewee.CharField(max_length=64, unique=True)
    account = _fk(Account, backref="sessions")
    created_at = peewee.DateTimeField(default=clock.now)
    expires_at = peewee.DateTimeField(index=True)


class Invite(BaseModel):
    token_hash = peewee.CharField(max_length=64, unique=True)
    email = peewee.CharField(max_length=254, default="")  # empty: anyone holding it
    created_at = peewee.DateTimeField(default=clock.now)
    expires_at = peewee.DateTimeField()
    used_at = peewee.DateTimeField(null=True)


class SlugHold(BaseModel):
    slug = peewee.CharField(max_length=40, unique=True)
    reason = peewee.CharField(max_length=32)  # deleted|disabled
    created_at = peewee.DateTimeField(default=clock.now)
    expires_at = peewee.DateTimeField(index=True)


class IPRecord(BaseModel):
    ip = peewee.CharField(max_length=45)
    kind = peewee.CharField(max_length=16)  # dispatch|login_email|signup
    account = _fk(Account, null=True)
    at = peewee.DateTimeField(default=clock.now, index=True)

    class Meta:
        indexes = ((("ip", "kind", "at"), False),)


class IPBlock(BaseModel):
    ip = peewee.CharField(max_length=45, unique=True)
    reason = peewee.CharField(max_length=255, default="")
    created_at = peewee.DateTimeField(default=clock.now)
    expires_at = peewee.DateTimeField(null=True)


class RequestCount(BaseModel):
    """Server logs, aggregated: requests per day, route and status, nothing personal."""

    day = peewee.DateField()
    route = peewee.CharField(max_length=100)
    status = peewee.IntegerField()
    count = peewee.IntegerField(default=0)

    class Meta:
        indexes = ((("day", "route", "status"), True),)


class JobRun(BaseModel):
    """When each background job last finished, and what it did: `outofoffice stats`
    shows it, so an admin sees a sweep that stopped running."""

    job = peewee.CharField(max_length=32, unique=True)
    finished_at = peewee.DateTimeField()
    summary = JSONField(default=dict)


class ProcessBeat(BaseModel):
    """Each running process says it is alive about every 15 seconds: /healthz and
    `outofoffice stats` see the whole installation, not only the process they ask."""

    host = peewee.CharField(max_length=255)
    pid = peewee.IntegerField()
    role = peewee.CharField(max_length=16)  # web|worker|web+worker
    started_at = peewee.DateTimeField()
    beat_at = peewee.DateTimeField(index=True)

    class Meta:
        table_name = "process"
        indexes = ((("host", "pid"), True),)


class Logo(BaseModel):
    """The firm's logo, apart from the account row that every request reads."""

    account = _fk(Account, unique=True)
    content_type = peewee.CharField(max_length=32)
    data = peewee.BlobField()


class Setting(BaseModel):
    """Facts about the installation itself, such as which secret key wrote it."""

    name = peewee.CharField(max_length=64, unique=True)
    value = peewee.TextField()


class AccountBilling(BaseModel):
    """An account's trial and Stripe subscription (schema step 9): ids, status and
    period end only, never card data. A table of its own, so billing's writes do not
    count as changes to the routing pages."""

    account = _fk(Account, unique=True)
    trial_started_at = peewee.DateTimeField()
    trial_ends_at = peewee.DateTimeField()
    customer_id = peewee.CharField(max_length=255, default="", index=True)
    subscription_id = peewee.CharField(max_length=255, default="", index=True)
    status = peewee.CharField(max_length=32, default="")  # Stripe's subscription status
    period_end = peewee.DateTimeField(null=True)
    ended_at = peewee.DateTimeField(null=True)  # when the subscription ended, if it has
    # when Stripe was last asked: a read older than this one never replaces it
    checked_at = peewee.DateTimeField(null=True)


class BillingEvent(BaseModel):
    """A webhook event handled, by Stripe's id for it: a repeat acts no more. Swept
    after 30 days (Stripe retries for three)."""

    event_id = peewee.CharField(max_length=255, unique=True)
    received_at = peewee.DateTimeField(default=clock.now, index=True)


class BillingNotice(BaseModel):
    """A billing email sent: one per account, kind and occasion (the trial's end, a
    subscription's period), however many processes or webhooks see the same state."""

    account = _fk(Account)
    kind = peewee.CharField(max_length=32)
    occasion = peewee.CharField(max_length=128)
    sent_at = peewee.DateTimeField(default=clock.now)

    class Meta:
        indexes = ((("account", "kind", "occasion"), True),)


# The tables of schema version 1, as migration step 1 creates them.
V1_MODELS = [
    Account,
    Vendor,
    Subject,
    Category,
    Route,
    RouteVendor,
    Dispatch,
    DispatchEvent,
    OutboxMessage,
    MagicLink,
    Session,
    Invite,
    SlugHold,
    IPRecord,
    IPBlock,
    RequestCount,
]
MODELS = [
    *V1_MODELS,
    JobRun,
    ProcessBeat,
    Setting,
    Logo,
    WebhookEndpoint,
    SmsReply,
    PagesVersion,
    AccountBilling,
    BillingEvent,
    BillingNotice,
]
