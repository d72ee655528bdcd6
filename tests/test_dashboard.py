"""The owner's dashboard over HTTP: setup pages, settings, history, and who may see what."""

import csv
import io
import json
import re

import pytest

from outofoffice import db, dispatch, owner_setup, portability
from outofoffice.models import Account, Category, Dispatch, Route, Subject, Vendor
from tests.conftest import DATA, Client, as_imported, csrf_of, request_form, sign_in

SAMPLE = DATA / "export-sample.json"


@pytest.fixture
def owner_app(app, instance, firm):
    page = sign_in(app, instance, firm["account"])
    return app, csrf_of(page)


def test_the_overview_shows_a_checklist_until_a_request_can_be_routed(app, instance, owners):
    page = sign_in(app, instance, owners[0])
    assert "Add a vendor" in page.text and "http://oop.example.test/r/alpha" in page.text
    nav = [a.text for a in page.html.find("nav", class_="areas").find_all("a")]
    assert nav[:6] == ["Overview", "Dispatches", "Vendors", "Properties", "Categories", "Routes"]


def test_no_checklist_once_routing_works(owner_app):
    app, _ = owner_app
    assert "Before the first request" not in app.get("/dashboard").text


def test_adding_editing_and_deleting_a_vendor(owner_app):
    app, token = owner_app
    form = app.get("/dashboard/vendors").forms["add"]
    form["name"], form["email"], form["phone"] = "Nina New", "nina@new.example", "+1 555 0123"
    assert form.submit().status_int == 303
    with db.connection():
        nina = Vendor.get(Vendor.email == "nina@new.example")
    edit = app.get(f"/dashboard/vendors/{nina.id}").forms["edit"]
    edit["company"] = "New Co"
    edit.submit()
    assert "New Co" in app.get("/dashboard/vendors").text
    app.post(f"/dashboard/vendors/{nina.id}/delete", {"csrf_token": token})
    with db.connection():
        assert not Vendor.select().where(Vendor.email == "nina@new.example").exists()


def test_a_bad_vendor_is_explained_and_not_stored(owner_app):
    app, token = owner_app
    page = app.post(
        "/dashboard/vendors", {"csrf_token": token, "name": "", "email": "nope"}, status=400
    )
    assert "Enter the name" in page.html.find(id="e-name").text
    assert "email address" in page.html.find(id="e-email").text


def test_subjects_import_from_csv_all_or_nothing(owner_app):
    app, token = owner_app
    bad = "name,address,reference\nPine House,1 Pine Rd,PIN\n,no name,X\nBirch,2 Birch,B,extra\n"
    page = app.post(
        "/dashboard/subjects/import",
        {"csrf_token": token},
        upload_files=[("file", "props.csv", bad.encode())],
        status=400,
    )
    assert "line 3" in page.text and "line 4" in page.text
    with db.connection():
        assert not Subject.select().where(Subject.name == "Pine House").exists()
    good = "Pine House,1 Pine Rd,PIN\nBirch Row,2 Birch,BRC\n"
    app.post(
        "/dashboard/subjects/import",
        {"csrf_token": token},
        upload_files=[("file", "props.csv", good.encode())],
        status=303,
    )
    text = app.get("/dashboard/subjects").text
    assert "Pine House" in text and "Birch Row" in text


def test_routes_are_created_and_their_order_changed(owner_app, firm):
    app, token = owner_app
    page = app.get("/dashboard/routes")
    assert "Vera Plumb" in page.text
    with db.connection():
        route = Route.select().order_by(Route.id).first()
    app.post(
        f"/dashboard/routes/{route.id}/move",
        {"csrf_token": token, "vendor": firm["walt"].id, "direction": "up"},
        status=303,
    )
    with db.connection():
        from outofoffice import owner_setup

        assert [v.name for v in owner_setup.chain(route)] == ["Walt Water", "Vera Plumb"]
    app.post(
        "/dashboard/routes",
        {
            "csrf_token": token,
            "subject": firm["oak"].id,
            "category": "",
            "when": "after_hours",
            "vendor": [firm["lock"].id, ""],
        },
        status=303,
    )
    with db.connection():
        assert Route.select().count() == 3
    page = app.post("/dashboard/routes", {"csrf_token": token, "when": "always"}, status=400)
    assert "at least one vendor" in page.text


def test_settings_save_business_hours_and_preferences(owner_app):
    app, _ = owner_app
    form = app.get("/dashboard/settings").forms["settings"]
    form["contact_phone"] = "+44 20 7946 0000"
    form["timezone"] = "America/Chicago"
    form["brand_colour"] = "teal"
    form.set("sat_start", "10:00", index=0)
    form.set("sat_end", "14:00", index=0)
    form.set("mon_start", "13:00", index=1)  # a second range on Monday, after a break
    form.set("mon_end", "17:30", index=1)
    form.set("mon_end", "12:00", index=0)
    form.set("holiday", "2026-12-26", index=0)
    form.set("holiday", "2026-12-25", index=1)
    form["notify"] = "digest"
    form["escalate_after_minutes"] = "10"
    assert "Saved" in form.submit().follow().text
    with db.connection():
        account = Account.get(Account.slug == "alpha")
    assert account.business_hours["sat"] == [["10:00", "14:00"]]
    assert account.business_hours["mon"] == [["09:00", "12:00"], ["13:00", "17:30"]]
    assert account.business_hours["holidays"] == ["2026-12-25", "2026-12-26"]
    assert (account.notify, account.escalate_after_minutes) == ("digest", 10)
    assert (account.timezone, account.brand_colour) == ("America/Chicago", "teal")
    page = app.get("/dashboard/settings")
    assert [i["value"] for i in page.html.select("input[name=holiday]")] == [
        "2026-12-25",
        "2026-12-26",
        "",
        "",
    ]
    form = page.forms["settings"]
    form.set("holiday", "", index=0)  # cleared: removed
    form.set("mon_start", "17:00", index=0)
    form.set("mon_end", "09:00", index=0)
    form["timezone"].force_value("Atlantis/Capital")
    page = form.submit(status=400)
    assert "ends before it starts" in page.text and "time zone" in page.text
    form = app.get("/dashboard/settings").forms["settings"]
    form.set("holiday", "", index=0)
    form.submit().follow()
    with db.connection():
        assert Account.get(Account.slug == "alpha").business_hours["holidays"] == ["2026-12-26"]


def test_history_filters_timeline_csv_reassign_and_close(owner_app, instance, firm, mailbox):
    app, token = owner_app
    with db.connection():
        first = dispatch.submit(
            instance, firm["account"], request_form(firm, name="=HYPERLINK(1)")
        ).dispatch
        dispatch.submit(
            instance,
            firm["account"],
            request_form(firm, category=str(firm["locked"].id), phone="+1 555 0177"),
        )
    mailbox.deliver()
    page = app.get("/dashboard/dispatches")
    assert "2 dispatches" in page.text
    filtered = app.get(f"/dashboard/dispatches?category={firm['locked'].id}")
    assert "1 dispatch" in filtered.text
    locked = firm["locked"].id
    assert "1 dispatch" in app.get(f"/dashboard/dispatches?status=sent&category={locked}").text
    assert "Use a date" not in app.get("/dashboard/dispatches?from=2026-01-01").text
    rows = list(csv.reader(io.StringIO(app.get("/dashboard/dispatches?format=csv").text)))
    assert rows[0][0] == "reference" and len(rows) == 3
    names = {row[5] for row in rows[1:]}
    assert "'=HYPERLINK(1)" in names  # a spreadsheet will not run it
    timeline = app.get(f"/dashboard/dispatches/{first.id}")
    rows = [(li.time.text, li.find("span").text) for li in timeline.html.select("ol.timeline li")]
    assert [text for _, text in rows] == [
        "Request received",
        "Route chosen; Vera Plumb asked first",
        "Email to Vera Plumb queued",
        "You were emailed",
        "Email to Vera Plumb sent",
    ]
    assert all(re.fullmatch(r"\d\d:\d\d:\d\d|\w{3} \d+ \w{3} \d\d:\d\d:\d\d", t) for t, _ in rows)
    headline = timeline.html.find(class_="headline").text
    assert "Waiting on Vera Plumb, 1st of 2, escalates" in headline
    for words in (first.reference.lower(), "hyperlink", "555-0177", "0177"):
        assert "1 dispatch" in app.get("/dashboard/dispatches", {"q": words}).text, words
    assert "0 dispatches" in app.get("/dashboard/dispatches", {"q": "Nobody Here"}).text
    found = app.get("/dashboard/dispatches", {"q": "0177", "format": "csv"}).text
    assert len(list(csv.reader(io.StringIO(found)))) == 2  # the header and what was found
    app.post(
        f"/dashboard/dispatches/{first.id}/reassign",
        {"csrf_token": token, "vendor": firm["lock"].id},
        status=303,
    )
    app.post(
        f"/dashboard/dispatches/{first.id}/close", {"csrf_token": token, "note": "done"}, status=303
    )
    with db.connection():
        assert Dispatch.get_by_id(first.id).status == "closed"


class TestTenantIsolation:
    """Beta, signed in with Beta's own CSRF token, gets 404 for every object of Alpha's."""

    def test_beta_cannot_see_or_change_alphas_objects(self, app, instance, firm, owners):
        _, beta = owners
        with db.connection():
            d = dispatch.submit(instance, firm["account"], request_form(firm)).dispatch
            route = Route.select().first()
        token = csrf_of(sign_in(app, instance, beta))
        targets = [
            ("get", f"/dashboard/vendors/{firm['vera'].id}"),
            ("post", f"/dashboard/vendors/{firm['vera'].id}"),
            ("post", f"/dashboard/vendors/{firm['vera'].id}/delete"),
            ("get", f"/dashboard/subjects/{firm['elm'].id}"),
            ("post", f"/dashboard/subjects/{firm['elm'].id}/delete"),
            ("get", f"/dashboard/categories/{firm['plumbing'].id}"),
            ("post", f"/dashboard/categories/{firm['plumbing'].id}/delete"),
            ("post", f"/dashboard/routes/{route.id}/delete"),
            ("post", f"/dashboard/routes/{route.id}/move"),
            ("get", f"/dashboard/dispatches/{d.id}"),
            ("post", f"/dashboard/dispatches/{d.id}/close"),
            ("post", f"/dashboard/dispatches/{d.id}/reassign"),
        ]
        for method, path in targets:
            if method == "get":
                app.get(path, status=404)
            else:
                app.post(
                    path,
                    {"csrf_token": token, "name": "Hijack", "email": "x@y.example"},
                    status=404,
                )
        with db.connection():
            assert Vendor.get_by_id(firm["vera"].id).name == "Vera Plumb"
            assert Dispatch.get_by_id(d.id).status == "sent"
            assert Route.select().count() == 2
        assert d.reference not in app.get("/dashboard/dispatches").text


def test_the_shared_sample_imports_and_exports_back_unchanged(instance, conn):
    data = json.loads(SAMPLE.read_text())
    account = portability.import_account(instance, data)
    again = portability.export(instance, account)
    for key in ("subjects", "categories", "routes"):
        assert again[key] == data[key], key
    # the file names no country: the firm's comes from its time zone (America/Chicago)
    defaults = {"digest_hour": 8, "caller_sms": False, "country": "US"}
    assert again["account"] == data["account"] | defaults
    imported = [v | {"active": True, "channels": ["email"]} for v in data["vendors"]]
    assert as_imported(again["vendors"]) == imported
    assert [d["reference"] for d in again["dispatches"]] == ["LKS-4K7Q", "LKS-9P2M"]
    assert again["dispatches"][0]["events"] == data["dispatches"][0]["events"]


def test_a_bad_import_lists_every_problem_and_creates_nothing(instance, conn):
    data = json.loads(SAMPLE.read_text())
    data["account"]["slug"] = "www"
    data["routes"][0]["vendors"] = ["v9"]
    data["dispatches"][0]["status"] = "lost"
    with pytest.raises(portability.ImportError_) as caught:
        portability.import_account(instance, data)
    problems = " | ".join(caught.value.errors.values())
    assert "account.slug" in problems and "routes[0].vendors" in problems
    assert "dispatches[0].status" in problems
    assert Account.select().count() == 0 and Vendor.select().count() == 0


@pytest.mark.parametrize(
    "path",
    [
        "/dashboard/dispatches?page=99999999999999999999999",
        "/dashboard/dispatches?to=9999-12-31",
        "/dashboard/dispatches?subject=%C2%B2",
        "/dashboard/vendors/99999999999999999999999",
    ],
)
def test_odd_numbers_in_urls_are_never_a_crash(owner_app, path):
    app, _ = owner_app
    assert app.get(path, expect_errors=True).status_int < 500


def test_odd_form_values_get_4xx_never_5xx(owner_app, firm):
    app, token = owner_app
    with db.connection():
        d = dispatch.submit(
            app.app.config["outofoffice.instance"], firm["account"], request_form(firm)
        ).dispatch
    app.post(
        f"/dashboard/dispatches/{d.id}/reassign",
        {"csrf_token": token, "vendor": "9" * 30},
        status=400,
    )
    app.post("/dashboard/routes/99999999999999999999999/delete", {"csrf_token": token}, status=404)
    form = app.get("/dashboard/settings").forms["settings"]
    form["digest_hour"] = "²"
    assert "whole number" in form.submit(status=400).text
    app.post("/dashboard/settings", {"csrf_token": token}, status=400)  # fields missing
    bad = b"Name1,a,r\rName2,b,s\r"
    page = app.post(
        "/dashboard/subjects/import",
        {"csrf_token": token},
        upload_files=[("file", "mac.csv", bad)],
        expect_errors=True,
    )
    assert page.status_int in (303, 400)


def test_holidays_must_be_written_as_dates(owner_app):
    app, _ = owner_app
    form = app.get("/dashboard/settings").forms["settings"]
    form.set("holiday", "20261225", index=0)  # a browser without date inputs
    assert "YYYY-MM-DD" in form.submit(status=400).text


def test_reassigning_to_an_inactive_vendor_is_refused(owner_app, instance, firm):
    app, token = owner_app
    with db.connection():
        d = dispatch.submit(instance, firm["account"], request_form(firm)).dispatch
        Vendor.update(active=False).where(Vendor.id == firm["lock"].id).execute()
    page = app.post(
        f"/dashboard/dispatches/{d.id}/reassign",
        {"csrf_token": token, "vendor": firm["lock"].id},
        status=400,
    )
    assert "active vendors" in page.text


def test_an_import_keeps_inactive_vendors_and_leaves_no_request_waiting(instance, conn):
    data = json.loads(SAMPLE.read_text())
    data["vendors"][2]["active"] = False
    data["account"]["digest_hour"] = 6
    data["dispatches"][1]["status"] = "sent"
    account = portability.import_account(instance, data)
    assert Vendor.get(Vendor.name == "Tom Reed").active is False
    assert Account.get_by_id(account.id).digest_hour == 6
    waiting = Dispatch.get(Dispatch.reference == "LKS-9P2M")
    assert waiting.status == "unassigned"


def test_malformed_import_files_are_reported_not_crashed_on(instance, conn):
    data = json.loads(SAMPLE.read_text())
    data["dispatches"][0]["events"] = 5
    data["routes"][0]["vendors"] = [["v1"]]
    data["dispatches"][1]["caller_name"] = "x" * 1000
    data["dispatches"][1]["reference"] = "<b>" * 100
    with pytest.raises(portability.ImportError_) as caught:
        portability.import_account(instance, data)
    problems = " | ".join(caught.value.errors.values())
    for where in ("events: must be a list", "routes[0].vendors", "caller_name", "reference"):
        assert where in problems


def test_changing_the_sign_in_address_takes_a_link_sent_to_the_new_one(
    owner_app, instance, firm, mailbox
):
    app, _ = owner_app
    other = Client(app.app)  # a second session, say on a stolen laptop
    sign_in(other, instance, firm["account"])
    form = app.get("/dashboard/settings").forms["email"]
    form["email"] = "ann.new@alpha.example"
    page = form.submit().follow()
    assert "We sent a link to ann.new@alpha.example" in page.text
    with db.connection():
        assert Account.get(Account.slug == "alpha").email == "ann@alpha.example"  # not yet
    [message] = [m for m in mailbox.deliver() if m["To"] == "ann.new@alpha.example"]
    link = re.search(r"http://\S+(/auth/\S+)", mailbox.text(message)).group(1)
    assert "ann.new@alpha.example" in app.get(link).text
    app.post(link).follow()
    with db.connection():
        assert Account.get(Account.slug == "alpha").email == "ann.new@alpha.example"
    assert other.get("/dashboard").status_int == 303  # every other session ended
    notices = [m for m in mailbox.deliver() if m["To"] == "ann@alpha.example"]
    assert notices and "changed" in notices[0]["Subject"]
    # the same answer for an address another account uses, and no email to it
    taken = app.get("/dashboard/settings").forms["email"]
    taken["email"] = "bob@beta.example"
    assert "We sent a link to bob@beta.example" in taken.submit().follow().text
    assert not [m for m in mailbox.deliver() if m["To"] == "bob@beta.example"]


def test_sign_out_everywhere_also_kills_a_pending_address_change(
    owner_app, instance, firm, mailbox
):
    """A thief with a stolen session asks to move the account to their address; the
    owner signs out everywhere; the thief's link must not work afterwards."""
    app, _ = owner_app
    thief = Client(app.app)
    sign_in(thief, instance, firm["account"])
    form = thief.get("/dashboard/settings").forms["email"]
    form["email"] = "thief@evil.example"
    form.submit()
    [message] = [m for m in mailbox.deliver() if m["To"] == "thief@evil.example"]
    link = re.search(r"http://\S+(/auth/\S+)", mailbox.text(message)).group(1)
    app.get("/dashboard/settings").forms["sessions"].submit()
    assert thief.post(link, expect_errors=True).status_int >= 400
    with db.connection():
        assert Account.get(Account.slug == "alpha").email == "ann@alpha.example"


def test_address_change_emails_share_the_sign_in_email_limit(app, instance, firm, mailbox):
    app = Client(app.app, extra_environ={"REMOTE_ADDR": "192.0.2.44"})
    sign_in(app, instance, firm["account"])
    answers = []
    for n in range(7):
        form = app.get("/dashboard/settings").forms["email"]
        form["email"] = f"ann{n}@elsewhere.example"
        answers.append(form.submit(expect_errors=True))
    assert [a.status_int for a in answers].count(303) <= 5
    assert "Too many sign-in emails" in answers[-1].text
    sent = [m for m in mailbox.deliver() if m["To"].endswith("@elsewhere.example")]
    assert len(sent) <= 5


def test_changing_the_address_needs_a_sign_in_from_the_last_ten_minutes(owner_app, clock_, mailbox):
    app, _ = owner_app
    clock_.advance(minutes=11)  # a session from earlier, say one stolen from a laptop
    form = app.get("/dashboard/settings").forms["email"]
    form["email"] = "thief@evil.example"
    page = form.submit(status=400)
    assert "sign in again first" in page.text
    assert not [m for m in mailbox.deliver() if m["To"] == "thief@evil.example"]


def test_a_delete_asks_first_on_a_page_of_its_own(owner_app, firm):
    app, _ = owner_app
    vendors = app.get("/dashboard/vendors")
    link = vendors.html.find("a", href=f"/dashboard/vendors/{firm['vera'].id}/delete")
    confirm = app.get(link["href"])
    assert confirm.html.find("h1").text == "Delete the vendor Vera Plumb?"
    with db.connection():
        assert (
            Vendor.get_or_none(Vendor.id == firm["vera"].id) is not None
        )  # asking deletes nothing
    assert confirm.forms[1].submit().status_int == 303
    with db.connection():
        assert Vendor.get_or_none(Vendor.id == firm["vera"].id) is None
    routes = app.get("/dashboard/routes")
    delete = routes.html.select("a[href$='/delete']")[0]["href"]
    assert app.get(delete).html.find("h1").text == "Delete this route?"
    with db.connection():
        before = Route.select().count()
    app.get(delete).forms[1].submit()
    with db.connection():
        assert Route.select().count() == before - 1


def test_the_firms_logo_is_checked_stored_and_served_from_an_address_that_changes(
    owner_app, instance
):
    app, token = owner_app
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
    page = app.post(
        "/dashboard/settings/logo",
        {"csrf_token": token},
        upload_files=[("logo", "logo.svg", b"<svg onload='alert(1)'></svg>")],
        status=400,
    )
    assert "PNG, JPEG, GIF or WebP" in page.text
    big = b"\x89PNG\r\n\x1a\n" + b"\x00" * (owner_setup.LOGO_MAX + 1)
    page = app.post(
        "/dashboard/settings/logo",
        {"csrf_token": token},
        upload_files=[("logo", "big.png", big)],
        status=400,
    )
    assert f"under {owner_setup.LOGO_MAX // 1024} KB" in page.text
    largest = b"\x89PNG\r\n\x1a\n" + b"\x00" * (owner_setup.LOGO_MAX - 8)
    app.post(  # the largest allowed fits in a request, form and all
        "/dashboard/settings/logo", {"csrf_token": token}, upload_files=[("logo", "l.png", largest)]
    )
    app.post(
        "/dashboard/settings/logo", {"csrf_token": token}, upload_files=[("logo", "a.png", png)]
    )
    routing = app.get("/r/alpha")
    src = routing.html.find("img", class_="logo")["src"]
    served = app.get(src)
    assert served.content_type == "image/png" and served.body == png
    assert "immutable" in served.headers["Cache-Control"]
    assert "sandbox" in served.headers["Content-Security-Policy"]
    assert served.headers["X-Content-Type-Options"] == "nosniff"
    app.get(src.replace("/alpha/", "/beta/"), status=404)
    app.post("/dashboard/settings/logo", {"csrf_token": token, "remove": "1"})
    app.get(src, status=404)
    assert app.get("/r/alpha").html.find("img", class_="logo") is None


def test_the_overview_counts_and_puts_what_needs_the_owner_first(owner_app, instance, firm):
    app, _ = owner_app
    with db.connection():
        dispatch.submit(instance, firm["account"], request_form(firm))
        routed = {r.category_id for r in Route.select()}
        spare = Category.select().where(
            Category.account == firm["account"], Category.id.not_in(routed)
        )[0]
        unrouted = dispatch.submit(
            instance,
            firm["account"],
            request_form(firm, category=str(spare.id), phone="+1 555 0188"),
        ).dispatch
    page = app.get("/dashboard")
    counts = {
        li.text.split(None, 1)[1].strip(): int(li.strong.text)
        for li in page.html.select(".counts li")
    }
    assert counts == {"open": 2, "waiting on a vendor": 1, "unassigned": 1, "resolved today": 0}
    needs = page.html.find(id="needs-title").find_parent("section")
    assert unrouted.reference in needs.text and "Tina Tenant" in needs.text
    assert "Nobody accepted: it needs you" in needs.text
