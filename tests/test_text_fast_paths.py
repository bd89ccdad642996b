"""policies.text's cheaper passes give exactly what the plain regexes gave."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from policies.content_off_platform import _ORDER_SPAN
from policies.text import _ORDER_ID, _rendered, _tidy, dash_anchored, html_to_text


def _tidy_reference(text: str) -> str:
    """html_to_text's tidying as it was: a substitution per line, one for blank-line runs."""
    lines = [re.sub(r"[ \t\r\f\v]+", " ", line).strip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


PIECES = ["<p>", "</p>", "<div>", "</div>", "<br>", "<blockquote>", "</blockquote>", "<td>",
          "<li>", "<a href='https://x.example'>", "</a>", "<b>", "</b>", "<script>s</script>",
          "word", "two words", " ", "  ", "\t", "\n", "\n\n\n", "\r\n", "\f", "\v", "\xa0",
          "\u2028", "\u3000", "&nbsp;", "\x1c"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=40))
def test_html_to_text_is_the_per_line_regexes(pieces):
    html = "".join(pieces)
    assert html_to_text(html) == _tidy_reference(_rendered(html))


@given(st.text(alphabet=st.sampled_from("ab \t\n\n\r\x0b\x0c\x1c\x85\u2028\u3000")))
def test_tidy_is_the_per_line_regexes(text):
    assert _tidy(text) == _tidy_reference(text)


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
