"""The SVG charts as markup: accessible, readable on a phone, safe with any vendor name."""

from datetime import date, timedelta

import pytest
from bs4 import BeautifulSoup

from outofoffice import charts
from outofoffice.figures import AcceptTimes, Figures

pytestmark = pytest.mark.no_database

FIRST = date(2026, 3, 1)


def made(counts: list[int], times: list[AcceptTimes] = (), escalated=0, unassigned=0) -> Figures:
    return Figures(
        days=len(counts),
        timezone="UTC",
        first_day=FIRST,
        last_day=FIRST + timedelta(days=len(counts) - 1),
        per_day=[(FIRST + timedelta(days=n), c) for n, c in enumerate(counts)],
        escalated=escalated,
        unassigned=unassigned,
        accept_times=list(times),
    )


def times(name: str, median_minutes: float, p90_minutes: float) -> AcceptTimes:
    return AcceptTimes(name, 4, timedelta(minutes=median_minutes), timedelta(minutes=p90_minutes))


def contrast_with_white(colour: str) -> float:
    """WCAG 2 contrast ratio of a #rrggbb colour against white."""

    def channel(value: int) -> float:
        c = value / 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(int(colour[i : i + 2], 16)) for i in (1, 3, 5))
    luminance = 0.2126 * r + 0.7152 * g + 0.0722 * b
    return 1.05 / (luminance + 0.05)


def all_charts(figures: Figures) -> list:
    markup = [
        charts.per_day_chart(figures),
        charts.accept_chart(figures.accept_times, figures.days),
        charts.shares_chart(figures),
    ]
    return [BeautifulSoup(str(m), "html.parser").find("svg") for m in markup]


@pytest.fixture
def sample() -> Figures:
    counts = [(n * 7) % 5 for n in range(90)]
    vendors = [times("Vera Plumb", 12, 40), times("Walt Water", 95, 60 * 26)]
    return made(counts, vendors, escalated=9, unassigned=4)


def test_each_chart_is_an_image_that_says_its_figures(sample):
    days, accept, shares = all_charts(sample)
    for svg in (days, accept, shares):
        assert svg["role"] == "img"
        title_id, desc_id = svg["aria-labelledby"].split()
        assert svg.find("title", id=title_id) and svg.find("desc", id=desc_id)
    total = sum(c for _, c in sample.per_day)
    assert f"{total} requests in the last 90 days" in days.find("desc").text
    assert "Sun 1 Mar 2026 to Fri 29 May 2026" in days.find("desc").text
    assert "Walt Water: median 1 h 35 min, 90th percentile 1 d 2 h" in accept.find("desc").text
    escalated = charts.percent(9 / total)
    assert f"9 escalated ({escalated})" in shares.find("desc").text


def test_one_bar_per_day_with_requests_and_every_day_keeps_its_place(sample):
    days = all_charts(sample)[0]
    bars = days.find_all("rect")
    assert len(bars) == sum(1 for _, c in sample.per_day if c)
    tips = [bar.find("title").text for bar in bars]
    assert tips[0] == "Mon 2 Mar 2026: 2 requests"  # 1 March had none
    xs = [float(bar["x"]) for bar in bars]
    assert xs == sorted(xs)
    labels = [t.text for t in days.find_all("text")]
    assert "1 Mar" in labels and "29 May" in labels
    tallest = max(float(bar["height"]) for bar in bars)
    busiest = [bar for bar in bars if float(bar["height"]) == tallest]
    assert all(tip.endswith(": 4 requests") for tip in (b.find("title").text for b in busiest))


def test_the_charts_fit_a_phone_and_stay_legible(sample):
    for svg in all_charts(sample):
        assert svg["width"] == "100%" and "height" not in svg.attrs
        _, _, width, _ = map(float, svg["viewbox"].split())
        scale = 350 / width  # a 390 px phone, less the page's margins
        for text in svg.find_all("text"):
            assert float(text["font-size"]) * scale >= 12, text
        assert not svg.find_all(style=True)  # the CSP forbids style attributes


def test_the_colours_that_carry_data_stand_out_against_white(sample):
    for svg in all_charts(sample):
        for element in svg.find_all(["rect", "text"]):
            for attribute in ("fill", "stroke"):
                colour = element.get(attribute)
                if colour and colour != "#ffffff":
                    assert contrast_with_white(colour) >= 3, (element.name, colour)


def test_a_vendors_name_is_escaped_and_long_ones_shortened():
    name = '<script>alert("x")</script> & Co'
    long = "Northern Plumbing, Heating and Emergency Drain Services Ltd"
    markup = str(charts.accept_chart([times(name, 5, 9), times(long, 3, 4)], 30))
    assert "<script>" not in markup and "&lt;script&gt;" in markup
    svg = BeautifulSoup(markup, "html.parser").find("svg")
    names = [t.text for t in svg.find_all("text") if t.get("font-weight")]
    assert names[0] == name
    assert names[1].endswith("…") and len(names[1]) <= charts.NAME_MAX
    assert long in svg.find("desc").text  # the words for a screen reader are whole


def test_bars_are_as_long_as_their_figures():
    svg = all_charts(made([1, 0, 2], [times("A", 10, 20), times("B", 5, 40)], 1, 2))[1]
    widths = [float(r["width"]) for r in svg.find_all("rect")[2:]]  # after the legend
    a_median, a_p90, b_median, b_p90 = widths
    assert a_p90 == pytest.approx(2 * a_median, rel=0.01)
    assert b_p90 == pytest.approx(8 * b_median, rel=0.01)
    assert b_p90 == max(widths)


def test_shares_fill_their_part_of_the_whole():
    shares = all_charts(made([3, 1], escalated=1, unassigned=2))[2]
    outline, escalated, _, unassigned = shares.find_all("rect")
    whole = float(outline["width"])
    assert float(escalated["width"]) == pytest.approx(whole / 4)
    assert float(unassigned["width"]) == pytest.approx(whole / 2)
    words = [t.text for t in shares.find_all("text")]
    assert words == ["Escalated: 1 of 4 (25%)", "Unassigned: 2 of 4 (50%)"]


@pytest.mark.parametrize(
    ("seconds", "words"),
    [(40, "40 s"), (12 * 60, "12 min"), (3 * 3600 + 300, "3 h 5 min"), (7200, "2 h")],
)
def test_waits_read_as_people_say_them(seconds, words):
    assert charts.duration(timedelta(seconds=seconds)) == words
