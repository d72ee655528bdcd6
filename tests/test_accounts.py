"""Accounts, slugs, magic links and sessions, as domain functions."""

from datetime import timedelta

import pytest

from outofoffice import accounts, clock, db
from outofoffice.keys import hash_token
from outofoffice.models import Account, Category, MagicLink, OutboxMessage, Session, SlugHold
from tests.conftest import dump_database

SIGNUP = {
    "email": "Carol@Gamma.example ",
    "name": "Carol",
    "business_name": "Gamma IT",
    "slug": "gamma-it",
    "industry": "it_services",
    "timezone": "Europe/Berlin",
}


def token_of(url: str) -> str:
    return url.rsplit("/", 1)[1]


@pytest.mark.parametrize(
    ("slug", "fragment"),
    [
        ("ab", "3 to 40"),
        ("a" * 41, "3 to 40"),
        ("Alpha", "lowercase"),
        ("-alpha", "starting"),
        ("alpha-", "ending"),
        ("al_pha", "lowercase"),
        ("www", "reserved"),
        ("admin", "reserved"),
        ("static", "reserved"),
        ("alpha", "taken"),
    ],
)
def test_slug_rules(owners, slug, fragment):
    assert fragment in accounts.slug_problem(slug)


def test_a_held_slug_is_refused_until_the_hold_ends(conn):
    SlugHold.create(slug="held-one", reason="deleted", expires_at=clock.now() + timedelta(days=60))
    assert "on hold" in accounts.slug_problem("held-one")
    clock.advance(timedelta(days=61))
    assert accounts.slug_problem("held-one") is None


def test_signup_validation_reports_every_field(conn):
    with pytest.raises(accounts.ValidationError) as caught:
        accounts.clean_signup({"email": "nope", "slug": "x", "timezone": "Mars/Olympus"})
    assert set(caught.value.errors) == set(accounts.SIGNUP_FIELDS)


def test_an_account_starts_with_its_industrys_categories(conn):
    account = accounts.create_account(**SIGNUP)
    assert account.email == "carol@gamma.example"
    names = [c.name for c in Category.select().where(Category.account == account)]
    assert names == [c[0] for c in accounts.DEFAULT_CATEGORIES["it_services"]]


def test_one_email_one_account(owners):
    with pytest.raises(accounts.ValidationError) as caught:
        accounts.create_account(**{**SIGNUP, "email": "ann@alpha.example"})
    assert "email" in caught.value.errors


def test_a_login_link_works_once(instance, owners):
    alpha, _ = owners
    token = token_of(accounts.login_link(instance, alpha))
    assert accounts.peek_link(token).account.id == alpha.id
    assert accounts.peek_link(token).account.id == alpha.id  # peeking consumes nothing
    account, session = accounts.consume_link(instance, token)
    assert account.id == alpha.id and accounts.session_account(session)[1].id == alpha.id
    with pytest.raises(accounts.LinkError):
        accounts.consume_link(instance, token)


def test_a_link_expires_after_fifteen_minutes(instance, owners):
    token = token_of(accounts.login_link(instance, owners[0]))
    clock.advance(timedelta(minutes=16))
    with pytest.raises(accounts.LinkError):
        accounts.peek_link(token)
    with pytest.raises(accounts.LinkError):
        accounts.consume_link(instance, token)


def test_tokens_are_stored_only_as_hashes(instance, owners):
    token = token_of(accounts.login_link(instance, owners[0]))
    _, session = accounts.consume_link(instance, token)
    assert MagicLink.get(MagicLink.token_hash == hash_token(token))
    assert Session.get(Session.token_hash == hash_token(session))
    dump = dump_database()
    assert token not in dump and session not in dump


def test_a_session_ends_after_thirty_days(instance, owners):
    _, session = accounts.consume_link(instance, token_of(accounts.login_link(instance, owners[0])))
    clock.advance(timedelta(days=29, hours=23))
    assert accounts.session_account(session) is not None
    clock.advance(timedelta(hours=2))
    assert accounts.session_account(session) is None


def test_a_stricter_session_setting_is_honoured(make_instance):
    instance = make_instance(retention={"session_days": 20})
    with db.connection():
        account = accounts.create_account(**SIGNUP)
        _, session = accounts.consume_link(
            instance, token_of(accounts.login_link(instance, account))
        )
        clock.advance(timedelta(days=20, minutes=1))
        assert accounts.session_account(session) is None


def test_disabling_an_account_ends_its_sessions_and_links(instance, owners):
    alpha, _ = owners
    _, session = accounts.consume_link(instance, token_of(accounts.login_link(instance, alpha)))
    token = token_of(accounts.login_link(instance, alpha))
    accounts.set_status("alpha", "disabled")
    assert accounts.session_account(session) is None
    with pytest.raises(accounts.LinkError):
        accounts.consume_link(instance, token)
    accounts.request_login(instance, "ann@alpha.example")
    assert OutboxMessage.select().count() == 0


def test_login_for_an_unknown_address_queues_nothing(instance, owners):
    accounts.request_login(instance, "nobody@example.com")
    assert OutboxMessage.select().count() == 0
    accounts.request_login(instance, " ANN@alpha.example")
    assert OutboxMessage.select().where(OutboxMessage.recipient == "ann@alpha.example").count() == 1


def test_signup_creates_the_account_only_when_the_link_is_used(instance, conn, mailbox):
    accounts.request_signup(instance, SIGNUP)
    assert Account.select().count() == 0
    [link] = mailbox.links()
    account, _ = accounts.consume_link(instance, token_of(link))
    assert account.slug == "gamma-it" and account.business_name == "Gamma IT"
    assert MagicLink.get().payload is None  # the form data is not kept past its use


def test_signup_for_an_existing_address_sends_a_login_link_instead(instance, owners, mailbox):
    accounts.request_signup(instance, {**SIGNUP, "email": "ann@alpha.example"})
    [message] = mailbox.deliver()
    assert message["Subject"].startswith("Sign in")
    assert Account.select().count() == 2


def test_a_slug_taken_between_signup_and_confirmation_is_reported(instance, conn, mailbox):
    accounts.request_signup(instance, SIGNUP)
    accounts.create_account(**{**SIGNUP, "email": "other@example.com"})
    [link] = mailbox.links()
    with pytest.raises(accounts.ValidationError) as caught:
        accounts.consume_link(instance, token_of(link))
    assert "slug" in caught.value.errors


def test_pending_signup_details_are_encrypted(instance, conn):
    accounts.request_signup(instance, {**SIGNUP, "business_name": "Zebra Plumbing"})
    dump = dump_database()
    assert "Zebra Plumbing" not in dump and "gamma-it" not in dump


def test_signup_with_a_disabled_accounts_address_sends_nothing(instance, owners):
    accounts.set_status("alpha", "disabled")
    accounts.request_signup(instance, {**SIGNUP, "email": "ann@alpha.example"})
    assert OutboxMessage.select().count() == 0


def test_invisible_formatting_characters_are_refused_in_names(conn):
    with pytest.raises(accounts.ValidationError) as caught:
        accounts.create_account(**{**SIGNUP, "business_name": "\u202egnibmulP"})
    assert "invisible" in caught.value.errors["business_name"]
