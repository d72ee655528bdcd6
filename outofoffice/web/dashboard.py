"""The owner's dashboard. Areas appear in the navigation as their pages exist."""

import bottle

from outofoffice import accounts
from outofoffice.web.context import instance, page, require_owner

# (label, path); a label of None takes the account's subjects label (SPEC section 5).
AREAS = [
    ("Overview", "/dashboard"),
    ("Dispatches", "/dashboard/dispatches"),
    ("Vendors", "/dashboard/vendors"),
    (None, "/dashboard/subjects"),
    ("Categories", "/dashboard/categories"),
    ("Routes", "/dashboard/routes"),
    ("Settings", "/dashboard/settings"),
    ("Account", "/dashboard/account"),
    ("Billing", "/dashboard/billing"),
]


def dashboard_page(template: str, **context) -> str:
    owner = require_owner()
    subjects_label = accounts.labels(owner.industry)["subjects"]
    rules = {route.rule for route in bottle.request.app.routes if route.method == "GET"}
    areas = [(label or subjects_label, path) for label, path in AREAS if path in rules]
    return page(template, areas=areas, **context)


def install(app: bottle.Bottle) -> None:
    @app.get("/dashboard")
    def overview():
        owner = require_owner()
        return dashboard_page(
            "dashboard/overview.html", routing_url=instance().routing_url(owner.slug)
        )
