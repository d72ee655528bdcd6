"""The caller's screens, at a phone's size and a desktop's: the routing page fresh and
after a mistake, the status page, a repeat, a closed firm and an unknown address.

The screens do not depend on the database, so these run on SQLite alone, against one
real `outofoffice serve` with the demo firm for the whole module.
"""

import pytest

from tests.browser.screens import (
    FIRM_PHONE,
    VENDOR_PHONES,
    fill_request,
    journey_fixtures,
    submit_request,
)

pytestmark = pytest.mark.sqlite_only

# The phones this module's callers type, one per test so none is taken for a repeat.
STATUS_PHONE = "+1 773 555 0166"
REPEAT_PHONE = "+1 312 555 0177"
ERROR_PHONE = "+1 872 555 0133"


demo, screens = journey_fixtures(
    "caller", [FIRM_PHONE, *VENDOR_PHONES, STATUS_PHONE, REPEAT_PHONE, ERROR_PHONE]
)


def test_routing_page(demo, screens):
    page = screens.new_page()
    response = page.goto(demo.routing_url)
    assert response.status == 200, f"routing page: HTTP {response.status}"
    screens.expect_honest(page, "routing")


def error_summary_problems(page) -> list[str]:
    """What a caller who typed a wrong phone number must get: an "Error:" title, focus
    on the error summary, a link from it to the phone field, and the field marked
    invalid and described by its error."""
    found = page.evaluate(
        """() => {
      const summary = document.getElementById("error-summary");
      const phone = document.getElementById("f-phone");
      const described = ((phone && phone.getAttribute("aria-describedby")) || "")
        .split(/\\s+/).filter(Boolean);
      const link = summary && summary.querySelector("a[href='#f-phone']");
      return {
        title: document.title,
        active: document.activeElement ? document.activeElement.id : "",
        summary: !!summary,
        summaryText: summary ? summary.innerText.trim() : "",
        linkText: link ? link.innerText.trim() : null,
        invalid: phone ? phone.getAttribute("aria-invalid") : "(no #f-phone)",
        described: described.map(id => {
          const el = document.getElementById(id);
          return {id, text: el ? el.innerText.trim() : null, visible: !!el && el.checkVisibility()};
        }),
      };
    }"""
    )
    problems = []
    if not found["title"].startswith("Error:"):
        problems.append(f"title {found['title']!r} does not start with 'Error:'")
    if not found["summary"]:
        problems.append("no error summary (#error-summary)")
    if found["active"] != "error-summary":
        problems.append(f"focus is on {found['active'] or 'the page'!r}, not #error-summary")
    if found["linkText"] is None:
        problems.append(f"the error summary has no link to #f-phone: {found['summaryText']!r}")
    if found["invalid"] != "true":
        problems.append(f"#f-phone has aria-invalid={found['invalid']!r}, not 'true'")
    if not found["described"]:
        problems.append("#f-phone has no aria-describedby")
    for ref in found["described"]:
        if ref["text"] is None:
            problems.append(f"#f-phone's aria-describedby names #{ref['id']}, which is missing")
    errors = [r["text"] for r in found["described"] if r["text"] and r["visible"]]
    said = found["linkText"] or found["summaryText"] or ""

    def same(a: str, b: str) -> bool:
        a, b = " ".join(a.lower().split()), " ".join(b.lower().split())
        return bool(a and b) and (a in b or b in a)

    if found["described"] and not any(same(text, said) for text in errors):
        problems.append(
            f"none of #f-phone's descriptions {[r['text'] for r in found['described']]!r} "
            f"shows the error the summary gives ({said!r})"
        )
    return [f"error handling: {p}" for p in problems]


def test_routing_page_after_a_wrong_phone_number(demo, screens):
    page = screens.new_page()
    page.goto(demo.routing_url)
    fill_request(page, "12", "The boiler makes a banging noise")
    page.get_by_role("button", name="Send request").click()
    page.wait_for_load_state()
    assert "/s/" not in page.url, "a phone number of '12' was accepted"
    screens.expect_honest(page, "routing-error", extra=error_summary_problems)


def test_status_page_after_a_good_request(demo, screens):
    page = screens.new_page()
    submit_request(page, demo, STATUS_PHONE, "Water is coming through the ceiling")
    assert "/s/" in page.url, f"the request was not taken: {page.inner_text('main')}"
    screens.expect_honest(page, "status")


def test_repeat_of_a_request(demo, screens):
    page = screens.new_page()
    submit_request(page, demo, REPEAT_PHONE, "The kitchen tap will not turn off")
    first = page.url
    assert "/s/" in first, f"the request was not taken: {page.inner_text('main')}"
    submit_request(page, demo, REPEAT_PHONE, "The kitchen tap still runs")
    assert page.url != first and "/s/" not in page.url, "the repeat made a second request"
    screens.expect_honest(page, "repeat")


def test_closed_page_of_a_disabled_firm(demo, screens):
    printed = demo.cli("demo", "--slug", "shut-firm")
    demo.cli("accounts", "disable", "shut-firm")
    routing_url = printed.split("routing page:", 1)[1].split()[0]
    page = screens.new_page()
    response = page.goto(routing_url)
    assert response.status == 200, f"closed page: HTTP {response.status}"
    assert page.locator("form button").count() == 0, "a disabled firm still takes requests"
    screens.expect_honest(page, "closed")


def test_not_found_page(demo, screens):
    page = screens.new_page()
    response = page.goto(f"{demo.url}/r/no-such-firm")
    assert response.status == 404, f"unknown slug: HTTP {response.status}"
    screens.expect_honest(page, "not-found")
