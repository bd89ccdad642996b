"""relay.rewrite reads the common Date shape and writes the UTC date itself, and writes a
header that fits one line without the folding loop: the same text as email.utils and the
loop give, for any input."""

from __future__ import annotations

from datetime import UTC
from email.utils import format_datetime, parsedate_to_datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from relay import rewrite
from relay.rewrite import _folded, _format_utc, _line, _parse_date


def date_with(parse, render, value: str):
    """The Date header the rewrite writes, read by ``parse`` and written by ``render``;
    or the kind of error it raises."""
    try:
        when = parse(value)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return render(when.astimezone(UTC))
    except Exception as exc:
        return type(exc)


def old_date(value: str):
    return date_with(parsedate_to_datetime, format_datetime, value)


def new_date(value: str):
    return date_with(_parse_date, _format_utc, value)


two = st.integers(0, 99).map("{:02d}".format)
dates = st.builds(
    lambda day, d, mon, y, h, m, s, sign, zone: f"{day}, {d} {mon} {y} {h}:{m}:{s} {sign}{zone}",
    st.sampled_from(rewrite._DAYS), st.integers(0, 40).map(str) | two,
    st.sampled_from(rewrite._MONTHS), st.integers(1, 9999).map("{:04d}".format),
    two, two, two, st.sampled_from("+-"),
    st.sampled_from(["0000", "0100", "0530", "2359", "2400", "9999", "0099"]) | two.map(
        lambda x: x + "00"))


@settings(max_examples=3000, deadline=None)
@given(dates)
def test_plain_dates_read_and_write_as_email_utils_does(value):
    assert new_date(value) == old_date(value)


@settings(max_examples=1000, deadline=None)
@given(st.text(alphabet="MonTueDecJan0123456789:+-, GMTEST", max_size=40))
def test_any_date_reads_as_email_utils_does(value):
    assert new_date(value) == old_date(value)


@settings(max_examples=2000, deadline=None)
@given(st.sampled_from(["To", "Subject", "X-Long-Header-Name"]),
       st.lists(st.text(alphabet="ab=\xe9\udce9", max_size=30), max_size=6))
def test_short_lines_are_what_the_folding_loop_writes(name, pieces):
    assert _line(name, pieces) == _folded(name, pieces)
