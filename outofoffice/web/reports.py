"""/dashboard/reports: the account's figures as charts and tables, and as CSV.

The period is a plain link (``?days=30`` or ``?days=90``), so the page works without
JavaScript; every number comes from figures.py for the signed-in owner's account.
"""

from __future__ import annotations

import bottle

from outofoffice import charts, figures
from outofoffice.web.context import fail, require_owner
from outofoffice.web.dashboard import dashboard_page

BAD_PERIOD = "Reports cover the last 30 or 90 days: use ?days=30 or ?days=90."


def _period() -> int:
    raw = bottle.request.query.get("days", "") or str(figures.DEFAULT_PERIOD)
    try:
        return figures.period_days(int(raw) if raw.isdigit() else 0)
    except ValueError:
        raise fail(400, BAD_PERIOD) from None


def reports_page():
    owner = require_owner()
    found = figures.for_period(owner, _period())
    drawn = {}
    if found.total:
        drawn["days"] = charts.per_day_chart(found)
        drawn["shares"] = charts.shares_chart(found)
        if found.accept_times:
            drawn["accept"] = charts.accept_chart(found.accept_times, found.days)
    return dashboard_page(
        "dashboard/reports.html",
        figures=found,
        periods=figures.PERIODS,
        charts=drawn,
        long_day=charts.long_day,
        duration=charts.duration,
        percent=charts.percent,
    )


def reports_csv():
    owner = require_owner()
    found = figures.for_period(owner, _period())
    bottle.response.content_type = "text/csv; charset=utf-8"
    name = f"{owner.slug}-report-{found.days}-days-{found.last_day.isoformat()}.csv"
    bottle.response.set_header("Content-Disposition", f'attachment; filename="{name}"')
    return figures.to_csv(found)


def install(app: bottle.Bottle) -> None:
    app.get("/dashboard/reports", callback=reports_page)
    app.get("/dashboard/reports.csv", callback=reports_csv)
