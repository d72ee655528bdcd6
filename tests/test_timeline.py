"""What people read about a dispatch: the owner's status line and timeline words."""

import pytest

from outofoffice import db, dispatch, timeline
from outofoffice.models import Dispatch, DispatchEvent
from tests.conftest import request_form


def test_a_declined_request_reads_as_waiting_on_the_next_vendor(instance, firm):
    with db.connection():
        d = dispatch.submit(instance, firm["account"], request_form(firm)).dispatch
        first = timeline.status(Dispatch.get_by_id(d.id))
        token = dispatch.action_token(instance, d, firm["vera"], "decline")
        dispatch.act(instance, token)
        d = Dispatch.get_by_id(d.id)
        second = timeline.status(d)
        events = list(DispatchEvent.select().where(DispatchEvent.dispatch == d))
        words = [timeline.owner_line(e) for e in events]
    assert first.line.startswith("Waiting on Vera Plumb, 1st of 2, escalates ")
    assert d.status == "declined"  # the stored word stays the export's
    assert (second.tone, second.word) == ("waiting", "Waiting")
    assert second.line.startswith("Waiting on Walt Water, 2nd of 2, gives up ")
    assert "Declined by Vera Plumb" in words and "declined" not in words


@pytest.mark.no_database
def test_ordinals_read_as_people_say_them():
    assert [timeline.ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 101)] == [
        "1st",
        "2nd",
        "3rd",
        "4th",
        "11th",
        "12th",
        "13th",
        "21st",
        "22nd",
        "101st",
    ]
