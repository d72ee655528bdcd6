"""Hypothesis throws odd input at every public form: nothing may answer 5xx."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from outofoffice import accounts, db, owner_setup
from tests.conftest import client

TEXT = st.one_of(
    st.text(max_size=300),
    st.sampled_from(
        [
            "",
            " ",
            "<script>alert(1)</script>",
            "\r\nBcc: x@y.z",
            "=1+2",
            "9" * 40,
            "²",
            "\x00",
            "a@b.c",
            "../../etc/passwd",
            "%00",
            "\ud7ff",
        ]
    ),
)
FORMS = {
    "/login": ("email",),
    "/signup": ("email", "name", "business_name", "slug", "industry", "timezone", "invite"),
    "/r/fuzz": ("subject", "category", "name", "phone", "description"),
}
CASES = 700  # per form: above 2,000 in all


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory):
    from outofoffice import config
    from outofoffice.instance import Instance

    data = tmp_path_factory.mktemp("fuzz")
    cfg = config.from_mapping({"storage": {"data_dir": str(data)}, "mail": {"backend": "file"}})
    instance = Instance.open(cfg, migrate=True)
    with db.connection():
        account = accounts.create_account(
            email="o@fuzz.example",
            name="O",
            business_name="Fuzz Firm",
            slug="fuzz",
            industry="home_services",
            timezone="UTC",
        )
        vendor = owner_setup.save(
            account, owner_setup.KINDS["vendors"], {"name": "V", "email": "v@fuzz.example"}
        )
        owner_setup.save(account, owner_setup.KINDS["subjects"], {"name": "S"})
        owner_setup.create_route(account, "", "", "always", [str(vendor.id)])
    return client(instance)


def _fuzz(app, path, fields, values, raw):
    form = dict(zip(fields, values, strict=True))
    response = app.post(path, form, expect_errors=True)
    assert response.status_int < 500, (path, form)
    response = app.post(
        path, raw, content_type="application/x-www-form-urlencoded", expect_errors=True
    )
    assert response.status_int < 500, (path, raw)


@pytest.mark.parametrize("path", list(FORMS))
def test_public_forms_never_answer_5xx(fuzz_app, path):
    fields = FORMS[path]

    @settings(
        max_examples=CASES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(values=st.tuples(*[TEXT] * len(fields)), raw=st.binary(max_size=200))
    def run(values, raw):
        _fuzz(fuzz_app, path, fields, values, raw)

    run()
