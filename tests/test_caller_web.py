"""The routing page, the caller's status page and the vendor's action page, over HTTP."""

import re
from datetime import timedelta

from outofoffice import accounts, clock, db, owner_setup
from outofoffice.models import Account, Dispatch, DispatchEvent
from tests.conftest import client, request_form


def vendor_paths(mailbox, address):
    paths = {}
    for message in mailbox.deliver():
        if message["To"] == address:
            for action, path in re.findall(
                r"(Accept|Decline|Resolved): +\S+?(/v/\S+)", mailbox.text(message)
            ):
                paths[action] = path
    return paths


def test_the_routing_page_shows_the_firm_subjects_categories_and_safety_text(app, firm):
    page = app.get("/r/alpha")
    assert "Alpha Properties" in page.text
    options = [o.text for o in page.html.find(id="f-subject").find_all("option")]
    assert "Elm Street, 12 Elm St" in options
    assert page.html.find("label", {"for": "f-subject"}).text == "Property"
    assert "Shut the water valve under the sink" in page.text
    # the page a caller opens in a panic, with everything it loads, stays small
    assets = [app.get(link["href"]).body for link in page.html.find_all("link", rel="stylesheet")]
    assets += [app.get(script["src"]).body for script in page.html.find_all("script", src=True)]
    assert assets and len(page.body) + sum(map(len, assets)) < 30_000
    assert not page.html.find("script", src=False)


def test_a_submission_answers_303_with_the_reference_and_a_status_link(app, firm, mailbox):
    response = app.post("/r/alpha", request_form(firm))
    assert response.status_int == 303
    assert response.headers["Location"].startswith("/s/")
    status = response.follow()
    with db.connection():
        d = Dispatch.get()
    assert d.reference in status.text
    assert "http://oop.example.test/s/" in status.text
    assert "We received your request" in status.text
    assert "waiting for the person on call" in status.html.find(class_="headline").text
    assert vendor_paths(mailbox, "vera@plumb.example").keys() == {"Accept", "Decline", "Resolved"}


def test_bad_input_is_explained_beside_the_field_and_kept(app, firm):
    form = request_form(firm, phone="12", description="Still leaking")
    page = app.post("/r/alpha", form, status=400)
    assert "7 to 32" in page.html.find(id="e-phone").text
    assert page.html.find(id="f-description").text == "Still leaking"
    assert page.html.find(id="f-name")["value"] == "Tina Tenant"
    with db.connection():
        assert Dispatch.select().count() == 0


def test_unknown_slugs_are_404_and_disabled_firms_say_phone_us(app, firm):
    app.get("/r/nobody", status=404)
    with db.connection():
        accounts.set_status("alpha", "disabled")
    closed = app.get("/r/alpha")
    assert "Please phone Alpha Properties" in closed.text and "<form" not in closed.text
    app.post("/r/alpha", request_form(firm), status=403)
    with db.connection():
        assert Dispatch.select().count() == 0


def test_the_vendor_confirms_on_a_page_and_get_changes_nothing(app, firm, mailbox):
    app.post("/r/alpha", request_form(firm))
    paths = vendor_paths(mailbox, "vera@plumb.example")
    for _ in range(2):
        page = app.get(paths["Accept"])
        assert [b.text for b in page.html.find_all("button")] == ["Accept"]
        assert "Tina Tenant" in page.text
    with db.connection():
        assert Dispatch.get().status == "sent"
    done = page.forms[0].submit()
    assert "you accepted this request" in done.text
    # the next step is on the same page: one tap once the job is done
    assert [b.text for b in done.html.find_all("button")] == ["Mark resolved"]
    again = app.post(paths["Accept"])
    assert "nothing changed" in again.text
    with db.connection():
        d = Dispatch.get()
        assert d.status == "accepted"
        assert DispatchEvent.select().where(DispatchEvent.kind == "accepted").count() == 1


def test_decline_over_http_reaches_the_next_vendor(app, firm, mailbox):
    app.post("/r/alpha", request_form(firm))
    app.post(vendor_paths(mailbox, "vera@plumb.example")["Decline"])
    assert "Accept" in vendor_paths(mailbox, "walt@water.example")


def test_a_tampered_action_link_gets_a_clear_page(app, firm, mailbox):
    app.post("/r/alpha", request_form(firm))
    path = vendor_paths(mailbox, "vera@plumb.example")["Accept"]
    page = app.get(path[:-3] + "abc", status=404)
    assert "not valid" in page.text
    app.post(path[:-3] + "abc", status=404)


def test_the_status_page_names_who_accepted_but_not_how_to_reach_them(app, firm, mailbox):
    status = app.post("/r/alpha", request_form(firm)).follow()
    app.post(vendor_paths(mailbox, "vera@plumb.example")["Accept"])
    page = app.get(status.request.path)
    headline = page.html.find(class_="headline").text
    assert headline.startswith("Vera accepted at ") and "will call you" in headline
    assert "vera@plumb.example" not in page.text and "0101" not in page.text
    waiting = app.post("/r/alpha", request_form(firm, phone="+1 555 0199")).follow()
    assert "Vera" not in waiting.text and "Walt" not in waiting.text  # only who accepted
    steps = [li.text.split(None, 1)[1] for li in page.html.select("ol.timeline li")]
    assert steps == [
        "We received your request",
        "Sent to the person on call",
        "Vera accepted and will call you",
    ]
    app.get("/s/not-a-token", status=404)


def test_subdomain_mode_serves_routing_pages_on_slug_hosts(make_instance):
    instance = make_instance(server={"routing_pages": "subdomain", "domain": "help.example"})
    app = client(instance)
    with db.connection():
        accounts.create_account(
            email="o@x.example",
            name="O",
            business_name="Xeno Homes",
            slug="xeno",
            industry="home_services",
            timezone="UTC",
        )
    assert "Xeno Homes" in app.get("/", headers={"Host": "xeno.help.example"}).text
    app.get("/", headers={"Host": "nobody.help.example"}, status=404)
    assert "After-hours requests" in app.get("/", headers={"Host": "help.example"}).text


def test_a_repeat_is_told_the_request_is_in_hand_without_the_first_status_link(app, firm):
    first = app.post("/r/alpha", request_form(firm))
    again = app.post("/r/alpha", request_form(firm, name="Someone Else"))
    assert again.status_int == 303  # a refresh of the answer does not post it again
    joined = again.follow()
    assert "already have this request" in joined.text
    assert "/s/" not in joined.text and first.headers["Location"] not in joined.text
    with db.connection():
        d = Dispatch.get()
    assert d.reference in joined.text
    forged = again.headers["Location"].replace(d.reference, "ALP-ZZZZ")
    assert "already have this request" not in app.get(forged).text


def test_an_old_link_shows_nothing_once_the_request_moved_on(app, firm, mailbox):
    app.post("/r/alpha", request_form(firm))
    paths = vendor_paths(mailbox, "vera@plumb.example")
    done = app.post(paths["Decline"])
    assert "next person" in done.text and "Tina Tenant" not in done.text
    stale = app.get(paths["Accept"], status=409)
    assert stale.html.find("h1").text == "No longer with you"
    assert "went to the next person" in stale.text and "Tina Tenant" not in stale.text
    app.post(paths["Accept"], status=409)


PAYLOADS = ('<script>alert("x")</script>', '<svg onload="alert(1)">', "Name\r\nBcc: evil@x.example")


def test_hostile_caller_input_is_inert_in_every_page_and_email(app, instance, firm, mailbox):
    from tests.conftest import csrf_of, sign_in

    form = request_form(firm, name=PAYLOADS[1], description="\n".join(PAYLOADS))
    status_page = app.post("/r/alpha", form).follow()
    messages = mailbox.deliver()
    vendor_mail = next(m for m in messages if m["To"] == "vera@plumb.example")
    path = next(iter(re.findall(r"Accept: +\S+?(/v/\S+)", mailbox.text(vendor_mail))))
    owner = sign_in(app, instance, firm["account"])
    with db.connection():
        d = Dispatch.get()
    pages = [
        status_page.text,
        app.get(path).text,
        owner.text,
        app.get("/dashboard/dispatches").text,
        app.get(f"/dashboard/dispatches/{d.id}").text,
    ]
    for text in pages:
        assert "<script>alert" not in text and "<svg onload" not in text
    assert "&lt;script&gt;" in app.get(f"/dashboard/dispatches/{d.id}").text
    for message in messages:
        assert "Bcc" not in {k for k, _ in message.items()}
        html = message.get_body(preferencelist=("html",)).get_content()
        assert "<script>alert" not in html and "<svg onload" not in html
    assert csrf_of(owner)


def test_invalid_utf8_in_a_form_is_a_4xx_and_stores_nothing(app, firm):
    body = b"name=%FF%FE&phone=%FF&description=%C3%28&category=1"
    response = app.post(
        "/r/alpha", body, content_type="application/x-www-form-urlencoded", expect_errors=True
    )
    assert 400 <= response.status_int < 500
    with db.connection():
        assert Dispatch.select().count() == 0


def test_a_wrong_phone_gets_a_summary_that_takes_focus_and_points_at_the_field(app, firm):
    page = app.post("/r/alpha", request_form(firm, phone="12"), status=400)
    assert page.html.title.text.startswith("Error: ")
    summary = page.html.find(id="error-summary")
    assert summary.has_attr("autofocus") and summary["tabindex"] == "-1"
    assert [a["href"] for a in summary.find_all("a")] == ["#f-phone"]
    phone = page.html.find(id="f-phone")
    assert phone["aria-invalid"] == "true"
    assert "e-phone" in phone["aria-describedby"].split()
    # the summary comes before everything else the caller reads
    assert page.html.find("main").find(True)["id"] == "error-summary"


def test_caller_pages_carry_the_firm_and_tap_to_call_numbers(app, instance, firm, mailbox):
    with db.connection():
        account = firm["account"]
        account.contact_phone = "+1 (312) 555-0140"
        account.save()
    page = app.get("/r/alpha")
    assert page.html.find(class_="firm-name").text == "Alpha Properties"
    assert page.html.find("header").find("a")["href"] == "tel:+13125550140"
    assert {a["href"] for a in page.html.select(".call-row a")} == {
        "tel:999",  # Alpha is in Europe/London: the United Kingdom's numbers
        "tel:112",
        "tel:+13125550140",
    }
    assert "Out of Office Pro" not in page.html.find("header").text
    status = app.post("/r/alpha", request_form(firm)).follow()
    assert "tel:+13125550140" in {a["href"] for a in status.html.find_all("a")}
    # it reloads itself without JavaScript (app.js updates it in place), and says how to stop
    refresh = status.html.find("meta", attrs={"http-equiv": "refresh"})
    assert refresh is not None and refresh.find_parent("noscript") is not None
    stop = status.html.find("a", string="Stop updating")["href"]
    assert app.get(stop).html.find("meta", attrs={"http-equiv": "refresh"}) is None
    missing = app.get("/s/" + "x" * 40, status=404)
    assert missing.html.find("h1").text and "tel:" not in missing.text  # no firm is known


def test_the_vendor_email_says_when_it_came_and_how_long_before_it_moves_on(app, firm, mailbox):
    app.post("/r/alpha", request_form(firm))
    [mail] = [m for m in mailbox.deliver() if m["To"] == "vera@plumb.example"]
    text = mailbox.text(mail)
    assert re.search(r"Received: \w{3} \d\d \w{3} \d\d:\d\d", text)
    assert "within 15 minutes, the request goes to the next person" in text
    html = mail.get_body(preferencelist=("html",)).get_content()
    assert ">Accept</a>" in html and ">Decline</a>" in html


def test_the_vendor_page_has_call_and_directions_buttons_and_an_expired_link_names_the_firm(
    app, firm, mailbox
):
    app.post("/r/alpha", request_form(firm))
    paths = vendor_paths(mailbox, "vera@plumb.example")
    page = app.get(paths["Accept"])
    hrefs = [a["href"] for a in page.html.select(".call-row a")]
    assert hrefs[0].startswith("tel:") and any("maps" in h and "Elm" in h for h in hrefs)
    assert "Status: sent" not in page.text and "Waiting for your answer" in page.text
    clock.advance(timedelta(days=8))
    expired = app.get(paths["Accept"], status=410)
    assert expired.html.find("h1").text == "This link expired"
    assert "Alpha Properties" in expired.text and expired.html.find(class_="firm-name")


def test_an_error_on_a_firms_page_gives_the_firms_number_not_a_dead_end(app, firm):
    with db.connection():
        firm["account"].contact_phone = "+1 312 555 0140"
        firm["account"].save()
    page = app.post("/r/alpha", request_form(firm) | {"website": "bot"}, status=400)
    assert page.html.find(class_="firm-name").text == "Alpha Properties"
    assert "tel:+13125550140" in {a["href"] for a in page.html.select("main a")}
    unknown = app.get("/r/nobody", status=404)
    assert unknown.html.find("a", href="/") is not None  # no firm known: the operator's way out


def test_the_mark_resolved_button_expires_with_the_emails_links(app, firm, mailbox):
    app.post("/r/alpha", request_form(firm))
    paths = vendor_paths(mailbox, "vera@plumb.example")
    clock.advance(timedelta(days=6))
    accepted = app.post(paths["Accept"])
    resolve = accepted.html.find("button", string="Mark resolved").find_parent("form")["action"]
    assert app.get(resolve).status_int == 200
    clock.advance(timedelta(days=2))  # the email's links are 8 days old now
    app.get(paths["Accept"], status=410)
    expired = app.get(resolve, status=410)
    assert "Tina Tenant" not in expired.text
    # a decline link, once the request is accepted, offers no button that cannot work
    clock.reset()
    assert not app.get(paths["Decline"]).html.find("button", string="Decline")


def _shown(page) -> tuple[list[str], list[str], str]:
    """What a caller reads on the routing page: the subjects, the categories, the firm."""
    options = [o.text for o in page.html.find(id="f-subject").find_all("option")][1:]
    categories = [s.text for s in page.html.select("fieldset.categories strong")]
    return options, categories, page.html.find(class_="firm-name").text


def test_each_caller_gets_a_fresh_form_token_on_the_same_page(app, firm):
    first = app.get("/r/alpha")
    clock.advance(timedelta(seconds=5))
    second = app.get("/r/alpha")
    tokens = [p.html.find("input", {"name": "form_token"})["value"] for p in (first, second)]
    assert tokens[0] != tokens[1]
    assert first.text.replace(tokens[0], "") == second.text.replace(tokens[1], "")
    for token in tokens:  # each one works
        form = request_form(firm, phone=f"+1 555 01{len(token) % 10}{tokens.index(token)}")
        assert app.post("/r/alpha", form | {"form_token": token}).status_int == 303


def test_every_edit_of_the_owner_shows_on_the_next_routing_page(app, instance, firm):
    """The page is kept rendered; each kind of change the owner (or an import) makes
    must show at once, in another app (another process) too."""
    other = client(instance)
    alpha, kinds = firm["account"], owner_setup.KINDS
    for viewer in (app, other):
        assert "Oak Court, 8 Oak Ct" in _shown(viewer.get("/r/alpha"))[0]
    with db.connection():
        owner_setup.save(alpha, kinds["categories"], {"name": "Burst pipes"}, firm["plumbing"])
        owner_setup.delete(alpha, kinds["subjects"], firm["oak"])
        owner_setup.save(alpha, kinds["categories"], {"name": "Heating", "emergency": "on"})
        owner_setup.import_subjects(alpha, "Ash Row,1 Ash Row,\n")
    for viewer in (app, other):
        subjects, categories, _ = _shown(viewer.get("/r/alpha"))
        assert subjects == ["Ash Row, 1 Ash Row", "Elm Street, 12 Elm St"]
        assert "Burst pipes" in categories and "Heating" in categories
        assert "Plumbing" not in categories
    with db.connection():
        account = Account.get_by_id(alpha.id)
        form = {k: getattr(account, k) for k in owner_setup.SETTINGS_FIELDS}
        owner_setup.save_settings(
            account, form | {"business_name": "Alpha Homes"}, account.business_hours
        )
    for viewer in (app, other):
        assert _shown(viewer.get("/r/alpha"))[2] == "Alpha Homes"


def test_a_firm_made_under_a_deleted_firms_id_never_gets_its_page(make_instance):
    """SQLite gives a new row the highest id again once that row is deleted; in subdomain
    mode every firm's page is at "/". The new firm's page is its own."""
    instance = make_instance(server={"routing_pages": "subdomain", "domain": "help.example"})
    app = client(instance)
    firm = {"name": "O", "industry": "home_services", "timezone": "UTC"}
    with db.connection():
        xeno = accounts.create_account(
            email="o@x.example", business_name="Xeno Homes", slug="xeno", **firm
        )
    assert "Xeno Homes" in app.get("/", headers={"Host": "xeno.help.example"}).text
    with db.connection(), db.write():  # as the sweep removes it at last
        Account.delete_by_id(xeno.id)
    with db.connection():
        yarrow = accounts.create_account(
            email="o@y.example", business_name="Yarrow Repairs", slug="yarrow", **firm
        )
    page = app.get("/", headers={"Host": "yarrow.help.example"}).text
    assert "Yarrow Repairs" in page and "Xeno Homes" not in page
    assert yarrow.id == xeno.id or database_is_postgresql()


def database_is_postgresql() -> bool:
    return not db.is_sqlite()


def test_the_status_page_shows_every_change_at_once_in_every_app(app, instance, firm, mailbox):
    """The page is kept rendered; each step of the request, a new name of the vendor or
    of the firm, and the firm's next day must show at once, in another app (another
    process) too."""
    other = client(instance)
    path = app.post("/r/alpha", request_form(firm)).follow().request.path
    viewers = (app, other)

    def headlines():
        return {viewer.get(path).html.find(class_="headline").text for viewer in viewers}

    def steps():
        shown = [[li.text for li in v.get(path).html.select("ol.timeline li")] for v in viewers]
        assert shown[0] == shown[1]
        return [step.split(None, 1)[1] for step in shown[0]]

    assert steps() == ["We received your request"]
    accept = vendor_paths(mailbox, "vera@plumb.example")["Accept"]
    assert steps() == ["We received your request", "Sent to the person on call"]
    app.post(accept)
    (accepted,) = headlines()
    assert re.fullmatch(r"Vera accepted at \d\d:\d\d and will call you\.", accepted)
    vendors = owner_setup.KINDS["vendors"]
    renamed = {"name": "Valerie Plumb", "email": "vera@plumb.example", "active": "on"}
    with db.connection():
        owner_setup.save(firm["account"], vendors, renamed, firm["vera"])
    assert headlines() == {accepted.replace("Vera", "Valerie")}
    with db.connection():
        account = Account.get_by_id(firm["account"].id)
        form = {k: getattr(account, k) for k in owner_setup.SETTINGS_FIELDS}
        owner_setup.save_settings(
            account, form | {"business_name": "Alpha Homes"}, account.business_hours
        )
    for viewer in viewers:
        assert viewer.get(path).html.find(class_="firm-name").text == "Alpha Homes"
    clock.advance(timedelta(days=1))
    (next_day,) = headlines()
    assert re.fullmatch(
        r"Valerie accepted at \w{3} \d+ \w{3} \d\d:\d\d and will call you\.", next_day
    )


def test_the_status_page_keeps_its_words_for_each_way_it_is_opened(app, firm, mailbox):
    path = app.post("/r/alpha", request_form(firm)).follow().request.path
    sent, plain, still = (app.get(path + query) for query in ("?sent=1", "", "?live=0"))
    assert "Your request was sent." in sent.text and "Your request was sent." not in plain.text
    assert "Stop updating" in plain.text and "Turn them on" in still.text
    assert 'data-live="30"' in plain.text and 'data-live="30"' not in still.text
    assert "Your request was sent." in app.get(path + "?sent=1").text  # the kept page, too


def test_a_disabled_firms_status_links_stop_working_at_once(app, instance, firm):
    path = app.post("/r/alpha", request_form(firm)).follow().request.path
    assert app.get(path).status_int == 200
    with db.connection():
        accounts.set_status("alpha", "disabled", instance.config)
    assert "does not work" in app.get(path, status=404).text
