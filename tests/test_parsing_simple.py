"""relay.parsing reads messages of the common shape without the feedparser (`_simple`):
whenever it gives a tree, that tree must be the one email's compat32 parser builds, down
to defects, preambles, epilogues and line endings; when in doubt it must give None."""

from __future__ import annotations

import base64
import os
from email.message import Message
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay import parsing
from relay.parsing import Part, parse
from tests.test_parsing_runs import tree

CORPUS = Path(os.environ.get("RELAY_CORPUS")
              or Path(__file__).resolve().parents[2] / "shared" / "corpus" / "content")


def simple_or_plain(text: str, cls: type[Message] = Message) -> bool:
    """Whether `_simple` read the text; if it did, its tree is the parser's."""
    got = parsing._simple(text, cls)
    if got is None:
        return False
    parser = parsing._part_parser if cls is Part else parsing._parser
    assert tree(got) == tree(parser.parsebytes(text.encode("utf-8", "surrogateescape")))
    return True


# -- generated MIME: mostly the common shape, with every way out of it mixed in ----------

EOL = st.sampled_from(["\r\n"] * 12 + ["\n", "\r", ""])
CRLF = st.just("\r\n")
HEADER_LINES = [
    "Subject: Your order", "X-A: b", "X-Folded: one\r\n two", "X-Folded: one\r\n\tt\r\n  3",
    "X-Empty:", "X-Empty-Folded:\r\n x", "X-Blank-Fold:  \r\n \r\n x",
    "X-Blank:   ", "Content-Transfer-Encoding: 7bit", "Content-Transfer-Encoding: base64",
    "Content-Transfer-Encoding: 8BIT",
    "content-transfer-encoding: Quoted-Printable", "Content-Disposition: inline",
    "Subject: caf\udcc3\udca9", "From: a@example.com", "X-Colons: a: b: c",
]
ODD_HEADER_LINES = [" continued", "\tcontinued", "From someone", ":no name",
                    "Name : space before the colon", "N\udce9: 8-bit name",
                    "Content-Type: text/plain"]
BODY_LINES = [
    "Hello there,", "", " indented", "-- ", "--", "--bb", "---b", "--b x", "--b--x", "-",
    "Note: header-like", "From someone", "caf\udcc3\udca9", "--c-", "x--b",
    "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=", "RELAYTXT0123456789ABCDEFN0X",
]
ODD_BODY_LINES = ["--b", "--b--", "--c", "--c--", "x\ry", "x\ny", "x\r--b", "--b  \t",
                  "--b-- \t", "--b\r", "--b--\n"]
BOUNDARIES = ["b", "c", "b--", "b ", "=_alt_1f", "a b", "(x)", "b.c", "b\t"]
ODD_BOUNDARIES = ["", "--", "b\r\n x"]
LEAF_TYPES = [
    "", "Content-Type: text/plain; charset=utf-8", "Content-Type: text/html",
    "Content-Type: application/pdf; name=a.pdf", "Content-Type: Text/Plain",
    "Content-Type: text", "Content-Type: t\udce9xt/plain",
]
ODD_LEAF_TYPES = ["Content-Type: multipart/mixed", "Content-Type: message/rfc822",
                  "Content-Type: message/delivery-status"]
SUBTYPES = ["mixed", "alternative", "related", "report"]


class Pools:
    """What an entity is drawn from: the common shape only, or with every way out."""

    def __init__(self, odd: bool) -> None:
        self.odd = odd
        self.eol = EOL if odd else CRLF
        more = (lambda common, rare: common + rare) if odd else (lambda common, rare: common)
        self.header = st.sampled_from(more(HEADER_LINES, ODD_HEADER_LINES))
        # base64 or quoted-printable on a multipart is a defect
        self.multipart_header = st.sampled_from(more(
            [h for h in HEADER_LINES if "base64" not in h and "Quoted" not in h],
            ODD_HEADER_LINES + ["Content-Transfer-Encoding: base64"]))
        self.body = st.sampled_from(more(BODY_LINES, ODD_BODY_LINES))
        self.boundary = st.sampled_from(more(BOUNDARIES, ODD_BOUNDARIES))
        self.leaf = st.sampled_from(more(LEAF_TYPES, ODD_LEAF_TYPES))
        self.subtype = st.sampled_from(more(SUBTYPES, ["digest"]))
        self.after_boundary = st.sampled_from(more(["", "", " ", "\t "], ["x", "--"]))
        self.after_close = st.sampled_from(more(["", "", " "], ["x"]))


def lines_of(draw, pools: Pools, strategy, max_size: int) -> list[tuple[str, str]]:
    return [(line, draw(pools.eol)) for line in draw(st.lists(strategy, max_size=max_size))]


@st.composite
def entity(draw, pools: Pools | None = None, depth: int = 0,
           outer: str = "b") -> list[tuple[str, str]]:
    """(line, line ending) pairs of one MIME entity."""
    if pools is None:
        pools = Pools(odd=draw(st.integers(0, 2)) == 0)
    if depth < 3 and draw(st.integers(0, 2)) == 0:
        out = lines_of(draw, pools, pools.multipart_header, 3)
        inner = draw(pools.boundary)
        if pools.odd and draw(st.booleans()):
            inner = outer  # the same boundary as the enclosing multipart
        elif depth:
            inner += str(depth)
        quote = draw(st.booleans())
        out.append((f"Content-Type: multipart/{draw(pools.subtype)}; "
                    f"boundary={chr(34) + inner + chr(34) if quote else inner}", "\r\n"))
        out += lines_of(draw, pools, pools.multipart_header, 2)
        if not pools.odd or draw(st.integers(0, 9)):
            out.append(("", "\r\n"))
        out += lines_of(draw, pools, pools.body, 2)  # preamble
        line = inner if pools.odd else inner.rstrip()  # the parameter is right-stripped
        for _ in range(draw(st.integers(0 if pools.odd else 1, 3))):
            out.append((f"--{line}{draw(pools.after_boundary)}", draw(pools.eol)))
            out += draw(entity(pools, depth + 1, inner))
        if not pools.odd or draw(st.integers(0, 5)):
            out.append((f"--{line}--{draw(pools.after_close)}", draw(pools.eol)))
        out += lines_of(draw, pools, pools.body, 3)  # epilogue
        return out
    out = lines_of(draw, pools, pools.header, 3)
    ctype = draw(pools.leaf)
    if ctype:
        out.append((ctype, "\r\n"))
    out += lines_of(draw, pools, pools.header, 2)
    if not pools.odd or draw(st.integers(0, 9)):
        out.append(("", "\r\n"))
    out += lines_of(draw, pools, pools.body, 6)
    return out


SETTINGS = settings(max_examples=3000, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@SETTINGS
@given(entity(), st.booleans(), st.booleans())
def test_generated_messages_read_directly_are_the_parsers_tree(lines, part_class, last_eol):
    text = "".join(line + eol for line, eol in lines)
    if not last_eol:
        text = text.removesuffix("\r\n")
    simple_or_plain(text, Part if part_class else Message)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from([
    "Content-Type: multipart/mixed; boundary=b", "Content-Type: multipart/alternative; "
    "boundary=c", "Content-Type: text/plain", "X-A: b", " folded", "", "--b", "--b--",
    "--c", "--c--", "text", "From x", "x\r--b", "--b\r--b--"]), EOL), max_size=40))
def test_line_soup_read_directly_is_the_parsers_tree(lines):
    simple_or_plain("".join(line + eol for line, eol in lines))


def test_the_common_shapes_are_read_directly():
    # what this is for: if these fell back to the parser, it would only be slower
    from scripts.benchlib.messages import MessageFactory
    for size in (1024, 4096, 100 * 1024):
        assert simple_or_plain(MessageFactory(size).sample().decode("ascii"))
    nested = ("From: a@example.com\r\nContent-Type: multipart/mixed; boundary=\"m\"\r\n\r\n"
              "preamble\r\n--m\r\nContent-Type: multipart/alternative; boundary=a\r\n\r\n"
              "--a\r\nContent-Type: text/plain\r\n\r\nhi\r\n\r\n--a\r\n"
              "Content-Type: text/html\r\n\r\n<p>hi</p>\r\n--a--\r\n\r\n--m\r\n"
              "Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
              "JVBERi0=\r\n--m--\r\nepilogue\r\n")
    assert simple_or_plain(nested)
    assert simple_or_plain(nested.removesuffix("epilogue\r\n"))
    assert simple_or_plain(nested.removesuffix("\r\nepilogue\r\n"))  # no CRLF after it
    assert simple_or_plain("Subject: plain\r\n\r\nbody\r\nwith a bare\rCR\n")
    assert simple_or_plain("Subject: no body\r\n\r\n")


@pytest.mark.parametrize("text", [
    "From x@y Mon Jan  1 00:00:00 2024\r\nSubject: a\r\n\r\nbody\r\n",  # From_ line
    "Subject: a\r\nno blank line\r\n",
    " continued first\r\nSubject: a\r\n\r\n",
    "Content-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\nbody\r\n",
    "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\none\r\n",  # no close
    "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n--b\r\n\r\none\r\n--b--\r\n",
    "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\none\r--b\r\n\r\n--b--\r\n",
    "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\none\n--b--\r\n",
    "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b--\r\n",  # close first
    "Content-Type: multipart/mixed\r\n\r\n--b\r\n\r\none\r\n--b--\r\n",  # no boundary
    "Content-Type: multipart/digest; boundary=b\r\n\r\n--b\r\n\r\nX: y\r\n--b--\r\n",
    "Content-Type: multipart/mixed; boundary=b\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    "--b\r\n\r\none\r\n--b--\r\n",
])
def test_other_shapes_are_left_to_the_parser(text):
    assert parsing._simple(text, Message) is None
    assert tree(parsing._parse_text(text)) == tree(parsing._parser.parsebytes(
        text.encode("utf-8", "surrogateescape")))


def test_deep_nesting_is_left_to_the_parser():
    text, close = "", ""
    for i in range(parsing._SIMPLE_DEPTH + 2):
        text += f"Content-Type: multipart/mixed; boundary=b{i}\r\n\r\n--b{i}\r\n"
        close = f"\r\n--b{i}--\r\n" + close
    text += "\r\nleaf" + close
    assert parsing._simple(text, Message) is None
    assert tree(parse(text.encode())) == tree(parsing._parser.parsebytes(text.encode()))


def test_a_big_attachment_keeps_its_runs_when_read_directly():
    data = base64.b64encode(os.urandom(60_000)).decode()
    b64 = "\r\n".join(data[i:i + 76] for i in range(0, len(data), 76))
    raw = ("Content-Type: multipart/mixed; boundary=m\r\n\r\n--m\r\n"
           "Content-Type: text/plain\r\n\r\nhello\r\n--m\r\n"
           "Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
           f"{b64}\r\n--m--\r\n").encode()
    msg = parse(raw)
    attachment = msg.get_payload(1)
    assert isinstance(attachment, Part) and attachment.runs
    assert b"".join(bytes(s) if isinstance(s, memoryview) else s.encode()
                    for s in attachment.segments()) == b64.encode()


@pytest.mark.skipif(not CORPUS.is_dir(), reason=f"corpus not found at {CORPUS}")
def test_the_corpus_read_directly_is_the_parsers_tree():
    files = sorted(CORPUS.glob("*.eml"))
    assert files
    direct = 0
    for path in files:
        text = path.read_bytes().decode("ascii", "surrogateescape")
        direct += simple_or_plain(text)
        direct += simple_or_plain(text.replace("\r\n", "\n").replace("\n", "\r\n"))
    assert direct  # the corpus has messages of the common shape
