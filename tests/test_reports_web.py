"""/dashboard/reports and its CSV over HTTP: what the owner sees, and who may see it."""

import csv
import io
from datetime import timedelta

import pytest

from outofoffice import clock, db, dispatch, owner_setup
from outofoffice.models import Vendor
from tests.conftest import at_local, request_form, sign_in


def submit(instance, firm, n: int):
    form = request_form(firm, phone=f"+1 555 {2000 + n}")
    with db.connection():
        return dispatch.submit(instance, firm["account"], form).dispatch


def accept(instance, d, vendor):
    with db.connection():
        dispatch.act(instance, dispatch.action_token(instance, d, vendor, "accept"))


@pytest.fixture
def busy(instance, firm):
    """Alpha: three requests today, Vera accepted two of them, 10 and 20 minutes in;
    at midday, so that whatever the hour the tests run, all three fall on one day."""
    at_local(firm["account"], 12)
    for n, wait in enumerate((10, 20)):
        d = submit(instance, firm, n)
        clock.advance(timedelta(minutes=wait))
        accept(instance, d, firm["vera"])
    submit(instance, firm, 3)
    return firm


def rename_vera(firm, name: str) -> None:
    with db.connection():
        Vendor.update(name=name).where(Vendor.id == firm["vera"].id).execute()


def csv_rows(response) -> list[list[str]]:
    return list(csv.reader(io.StringIO(response.text)))


def test_the_owner_sees_charts_and_the_same_numbers_in_tables(app, instance, busy):
    sign_in(app, instance, busy["account"])
    page = app.get("/dashboard/reports")
    current = page.html.find("nav", class_="areas").find("a", attrs={"aria-current": "page"})
    assert current.text == "Reports"
    svgs = page.html.find_all("svg")
    assert len(svgs) == 3
    for svg in svgs:
        assert svg["role"] == "img" and svg["width"] == "100%" and svg["viewbox"]
        title_id, desc_id = svg["aria-labelledby"].split()
        assert svg.find("title", id=title_id).text and svg.find("desc", id=desc_id).text
    days, accept_chart, shares = (svg.find("desc").text for svg in svgs)
    assert "3 requests in the last 30 days" in days
    assert "Vera Plumb: median 15 min, 90th percentile 19 min, over 2 accepted." in accept_chart
    assert "0 escalated (0%) and 0 were left unassigned (0%)" in shares

    rows = page.html.find("table", id="per-day").find("tbody").find_all("tr")
    assert len(rows) == 30 and rows[-1].find_all("td")[1].text == "3"
    assert [td.text for td in rows[0].find_all("td")][1] == "0"  # a quiet day is there too
    vera = page.html.find("table", id="accept-times").find("tbody").find("tr")
    assert [td.text for td in vera.find_all("td")] == ["Vera Plumb", "2", "15 min", "19 min"]
    assert not page.html.find_all(style=True)  # the CSP allows no style attribute
    assert all(script.get("src") for script in page.html.find_all("script"))  # nor inline


def test_ninety_days_is_a_link_away(app, instance, busy):
    sign_in(app, instance, busy["account"])
    page = app.get("/dashboard/reports")
    link = page.html.find("a", string="Last 90 days")
    ninety = app.get(link["href"])
    assert ninety.html.find("a", attrs={"aria-current": "page"}, href=link["href"])
    assert len(ninety.html.find("table", id="per-day").find("tbody").find_all("tr")) == 90
    assert "3 requests in the last 90 days" in ninety.html.find("desc").text
    csv_link = ninety.html.find("a", string="Download these figures as CSV")["href"]
    assert csv_link == "/dashboard/reports.csv?days=90"


def test_a_period_without_requests_says_so_instead_of_an_empty_chart(app, instance, firm):
    sign_in(app, instance, firm["account"])
    page = app.get("/dashboard/reports")
    assert "No requests in the last 30 days yet" in page.text and not page.html.find("svg")
    submit(instance, firm, 1)
    page = app.get("/dashboard/reports")
    assert "No vendor accepted a request in the last 30 days yet" in page.text
    assert len(page.html.find_all("svg")) == 2
    clock.advance(timedelta(days=31))
    sign_in(app, instance, firm["account"])  # the session ended after 30 days
    assert "No requests in the last 30 days yet" in app.get("/dashboard/reports").text
    assert "No requests" not in app.get("/dashboard/reports?days=90").text


@pytest.mark.parametrize("days", ["7", "abc", "-30", "30.0", "9" * 30])
def test_a_period_not_offered_is_explained(app, instance, firm, days):
    sign_in(app, instance, firm["account"])
    for path in ("/dashboard/reports", "/dashboard/reports.csv"):
        page = app.get(f"{path}?days={days}", status=400)
        assert "30 or 90 days" in page.text


def test_a_visitor_not_signed_in_is_sent_to_log_in(app, busy):
    for path in ("/dashboard/reports", "/dashboard/reports.csv?days=30"):
        response = app.get(path, status=303)
        assert response.headers["Location"] == "/login"


def test_beta_never_sees_alphas_figures(app, instance, busy, owners):
    _, beta = owners
    sign_in(app, instance, beta)
    page = app.get("/dashboard/reports?days=90")
    assert "No requests in the last 90 days yet" in page.text
    assert "Vera Plumb" not in page.text
    rows = csv_rows(app.get("/dashboard/reports.csv?days=90"))
    assert ["requests_total", "", "", "0"] in rows
    assert not any("Vera Plumb" in cell for row in rows for cell in row)


def test_the_csv_holds_the_periods_figures(app, instance, busy):
    rename_vera(busy, '=HYPERLINK("http://evil.example")')
    sign_in(app, instance, busy["account"])
    response = app.get("/dashboard/reports.csv?days=30")
    assert response.content_type == "text/csv"
    disposition = response.headers["Content-Disposition"]
    assert disposition.startswith('attachment; filename="alpha-report-30-days-')
    rows = csv_rows(response)
    assert rows[0] == ["figure", "day", "vendor", "value"]
    by_figure: dict[str, list[list[str]]] = {}
    for figure, *rest in rows[1:]:
        by_figure.setdefault(figure, []).append(rest)
    first, last = by_figure["first_day"][0][0], by_figure["last_day"][0][0]
    assert disposition.endswith(f'-{last}.csv"')
    days = by_figure["requests"]
    assert len(days) == 30 and days[0][0] == first and days[-1] == [last, "", "3"]
    assert by_figure["requests_total"] == [["", "", "3"]]
    assert by_figure["timezone"] == [["", "", "Europe/London"]]
    assert by_figure["unassigned_percent"] == [["", "", "0.0"]]
    vendor = '\'=HYPERLINK("http://evil.example")'  # a spreadsheet will not run it
    assert by_figure["accepted"] == [["", vendor, "2"]]
    assert by_figure["accept_median_minutes"] == [["", vendor, "15.0"]]
    assert by_figure["accept_p90_minutes"] == [["", vendor, "19.0"]]


def test_a_vendors_name_is_text_never_markup(app, instance, busy):
    name = "<script>alert(1)</script> & Sons"
    rename_vera(busy, name)
    sign_in(app, instance, busy["account"])
    page = app.get("/dashboard/reports")
    assert "<script>alert" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; Sons" in page.text
    chart = page.html.find_all("svg")[1]
    assert name in [t.text for t in chart.find_all("text")]  # drawn as the words it is
    assert name in chart.find("desc").text


def test_a_deactivated_vendor_still_has_their_figures(app, instance, busy):
    with db.connection():
        vera = owner_setup.get(busy["account"], owner_setup.KINDS["vendors"], busy["vera"].id)
        vera.active = False
        vera.save(only=[Vendor.active])
    sign_in(app, instance, busy["account"])
    assert "Vera Plumb" in app.get("/dashboard/reports").html.find("table", id="accept-times").text
