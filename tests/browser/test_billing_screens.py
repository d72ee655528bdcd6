"""The owner's billing screens at a phone's size and a desktop's, on a real `serve`
billing through Stripe's stand-in: the trial's banner, the Billing area the navigation
lists, and Subscribe taking the owner to Stripe's Checkout page."""

import pytest

from tests import stripe_standin as st
from tests.browser.screens import (
    FIRM_PHONE,
    demo_server,
    fail_on,
    journey_fixtures,
    signed_in_owner,
)

pytestmark = pytest.mark.sqlite_only


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    with st.StripeStandIn() as stripe:
        demo = demo_server(tmp_path_factory.mktemp("billing"), **st.config_sections(stripe))
        demo.stripe = stripe
        yield demo
        demo.server.stop()


screens = journey_fixtures("billing", [FIRM_PHONE])[1]


@pytest.fixture
def owner(demo, screens):
    return signed_in_owner(demo, screens)


def test_the_trial_shows_on_every_page_and_billing_is_listed(demo, screens, owner):
    assert "Your free trial ends in 14 days" in owner.inner_text(".billing-banner")
    assert owner.locator("nav.areas a[href='/dashboard/billing']").count() == 1
    owner.goto(demo.url + "/dashboard/billing")
    assert "Trial: 14 days left" in owner.inner_text("#state")
    fail_on(screens.check(owner, "billing"))


def test_subscribe_goes_to_stripes_checkout(demo, screens, owner):
    # Stripe's own page is out of reach here: the browser is answered in its place
    owner.route("https://checkout.stripe.com/**", lambda route: route.fulfill(body="Checkout"))
    owner.goto(demo.url + "/dashboard/billing")
    owner.get_by_role("button", name="Subscribe").click()
    owner.wait_for_url("https://checkout.stripe.com/c/pay/cs_test_*")
    (call,) = demo.stripe.calls("POST", "/v1/checkout/sessions")
    assert call["form"]["mode"] == "subscription"
