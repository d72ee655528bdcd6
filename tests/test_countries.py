"""The firm's country and the emergency number its callers are told: from its time zone
at signup, chosen in the settings, carried by the export, filled in for firms that
existed before."""

from __future__ import annotations

import json

import pytest

from outofoffice import accounts, countries, db, migrations, portability
from outofoffice.models import Account, Category
from tests.conftest import DATA, client, csrf_of, request_form, sign_in

SAMPLE = DATA / "export-sample.json"


def emergency_links(page) -> list[str]:
    return [a["href"] for a in page.html.select("a.emergency")]


def test_a_firm_in_london_shows_999_and_112_not_911(app, firm):
    page = app.get("/r/alpha")  # Alpha's time zone is Europe/London
    assert emergency_links(page) == ["tel:999", "tel:112"]
    assert "Call 999" in page.text and "911" not in page.text
    status = app.post("/r/alpha", request_form(firm)).follow()
    assert "tel:999" in status.text and "911" not in status.text


def test_a_firm_in_chicago_shows_911(instance, conn):
    account = accounts.create_account(
        email="cy@chi.example",
        name="Cy",
        business_name="Chicago Flats",
        slug="chiflats",
        industry="property_management",
        timezone="America/Chicago",
    )
    assert account.country == "US"
    electrical = Category.get(Category.account == account, Category.name == "Electrical")
    assert electrical.description.endswith("call 911.")
    assert emergency_links(client(instance).get("/r/chiflats")) == ["tel:911"]


@pytest.mark.parametrize(
    ("timezone", "country", "numbers"),
    [
        ("Europe/Berlin", "DE", ("112",)),
        ("Australia/Sydney", "AU", ("000", "112")),
        ("America/New_York", "US", ("911",)),
        ("UTC", "", ("112",)),
    ],
)
@pytest.mark.no_database
def test_the_country_comes_from_the_time_zone(timezone, country, numbers):
    assert countries.of_timezone(timezone) == country
    assert countries.emergency_numbers(country) == numbers


def test_the_owner_chooses_the_country_in_the_settings(instance, firm):
    app = client(instance)
    page = sign_in(app, instance, firm["account"]) and app.get("/dashboard/settings")
    form = page.forms["settings"]
    assert form["country"].value == "GB"
    form["country"] = "IE"
    form.submit().follow()
    with db.connection():
        assert Account.get_by_id(firm["account"].id).country == "IE"
    assert emergency_links(client(instance).get("/r/alpha")) == ["tel:112", "tel:999"]
    forged = {k: v for k, v in form.submit_fields()} | {
        "country": "XX",
        "csrf_token": csrf_of(page),
    }
    answer = app.post("/dashboard/settings", forged, status=400)
    assert "Choose the country" in answer.text
    with db.connection():
        assert Account.get_by_id(firm["account"].id).country == "IE"


def test_the_export_carries_the_country_and_files_without_one_still_import(instance, conn):
    data = json.loads(SAMPLE.read_text())
    assert "country" not in data["account"]
    account = portability.import_account(instance, data)
    assert account.country == "US"  # from America/Chicago
    again = portability.export(instance, account)
    assert again["account"]["country"] == "US"
    data["dispatches"] = []  # their references are taken by the first import
    data["account"] |= {"slug": "elsewhere", "email": "o@elsewhere.example", "country": "CA"}
    assert portability.import_account(instance, data).country == "CA"
    data["account"] |= {"slug": "bad", "email": "o@bad.example", "country": "Canada"}
    with pytest.raises(portability.ImportError_) as caught:
        portability.import_account(instance, data)
    assert "account.country" in " ".join(caught.value.errors.values())


def test_firms_from_before_get_their_country_from_their_time_zone(instance, conn):
    account = accounts.create_account(
        email="ol@old.example",
        name="Ol",
        business_name="Old Firm",
        slug="oldfirm",
        industry="legal",
        timezone="Europe/Paris",
    )
    Account.update(country="").where(Account.id == account.id).execute()
    step = dict(migrations.STEPS)["the firm's country and its emergency number"]
    with db.write():
        step(db.database)
    assert Account.get_by_id(account.id).country == "FR"
