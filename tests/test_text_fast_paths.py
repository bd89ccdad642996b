"""policies.text's cheaper passes give exactly what the plain regexes gave."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from policies.content_off_platform import _ORDER_SPAN
from policies.text import _ORDER_ID, dash_anchored


@settings(max_examples=300)
@given(st.text(alphabet=st.sampled_from("0123456789--- a\n٣"), max_size=60))
def test_dash_anchored_finds_what_finditer_finds(text):
    for pattern in (_ORDER_ID, _ORDER_SPAN):
        expected = [m.span() for m in pattern.finditer(text)]
        assert [m.span() for m in dash_anchored(pattern, text)] == expected


def test_dash_anchored_on_order_ids():
    text = "123-0012345-0012345 and 1123-0012345-0012345, 444-5555555-6666666-7"
    assert [m.group(0) for m in dash_anchored(_ORDER_ID, text)] == ["123-0012345-0012345"]
    assert [m.group(0) for m in dash_anchored(_ORDER_SPAN, text)] == [
        "123-0012345-0012345", "123-0012345-0012345", "444-5555555-6666666"]
