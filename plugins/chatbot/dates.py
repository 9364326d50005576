"""Dates as customers write them ("yesterday", "last monday", "12th of March", "03/14/2024") turned
into ISO dates (YYYY-MM-DD), relative to the day the message is read.

Only what is unambiguous is converted: 05/06/2024 could be May or June, so it stays as written
(as does "this week"); 14/03/2024 and 03/14/2024 can only be 14 March. A day and month without a
year is the nearest such date (within six months either way): "December 28" read on 2 January is
the past December."""

from __future__ import annotations

import datetime as dt
import re

MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_MONTH = r"(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*"
_ORDINAL = r"(?:st|nd|rd|th)?"
_FORMS = (
    ("ymd", re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})")),
    ("numeric", re.compile(r"(\d{1,2})[/.](\d{1,2})[/.](\d{2,4})")),
    ("day_month", re.compile(rf"(\d{{1,2}}){_ORDINAL}\s+(?:of\s+)?{_MONTH}(?:,?\s+(\d{{4}}))?")),
    ("month_day", re.compile(rf"{_MONTH}\s+(\d{{1,2}}){_ORDINAL}(?:,?\s+(\d{{4}}))?")),
    ("weekday", re.compile(rf"(?:(last|this|on)\s+)?({'|'.join(DAYS)})")),
)
_RELATIVE = {"today": 0, "yesterday": -1, "tomorrow": 1}


def iso_date(text: str, today: dt.date) -> str | None:
    """``text`` (a date slot's value as written) as an ISO date, or None when it names no single day.

    "last monday" is the latest Monday before today (a week ago when read on a Monday); a weekday
    alone or "on monday" is the latest such day, today included; "this monday", the one of this week."""
    text = text.strip().lower()
    if text in _RELATIVE:
        return (today + dt.timedelta(days=_RELATIVE[text])).isoformat()
    for form, pattern in _FORMS:
        match = pattern.fullmatch(text)
        if match:
            day = _CONVERT[form](match.groups(), today)
            return day.isoformat() if day else None
    return None


def _date(year: int, month: int, day: int) -> dt.date | None:
    try:
        return dt.date(year, month, day)
    except ValueError:  # 30 February, month 13
        return None


def _ymd(groups: tuple, today: dt.date) -> dt.date | None:
    return _date(int(groups[0]), int(groups[1]), int(groups[2]))


def _numeric(groups: tuple, today: dt.date) -> dt.date | None:
    first, second, year = (int(g) for g in groups)
    year += 2000 if year < 100 else 0
    if first > 12 >= second:
        return _date(year, second, first)  # day first
    if second > 12 >= first or first == second:
        return _date(year, first, second)  # month first (or either)
    return None  # 05/06: May or June


def _day_month(groups: tuple, today: dt.date) -> dt.date | None:
    return _nearest(int(groups[0]), MONTHS.index(groups[1]) + 1, groups[2], today)


def _month_day(groups: tuple, today: dt.date) -> dt.date | None:
    return _nearest(int(groups[1]), MONTHS.index(groups[0]) + 1, groups[2], today)


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
