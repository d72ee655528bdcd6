"""A sample firm for `outofoffice demo`: believable vendors, subjects and routes."""

from __future__ import annotations

from outofoffice import accounts, db, owner_setup, routing
from outofoffice.models import Account, Category

VENDORS = [
    ("Dale Kowalski", "North Side Plumbing", "dale@plumbing.example", "+1 312 555 0181"),
    ("Priya Shah", "Shah Mechanical", "priya@mechanical.example", "+1 773 555 0122"),
    ("Tom Reed", "Reed Lock & Key", "tom@locks.example", "+1 312 555 0199"),
    ("Front office", "", "office@firm.example", "+1 312 555 0140"),
]
SUBJECTS = {
    "property_management": [
        ("Elm Street Apartments", "1420 W Elm St", "ELM"),
        ("Oak Court", "88 Oak Ct", "OAK"),
        ("Maple Lofts", "2200 N Maple Ave", "MPL"),
    ],
    "legal": [("Estate of R. Howard", "", "2026-014"), ("Nguyen v. Apex", "", "2026-031")],
    "it_services": [
        ("Lakeview Dental", "12 Shore Rd", "LVD"),
        ("Baker & Sons", "4 Mill St", "BKS"),
    ],
    "home_services": [("Members", "", "")],
    "other": [("Main office", "", "")],
}


def owner_email(slug: str) -> str:
    """The sample owner's address: .example is reserved, so no real owner has it."""
    return f"owner@{slug}.example"


def existing(slug: str) -> Account | None:
    """The sample firm an earlier `demo` made at this slug; None for a real firm's."""
    account = Account.get_or_none(Account.slug == slug.strip().lower())
    if account is None or account.email != owner_email(account.slug):
        return None
    return account


def create(slug: str, industry: str) -> Account:
    account = accounts.create_account(
        email=owner_email(slug),
        name="Sample Owner",
        business_name=f"{accounts.INDUSTRIES[industry][0]} Sample Firm",
        slug=slug,
        industry=industry,
        timezone="America/Chicago",
    )
    kinds = owner_setup.KINDS
    with db.write():
        account.contact_phone = "+1 312 555 0140"
        account.business_hours = routing.DEFAULT_HOURS
        account.save()
        vendors = [
            owner_setup.save(
                account, kinds["vendors"], {"name": n, "company": c, "email": e, "phone": p}
            )
            for n, c, e, p in VENDORS
        ]
        for name, address, reference in SUBJECTS[industry]:
            owner_setup.save(
                account,
                kinds["subjects"],
                {"name": name, "address": address, "reference": reference},
            )
        categories = list(Category.select().where(Category.account == account))
        first, second, third, office = (str(v.id) for v in vendors)
        for category in categories:
            if category.emergency:
                chain = [first, second]
            elif category.name == "Locked out":
                chain = [third, first]
            else:
                continue
            owner_setup.create_route(account, "", str(category.id), "always", chain)
        owner_setup.create_route(account, "", "", "business_hours", [office])
        owner_setup.create_route(account, "", "", "after_hours", [first, second, office])
    return account
