"""Figures to SVG, on the server: the Reports page needs no JavaScript.

Each chart is one ``<svg role="img">`` whose <title> and <desc> say the figures in
words (the page also lists them as a table). A 360-unit wide viewBox at width 100% fits
a phone without scrolling and keeps 13-unit text at 12px or more there; colours are the
product's own, each at least 3:1 against white; presentation attributes only, since the
CSP forbids style attributes. Every piece is built with ``Markup.format``, which escapes
whatever is not markup already: a vendor may be called anything.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import date, timedelta

from markupsafe import Markup

from outofoffice.figures import AcceptTimes, Figures

WIDTH = 360
FONT = 13
ACCENT = "#1f5fbf"
INK = "#1d2430"
MUTED = "#5b6575"
BAD = "#b3261e"
GRID = "#d9dee6"  # decoration only: the numbers never depend on it
NAME_MAX = 40  # characters of a vendor's name inside a chart; the table has it all


def day_label(day: date) -> str:
    return f"{day.day} {day.strftime('%b')}"


def long_day(day: date) -> str:
    return f"{day.strftime('%a')} {day.day} {day.strftime('%b %Y')}"


def duration(delta: timedelta) -> str:
    """A wait as people say it: 40 s, 12 min, 3 h 5 min, 2 d 4 h."""
    seconds = round(delta.total_seconds())
    if seconds < 60:
        return f"{seconds} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def percent(share: float) -> str:
    return f"{share * 100:.0f}%"


def requests_word(count: int) -> str:
    return f"{count} request{'' if count == 1 else 's'}"


def _attrs(attrs: dict) -> Markup:
    return Markup("").join(
        Markup(' {}="{}"').format(name.rstrip("_").replace("_", "-"), value)
        for name, value in attrs.items()
    )


def _text(x: float, y: float, content: str, **attrs) -> Markup:
    attrs = {"font-size": FONT, "fill": INK} | attrs
    return Markup('<text x="{:g}" y="{:g}"{}>{}</text>').format(x, y, _attrs(attrs), content)


def _rect(x: float, y: float, width: float, height: float, tip: str = "", **attrs) -> Markup:
    box = Markup('x="{:.2f}" y="{:.2f}" width="{:.2f}" height="{:.2f}"').format(x, y, width, height)
    if tip:  # a pointer's tooltip; the words for everyone are in <desc> and the table
        return Markup("<rect {}{}><title>{}</title></rect>").format(box, _attrs(attrs), tip)
    return Markup("<rect {}{}/>").format(box, _attrs(attrs))


def _line(y: float, x1: float, x2: float, stroke: str) -> Markup:
    return Markup(
        '<line x1="{:g}" x2="{:g}" y1="{:.2f}" y2="{:.2f}" stroke="{}" stroke-width="1"/>'
    ).format(x1, x2, y, y, stroke)


def _svg(name: str, height: float, title: str, desc: str, body: Iterable[Markup]) -> Markup:
    """Markup's format escapes every argument that is not Markup already."""
    return Markup(
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height:g}"'
        ' width="100%" role="img" aria-labelledby="chart-{name}-title chart-{name}-desc"'
        ' font-family="system-ui, sans-serif">'
        '<title id="chart-{name}-title">{title}</title>'
        '<desc id="chart-{name}-desc">{desc}</desc>{body}</svg>'
    ).format(
        width=WIDTH, height=height, name=name, title=title, desc=desc, body=Markup("").join(body)
    )


def _nice_ceiling(value: float) -> int:
    """The axis top: 1, 2, 4, 6 or 8 times a power of ten at or above ``value``, so
    its half, the middle gridline, is a whole number too."""
    if value <= 1:
        return 1
    power = 10 ** math.floor(math.log10(value))
    return next(step * power for step in (1, 2, 4, 6, 8, 10) if step * power >= value)


def per_day_description(figures: Figures) -> str:
    busiest = figures.busiest
    words = [
        f"{requests_word(figures.total)} in the last {figures.days} days, "
        f"{long_day(figures.first_day)} to {long_day(figures.last_day)}."
    ]
    if busiest:
        words.append(f"Busiest day: {long_day(busiest[0])} with {requests_word(busiest[1])}.")
    words.append(f"{figures.quiet_days} of {figures.days} days had none.")
    return " ".join(words)


def per_day_chart(figures: Figures) -> Markup:
    """Requests per local day as columns; a day without requests keeps its place."""
    left, right, top, plot = 36, 8, 14, 150
    height = top + plot + 26
    inner = WIDTH - left - right
    axis_top = _nice_ceiling(max(count for _, count in figures.per_day))
    slot = inner / figures.days
    gap = min(2.0, slot * 0.25)
    body = []
    for value in sorted({0, axis_top // 2, axis_top}):
        y = top + plot - plot * value / axis_top
        stroke = MUTED if value == 0 else GRID
        body.append(_line(y, left, WIDTH - right, stroke))
        body.append(_text(left - 4, y + 4, str(value), text_anchor="end", fill=MUTED))
    for n, (day, count) in enumerate(figures.per_day):
        if count:
            bar = plot * count / axis_top
            body.append(
                _rect(
                    left + n * slot + gap / 2,
                    top + plot - bar,
                    slot - gap,
                    bar,
                    tip=f"{long_day(day)}: {requests_word(count)}",
                    fill=ACCENT,
                )
            )
    ticks = [(0, "start"), (figures.days // 2, "middle"), (figures.days - 1, "end")]
    for n, anchor in ticks:
        x = left + (n + 0.5) * slot if anchor == "middle" else left + (n + (anchor == "end")) * slot
        body.append(_text(x, top + plot + 18, day_label(figures.per_day[n][0]), text_anchor=anchor))
    return _svg(
        "days",
        height,
        f"Requests per day, last {figures.days} days",
        per_day_description(figures),
        body,
    )


def short_name(name: str) -> str:
    return name if len(name) <= NAME_MAX else name[: NAME_MAX - 1].rstrip() + "…"


def accept_description(times: list[AcceptTimes]) -> str:
    return " ".join(
        f"{t.vendor}: median {duration(t.median)}, 90th percentile {duration(t.p90)}, "
        f"over {t.accepted} accepted."
        for t in times
    )


def accept_chart(times: list[AcceptTimes], days: int) -> Markup:
    """Per vendor, two bars: the median wait and the 90th percentile wait; each bar is
    labelled in words, so the two colours are never the only difference."""
    left, label_room, row = 8, 124, 62
    inner = WIDTH - left - label_room
    legend = 24
    height = legend + row * len(times) + 4
    longest = max((t.p90.total_seconds() for t in times), default=0) or 1.0
    body = [
        _rect(left, 6, 12, 12, fill=ACCENT),
        _text(left + 18, 17, "median"),
        _rect(left + 90, 6, 12, 12, fill=MUTED),
        _text(left + 108, 17, "90th percentile (p90)"),
    ]
    for n, t in enumerate(times):
        y = legend + n * row
        body.append(_text(left, y + 14, short_name(t.vendor), font_weight="600"))
        for offset, value, colour, word in (
            (20, t.median, ACCENT, "median"),
            (38, t.p90, MUTED, "p90"),
        ):
            bar = max(inner * value.total_seconds() / longest, 1.5)
            body.append(_rect(left, y + offset, bar, 14, fill=colour))
            body.append(_text(left + bar + 5, y + offset + 12, f"{word} {duration(value)}"))
    return _svg(
        "accept",
        height,
        f"Time to accept per vendor, last {days} days",
        accept_description(times),
        body,
    )


def shares_description(figures: Figures) -> str:
    return (
        f"Of {requests_word(figures.total)} in the last {figures.days} days, "
        f"{figures.escalated} escalated ({percent(figures.escalated_share)}) and "
        f"{figures.unassigned} were left unassigned ({percent(figures.unassigned_share)})."
    )


def shares_chart(figures: Figures) -> Markup:
    """Escalated and unassigned as parts of a whole bar: the outline is all requests."""
    left, right, row = 8, 8, 50
    inner = WIDTH - left - right
    body = []
    rows = (
        ("Escalated", figures.escalated, figures.escalated_share, ACCENT),
        ("Unassigned", figures.unassigned, figures.unassigned_share, BAD),
    )
    for n, (label, count, share, colour) in enumerate(rows):
        y = n * row
        words = f"{label}: {count} of {figures.total} ({percent(share)})"
        body.append(_text(left, y + 16, words))
        body.append(_rect(left, y + 24, inner, 16, fill="#ffffff", stroke=MUTED))
        if count:
            body.append(_rect(left, y + 24, inner * share, 16, fill=colour))
    return _svg(
        "shares",
        row * len(rows) + 2,
        f"Escalated and unassigned requests, last {figures.days} days",
        shares_description(figures),
        body,
    )
