"""The Reports page's numbers, from requests made through the real submit and action
links, with the clock moved instead of dates written down."""

import statistics
from datetime import UTC, timedelta
from zoneinfo import ZoneInfo

import pytest

from outofoffice import clock, dispatch, figures, owner_setup
from outofoffice.models import Account, Category
from tests.conftest import at_local, request_form


def phone(n: int) -> str:
    return f"+1 555 {1000 + n}"


def submit(instance, firm, n: int, **overrides):
    form = request_form(firm, phone=phone(n), **overrides)
    return dispatch.submit(instance, firm["account"], form).dispatch


def accept(instance, d, vendor):
    dispatch.act(instance, dispatch.action_token(instance, d, vendor, "accept"))


def minutes(delta: timedelta) -> float:
    return delta.total_seconds() / 60


def local_today(account):
    return clock.now().replace(tzinfo=UTC).astimezone(ZoneInfo(account.timezone)).date()


@pytest.mark.no_database
def test_median_and_90th_percentile_on_known_inputs():
    assert figures.percentile([7], 0.5) == figures.percentile([7], 0.9) == 7
    ten = [float(n) for n in range(10, 0, -1)]  # any order
    assert figures.percentile(ten, 0.5) == statistics.median(ten) == 5.5
    assert figures.percentile(ten, 0.9) == pytest.approx(9.1)
    waits = [3.0, 60.0, 4.0, 5.0]
    inclusive = statistics.quantiles(waits, n=10, method="inclusive")
    assert figures.percentile(waits, 0.9) == pytest.approx(inclusive[8])
    assert figures.percentile(waits, 0.5) == statistics.median(waits) == 4.5
    with pytest.raises(ValueError):
        figures.percentile([], 0.5)


@pytest.mark.no_database
def test_only_the_offered_periods_exist():
    assert [figures.period_days(d) for d in figures.PERIODS] == [30, 90]
    for days in (0, 7, 31, 365):
        with pytest.raises(ValueError):
            figures.period_days(days)


def test_every_day_of_the_period_is_there_zeros_included(instance, firm):
    account = firm["account"]
    at_local(account, 12)
    submit(instance, firm, 1)
    clock.advance(timedelta(days=2))
    submit(instance, firm, 2)
    submit(instance, firm, 3)
    found = figures.for_period(account, 30)
    today = local_today(account)
    assert found.last_day == today and found.first_day == today - timedelta(days=29)
    assert [day for day, _ in found.per_day] == [
        today - timedelta(days=n) for n in range(29, -1, -1)
    ]
    assert dict(found.per_day)[today] == 2
    assert dict(found.per_day)[today - timedelta(days=2)] == 1
    assert found.total == 3 and found.quiet_days == 28
    assert found.busiest == (today, 2)


def test_days_are_the_accounts_local_days(instance, firm):
    account = firm["account"]
    account.timezone = "Asia/Tokyo"
    account.save(only=[Account.timezone])
    late = at_local(account, 23, 30)
    submit(instance, firm, 1)
    clock.advance(timedelta(hours=1))
    submit(instance, firm, 2)
    assert late.date() == clock.now().date()  # one UTC day ...
    found = figures.for_period(account, 30)
    today = local_today(account)
    assert found.per_day[-1] == (today, 1)  # ... two Tokyo days
    assert found.per_day[-2] == (today - timedelta(days=1), 1)


def test_the_period_is_today_and_the_days_before_it(instance, firm):
    account = firm["account"]
    at_local(account, 12)
    submit(instance, firm, 1)
    clock.advance(timedelta(days=30))
    submit(instance, firm, 2)
    assert figures.for_period(account, 30).total == 1  # 30 days ago is outside
    ninety = figures.for_period(account, 90)
    assert ninety.total == 2 and len(ninety.per_day) == 90
    assert dict(ninety.per_day)[local_today(account) - timedelta(days=30)] == 1
    clock.advance(timedelta(days=60))
    assert figures.for_period(account, 90).total == 1


def test_time_to_accept_per_vendor_from_the_request_to_that_vendors_accept(instance, firm):
    vera_waits = [10, 20, 30, 40, 50]
    for n, wait in enumerate(vera_waits):
        d = submit(instance, firm, n)
        clock.advance(timedelta(minutes=wait))
        accept(instance, d, firm["vera"])
    d = submit(instance, firm, 9)  # Vera declines after 5 minutes, Walt accepts 7 later
    clock.advance(timedelta(minutes=5))
    dispatch.act(instance, dispatch.action_token(instance, d, firm["vera"], "decline"))
    clock.advance(timedelta(minutes=7))
    accept(instance, d, firm["walt"])
    accept(instance, d, firm["walt"])  # twice changes nothing

    times = figures.for_period(firm["account"], 30).accept_times
    assert [t.vendor for t in times] == ["Vera Plumb", "Walt Water"]  # slowest first
    vera, walt = times
    assert vera.accepted == 5
    p90 = statistics.quantiles(vera_waits, n=10, method="inclusive")[8]
    assert minutes(vera.median) == pytest.approx(statistics.median(vera_waits), abs=0.05)
    assert minutes(vera.p90) == pytest.approx(p90, abs=0.05)  # the real code takes a moment
    assert walt.accepted == 1 and walt.median == walt.p90
    assert minutes(walt.median) == pytest.approx(12, abs=0.05)


def test_shares_escalated_and_unassigned(instance, firm, mailbox):
    submit(instance, firm, 1)  # nobody answers this one
    unrouted = owner_setup.items(firm["account"], owner_setup.KINDS["categories"])[-1]
    assert unrouted.id not in (firm["plumbing"].id, firm["locked"].id)
    submit(instance, firm, 2, category=str(unrouted.id))  # no route: unassigned at once
    answered = submit(instance, firm, 3)
    accept(instance, submit(instance, firm, 4), firm["vera"])
    mailbox.deliver()  # the silence timers start when the emails go out
    accept(instance, answered, firm["vera"])
    clock.advance(timedelta(minutes=16))
    assert dispatch.escalate_due(instance) == 1  # Vera was silent: on to Walt
    clock.advance(timedelta(minutes=16))
    assert dispatch.escalate_due(instance) == 1  # Walt too: nobody left
    found = figures.for_period(firm["account"], 30)
    assert found.total == 4
    assert found.escalated == 1 and found.escalated_share == 0.25
    assert found.unassigned == 2 and found.unassigned_share == 0.5


def test_another_accounts_dispatches_are_never_counted(instance, firm, owners):
    alpha, beta = owners
    vendor = owner_setup.save(
        beta, owner_setup.KINDS["vendors"], {"name": "Bea Counsel", "email": "bea@beta.example"}
    )
    category = Category.select().where(Category.account == beta).first()
    owner_setup.create_route(beta, "", str(category.id), "always", [str(vendor.id)])
    for n in range(3):
        d = dispatch.submit(
            instance,
            beta,
            {"category": str(category.id), "name": "Cal", "phone": phone(n), "description": "x"},
        ).dispatch
        clock.advance(timedelta(minutes=3))
        accept(instance, d, vendor)
    accept(instance, submit(instance, firm, 7), firm["vera"])

    mine = figures.for_period(alpha, 90)
    assert mine.total == 1 and [t.vendor for t in mine.accept_times] == ["Vera Plumb"]
    theirs = figures.for_period(beta, 90)
    assert theirs.total == 3 and [t.vendor for t in theirs.accept_times] == ["Bea Counsel"]
    assert theirs.unassigned == 0 and mine.unassigned == 0


def test_nothing_yet_is_zero_not_an_error(owners):
    alpha, _ = owners
    found = figures.for_period(alpha, 30)
    assert found.total == 0 and found.busiest is None and found.accept_times == []
    assert found.escalated_share == found.unassigned_share == 0
    assert len(found.per_day) == 30 and found.quiet_days == 30
