"""Dates as customers write them ("yesterday", "last monday", "the 12th of March", "03/14/2024",
"14-03-2024", "2024/03/14") turned into ISO dates (YYYY-MM-DD), relative to the day the message is read.

Only what names one day for certain is converted, never a guess:

- Month names are whole words: "March", "mar", "mar.", "sept" (not "marching", "juneteenth").
- All-number dates take ``/``, ``-`` or ``.`` between the parts. Four digits first is year, month,
  day (2024/03/14). Otherwise the year is last and the order of day and month is read from the
  numbers: 14/03/2024 and 03/14/2024 can only be 14 March; 05/06/2024 could be 5 June (day first,
  as in most of the world) or 6 May (month first, as in the US), so it is ambiguous
  (``ambiguous_readings`` gives both) and not converted: the bot asks which one is meant rather
  than pick one. 05/05/2024 is the same day either way.
- A day and month without a year is the nearest such date (within six months either way):
  "December 28" read on 2 January is the past December.
- "this week" and the like name no single day and stay as written.

python-dateutil's parser was tried and not used: it completes what is missing from today's date
and picks an order for ambiguous dates (its fuzzy mode reads "juneteenth 5" as the 5th of the
current month), which is the wrong value this module must never give."""

from __future__ import annotations

import datetime as dt
import re

MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
MONTH_NAMES = {
    **{name: i + 1 for i, name in enumerate(MONTHS)},
    **{name: i + 1 for i, name in enumerate(("january", "february", "march", "april", "may", "june", "july", "august",
                                             "september", "october", "november", "december"))},
    "sept": 9,
}
DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
MONTH_PATTERN = "|".join(sorted(MONTH_NAMES, key=len, reverse=True))
"""A month name as a whole word (longest first, so "march" is not read as "mar" + "ch"), for regexes."""
_MONTH = rf"({MONTH_PATTERN})\.?"
_ORDINAL = r"(?:st|nd|rd|th)?"
_THE = r"(?:(?:on\s+)?the\s+)?"
_FORMS = (
    ("ymd", re.compile(r"(\d{4})([-/.])(\d{1,2})\2(\d{1,2})")),
    ("numeric", re.compile(r"(\d{1,2})([-/.])(\d{1,2})\2(\d{2}|\d{4})")),
    ("day_month", re.compile(rf"{_THE}(\d{{1,2}}){_ORDINAL}\s+(?:of\s+)?{_MONTH}(?:,?\s+(\d{{4}}))?")),
    ("month_day", re.compile(rf"{_MONTH}\s+(?:the\s+)?(\d{{1,2}}){_ORDINAL}(?:,?\s+(\d{{4}}))?")),
    ("weekday", re.compile(rf"(?:(last|this|on)\s+)?({'|'.join(DAYS)})")),
)
_RELATIVE = {"today": 0, "yesterday": -1, "tomorrow": 1}


def iso_date(text: str, today: dt.date) -> str | None:
    """``text`` (a date slot's value as written) as an ISO date, or None when it names no single
    day for certain (no date, an impossible one such as 30 February, or an ambiguous one: see the
    module's docstring).

    "last monday" is the latest Monday before today (a week ago when read on a Monday); a weekday
    alone or "on monday" is the latest such day, today included; "this monday", the one of this week."""
    text = " ".join(text.strip().lower().split())
    if text in _RELATIVE:
        return (today + dt.timedelta(days=_RELATIVE[text])).isoformat()
    for form, pattern in _FORMS:
        match = pattern.fullmatch(text)
        if match:
            day = _CONVERT[form](match.groups(), today)
            return day.isoformat() if day else None
    return None


def ambiguous_readings(text: str) -> tuple[dt.date, dt.date] | None:
    """(day first, month first) for an all-number date both ways valid and different ("05/06/2024":
    5 June, 6 May); None for any other text."""
    match = _FORMS[1][1].fullmatch(text.strip())
    if not match:
        return None
    first, _, second, year = match.groups()
    year_number = int(year) + (2000 if len(year) == 2 else 0)
    day_first, month_first = _date(year_number, int(second), int(first)), _date(year_number, int(first), int(second))
    return (day_first, month_first) if day_first and month_first and day_first != month_first else None


def _date(year: int, month: int, day: int) -> dt.date | None:
    try:
        return dt.date(year, month, day)
    except ValueError:  # 30 February, month 13
        return None


def _ymd(groups: tuple, today: dt.date) -> dt.date | None:
    return _date(int(groups[0]), int(groups[2]), int(groups[3]))


def _numeric(groups: tuple, today: dt.date) -> dt.date | None:
    first, second, year = int(groups[0]), int(groups[2]), groups[3]
    year_number = int(year) + (2000 if len(year) == 2 else 0)
    day_first, month_first = _date(year_number, second, first), _date(year_number, first, second)
    if day_first and month_first and day_first != month_first:
        return None  # 05/06: 5 June or 6 May
    return day_first or month_first


def _day_month(groups: tuple, today: dt.date) -> dt.date | None:
    return _nearest(int(groups[0]), MONTH_NAMES[groups[1]], groups[2], today)


def _month_day(groups: tuple, today: dt.date) -> dt.date | None:
    return _nearest(int(groups[1]), MONTH_NAMES[groups[0]], groups[2], today)


def _nearest(day: int, month: int, year: str | None, today: dt.date) -> dt.date | None:
    if year:
        return _date(int(year), month, day)
    candidates = [d for y in (today.year - 1, today.year, today.year + 1) if (d := _date(y, month, day))]
    return min(candidates, key=lambda d: abs((d - today).days), default=None)


def _weekday(groups: tuple, today: dt.date) -> dt.date:
    which, weekday = groups[0], DAYS.index(groups[1])
    if which == "this":
        return today + dt.timedelta(days=weekday - today.weekday())
    back = (today.weekday() - weekday) % 7
    return today - dt.timedelta(days=(back or 7) if which == "last" else back)


_CONVERT = {"ymd": _ymd, "numeric": _numeric, "day_month": _day_month, "month_day": _month_day, "weekday": _weekday}
