"""The owner's screens, at a phone's size and a desktop's: the public pages (home,
login, signup, privacy), every area the dashboard's navigation lists, and one dispatch.

One real `outofoffice serve` with the demo firm for the module (SQLite: the screens do
not depend on the database); a caller sends a request first, so the dispatch pages
have something to show.
"""

import pytest

from tests.browser.screens import (
    FIRM_PHONE,
    VENDOR_PHONES,
    demo_server,
    fail_on,
    journey_fixtures,
    signed_in_owner,
    submit_request,
)

pytestmark = pytest.mark.sqlite_only

CALLER_PHONE = "+1 773 555 0188"
# SPEC section 5: the areas an owner has (Reports and Billing are listed when they exist)
SPEC_AREAS = [
    "/dashboard",
    "/dashboard/dispatches",
    "/dashboard/vendors",
    "/dashboard/subjects",
    "/dashboard/categories",
    "/dashboard/routes",
    "/dashboard/settings",
    "/dashboard/account",
]


@pytest.fixture(scope="module")
def demo(tmp_path_factory, browser):
    demo = demo_server(tmp_path_factory.mktemp("owner"))
    context = browser.new_context()
    caller = context.new_page()
    submit_request(caller, demo, CALLER_PHONE, "No heat in the whole building")
    assert "/s/" in caller.url, f"the request was not taken: {caller.inner_text('main')}"
    context.close()
    yield demo
    demo.server.stop()


screens = journey_fixtures("owner", [FIRM_PHONE, *VENDOR_PHONES, CALLER_PHONE])[1]


@pytest.fixture
def owner(demo, screens):
    """A page signed in as the demo firm's owner, through a fresh login link."""
    return signed_in_owner(demo, screens)


def area_name(path: str) -> str:
    return "overview" if path.rstrip("/") == "/dashboard" else path.rstrip("/").rsplit("/", 1)[1]


@pytest.mark.parametrize(
    ("path", "name"),
    [("/", "home"), ("/login", "login"), ("/signup", "signup"), ("/privacy", "privacy")],
)
def test_public_page(demo, screens, path, name):
    page = screens.new_page()
    response = page.goto(demo.url + path)
    assert response.status == 200, f"{path}: HTTP {response.status}"
    screens.expect_honest(page, name)


def test_every_area_the_dashboard_lists(demo, screens, owner):
    nav = owner.locator("nav.areas a[href]")
    areas = nav.evaluate_all(
        "links => links.map(a => [a.innerText.trim(), a.getAttribute('href')])"
    )
    paths = [href for _, href in areas]
    missing = [path for path in SPEC_AREAS if path not in paths]
    assert not missing, f"the dashboard's navigation lacks {missing}: {areas}"
    problems = []
    for label, path in areas:
        response = owner.goto(demo.url + path)
        if response.status != 200:
            problems.append(
                f"[owner {area_name(path)}] nav link {label!r} -> HTTP {response.status}"
            )
            continue
        current = owner.locator("nav.areas a[aria-current='page']").evaluate_all(
            "links => links.map(a => a.getAttribute('href'))"
        )
        if current != [path]:
            problems.append(
                f"[owner {area_name(path)}] the navigation marks {current} as the current page"
            )
        problems += screens.check(owner, area_name(path))
    fail_on(problems)


def test_one_dispatch(demo, screens, owner):
    owner.goto(f"{demo.url}/dashboard/dispatches")
    link = owner.locator("main a[href^='/dashboard/dispatches/']").first
    assert link.count(), "the dispatch history lists no dispatch"
    link.click()
    owner.wait_for_load_state()
    assert CALLER_PHONE in owner.inner_text("body"), "the dispatch does not show the caller's phone"
    screens.expect_honest(owner, "dispatch")
