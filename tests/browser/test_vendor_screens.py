"""The vendor's screens, at a phone's size and a desktop's, opened from the links in the
vendor's email: the action page, after Accept, the resolve step, a link for a request
that moved on to the next vendor, and a bad link.

One real `outofoffice serve` with the demo firm for the module (SQLite: the screens do
not depend on the database). Each test sends its own request from its own phone.
"""

import re

import pytest

from tests.browser.screens import (
    FIRM_PHONE,
    VENDOR_PHONES,
    fail_on,
    journey_fixtures,
    read_mail,
    submit_request,
    text_of,
)

pytestmark = pytest.mark.sqlite_only

CALLER_PHONES = {
    "action": "+1 773 555 0161",
    "accepted": "+1 773 555 0162",
    "resolve": "+1 773 555 0163",
    "moved-on": "+1 773 555 0164",
    "bad-link": "+1 773 555 0165",
}
LINK_LINE = re.compile(r"^\s*([A-Za-z]+)\s*:?\s*(https?://\S+/v/\S+)\s*$", re.MULTILINE)


demo, screens = journey_fixtures("vendor", [FIRM_PHONE, *VENDOR_PHONES, *CALLER_PHONES.values()])


def vendor_emails(demo, reference: str, count: int = 1) -> list:
    """The vendor emails about this request, oldest first, once there are `count`."""

    def about(message):
        return reference in message["Subject"] and "/v/" in text_of(message)

    found = read_mail(demo.mail_dir, about, count)
    assert len(found) >= count, f"{count} vendor email(s) about {reference} never came"
    return found


def links_of(message) -> dict[str, str]:
    """The email's action links by the word before each: accept, decline, resolved."""
    links = {word.lower(): url for word, url in LINK_LINE.findall(text_of(message))}
    assert {"accept", "decline", "resolved"} <= set(links), text_of(message)
    return links


@pytest.fixture(scope="module")
def sent(demo, browser):
    """One plumbing request per test, each from its own phone, all sent first so their
    emails come in one delivery pass: name -> (reference, the first vendor's email)."""
    context = browser.new_context()
    page = context.new_page()
    references = {}
    for name, phone in CALLER_PHONES.items():
        submit_request(page, demo, phone, f"Leak under the sink ({name})")
        assert "/s/" in page.url, f"the request was not taken: {page.inner_text('main')}"
        reference = re.search(r"[A-Z]{2,}-[A-Z0-9-]+", page.inner_text("h1"))
        assert reference, f"no reference in {page.inner_text('h1')!r}"
        references[name] = reference.group(0)
    context.close()
    return {name: (ref, vendor_emails(demo, ref)[0]) for name, ref in references.items()}


def press(page, name: str) -> None:
    page.get_by_role("button", name=name).click()
    page.wait_for_load_state()


def test_action_page(demo, screens, sent):
    reference, mail = sent["action"]
    page = screens.new_page()
    response = page.goto(links_of(mail)["accept"])
    assert response.status == 200, f"accept link: HTTP {response.status}"
    assert reference in page.content()
    assert page.get_by_role("button", name="Accept").count() == 1
    screens.expect_honest(page, "action")


def test_after_accept(demo, screens, sent):
    reference, mail = sent["accepted"]
    page = screens.new_page()
    page.goto(links_of(mail)["accept"])
    press(page, "Accept")
    assert page.get_by_role("button", name="Accept").count() == 0, "Accept is still offered"
    screens.expect_honest(page, "accepted")


def test_resolve_step(demo, screens, sent):
    reference, mail = sent["resolve"]
    links = links_of(mail)
    page = screens.new_page()
    page.goto(links["accept"])
    press(page, "Accept")
    response = page.goto(links["resolved"])
    assert response.status == 200, f"resolve link: HTTP {response.status}"
    problems = screens.check(page, "resolve")
    press(page, "Resolved")
    assert page.get_by_role("button", name="Resolved").count() == 0, "Resolved is still offered"
    problems += screens.check(page, "resolved")
    fail_on(problems)


def test_link_of_a_request_that_moved_on(demo, screens, sent):
    reference, mail = sent["moved-on"]
    links = links_of(mail)
    page = screens.new_page()
    page.goto(links["decline"])
    press(page, "Decline")
    later = vendor_emails(demo, reference, count=2)
    assert len({m["To"] for m in later}) > 1, "the request did not move on to another vendor"
    response = page.goto(links["accept"])
    assert response.status >= 400, f"the first vendor's accept link still works: {page.url}"
    assert CALLER_PHONES["moved-on"] not in page.inner_text("body"), (
        "a vendor the request moved away from still sees the caller's phone"
    )
    screens.expect_honest(page, "moved-on")


def test_bad_link(demo, screens, sent):
    _, mail = sent["bad-link"]
    accept = links_of(mail)["accept"]
    tampered = accept[:-4] + ("AAAA" if not accept.endswith("AAAA") else "BBBB")
    page = screens.new_page()
    response = page.goto(tampered)
    assert response.status >= 400, f"a tampered link works: HTTP {response.status}"
    assert page.get_by_role("button", name="Accept").count() == 0
    screens.expect_honest(page, "bad-link")
