"""attachments() skips parsing parameters where no file name can be: the same parts as
asking every part for its file name."""

from __future__ import annotations

import email
import email.policy
from email.message import Message
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.attachments import attachments
from relay.parsing import parse

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "corpus" / "content"


def reference(msg: Message) -> list[Message]:
    """attachments() as it was: every leaf part asked for its file name."""
    found = []
    for part in msg.walk():
        if part.is_multipart():
            continue
        disposition = str(part.get("Content-Disposition") or "").split(";")[0].strip().lower()
        maintype = part.get_content_maintype()
        if disposition == "attachment" or part.get_filename() or maintype not in ("text",):
            found.append(part)
    return found


CONTENT_TYPES = [
    None, "text/plain", "text/plain; charset=utf-8", "TEXT/HTML; Charset=\"us-ascii\"",
    "text/plain; name=notes.txt", "text/plain; NAME=\"a b.txt\"", "text/plain; name=",
    "text/plain; name*=utf-8''caf%C3%A9.txt", "text/plain; name*0=a; name*1=b.txt",
    "text/plain; filename=x.txt", "text/plain; nAmE = \"x;y.pdf\"", "name", "text/plain;;",
    "application/pdf", "image/png; name=p.png", "text", "multipart/mixed", "message/rfc822",
    "text/plain; x-name=y", "text/plain; charset=\"name\"", "text/plain; n\u0130ame=z",
]
DISPOSITIONS = [
    None, "inline", "attachment", "ATTACHMENT; filename=a.pdf", "inline; filename=x.txt",
    "inline; filename=\"\"", "attachment;", "form-data; name=x", "inline; filename*=utf-8''x",
]


def leaf(ctype: str | None, disposition: str | None) -> bytes:
    head = ""
    if ctype is not None:
        head += f"Content-Type: {ctype}\n"
    if disposition is not None:
        head += f"Content-Disposition: {disposition}\n"
    return f"{head}\nbody\n".encode()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(CONTENT_TYPES), st.sampled_from(DISPOSITIONS)),
                min_size=1, max_size=4))
def test_attachments_are_those_of_asking_every_part(parts):
    body = b"".join(b"--b\n" + leaf(c, d) for c, d in parts) + b"--b--\n"
    raw = b"Subject: x\nContent-Type: multipart/mixed; boundary=b\n\n" + body
    for msg in (email.message_from_bytes(raw),
                email.message_from_bytes(raw, policy=email.policy.default), parse(raw)):
        assert attachments(msg) == reference(msg)
    for ctype, disposition in parts:  # and each as a whole message
        single = email.message_from_bytes(b"Subject: x\n" + leaf(ctype, disposition))
        assert attachments(single) == reference(single)


@pytest.mark.skipif(not CORPUS.is_dir(), reason="corpus not found beside the repository")
def test_attachments_are_those_of_asking_every_part_on_the_corpus():
    for eml in sorted(CORPUS.glob("*.eml")):
        msg = parse(eml.read_bytes())
        assert attachments(msg) == reference(msg)
