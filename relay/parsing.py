"""One parser for the whole relay: compat32 is correct here and about 4x cheaper than
email.policy.default (the rewrite writes headers itself, so it needs no policy objects).

Big attachments are not copied into the parsed tree. Before parsing, every long run of
whole lines made only of base64 characters is replaced by one placeholder line, and the
parser reads what is left (a few KB). That cannot change the tree the parser builds:
such lines hold no "--" (no MIME boundary), no ":" and no leading space (no header, no
continuation), and neither does the placeholder. After parsing, a run that landed in an
attachment the rewrite passes on unchanged (a base64 file, see
`relay.rewrite_mime.leaf_kind`) stays a placeholder, and `Part.runs` maps it to a
memoryview of the received bytes, which the rewrite, the DKIM body hash and delivery then
pass on without copying. A run anywhere else (a text part, an encoded message/rfc822, a
preamble) is put back into the tree before anyone reads it.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from email import policy as email_policy
from email.message import Message
from email.parser import BytesParser

from relay.rewrite_mime import _IDENTITY_CTES, _cte, leaf_kind

Chunk = bytes | memoryview  # of a message on its way: a memoryview is one of its runs

# Runs shorter than this are parsed like the rest: placeholders would cost more than a copy.
MIN_RUN_BYTES = 32 * 1024
_BASE64_RUN = re.compile(rb"(?m)^(?:[A-Za-z0-9+/=]++\r\n)++")
_BASE64_CHAR = re.compile(r"[A-Za-z0-9+/]")


@dataclass(frozen=True)
class Run:
    data: memoryview  # the run as received, without its last CRLF
    chars: int        # base64 characters in it, padding excluded


class Part(Message):
    """A compat32 Message whose payload may hold placeholders for runs (see the module)."""

    runs: dict[str, Run] | None = None
    placeholder: re.Pattern[str] = re.compile("(?!)")  # this message's, set with runs

    def _pieces(self) -> list[str | Run]:
        """The raw payload in order: text between placeholders, and the runs."""
        payload = self._payload if isinstance(self._payload, str) else ""
        if not self.runs:
            return [payload]
        pieces = self.placeholder.split(payload)
        return [self.runs[p] if i % 2 else p for i, p in enumerate(pieces)]

    def segments(self) -> list[str | memoryview]:
        """The raw payload in order: text between placeholders, and the runs' bytes."""
        return [p.data if isinstance(p, Run) else p for p in self._pieces()]

    def decoded_size(self) -> int:
        """The decoded payload's size, counted without decoding the runs."""
        if not self.runs:
            return len(self.get_payload(decode=True) or b"")
        chars = sum(p.chars if isinstance(p, Run) else len(_BASE64_CHAR.findall(p))
                    for p in self._pieces())
        return chars * 3 // 4


_parser = BytesParser(policy=email_policy.compat32)
_part_parser = BytesParser(_class=Part, policy=email_policy.compat32)


def parse(raw: bytes | bytearray) -> Message:
    if len(raw) < MIN_RUN_BYTES:
        return _parser.parsebytes(raw)
    spans = [m.span() for m in _BASE64_RUN.finditer(raw) if m.end() - m.start() >= MIN_RUN_BYTES]
    if not spans:
        return _parser.parsebytes(raw)
    # A random tag per message: text a sender writes can never name one of its runs.
    tag = f"RELAYRUN{secrets.token_hex(8).upper()}N"
    view = memoryview(raw)
    skeleton: list[bytes | memoryview] = []
    runs: dict[str, Run] = {}
    last = 0
    for i, (start, end) in enumerate(spans):
        token = f"{tag}{i}X"
        skeleton += [view[last:start], token.encode("ascii"), b"\r\n"]
        chars = end - start - 2 * raw.count(b"\n", start, end) - raw.count(b"=", start, end)
        runs[token] = Run(view[start:end - 2], chars)
        last = end
    skeleton.append(view[last:])
    msg = _part_parser.parsebytes(b"".join(skeleton))
    _place(msg, runs, re.compile(f"({re.escape(tag)}[0-9]+X)"))
    return msg


def _place(msg: Message, runs: dict[str, Run], token: re.Pattern[str]) -> None:
    """Keep each run that sits in a passed-through attachment; put the others back."""
    def restore(text: str | None) -> str | None:
        if text is None or not token.search(text):
            return text
        return token.sub(lambda m: runs[m.group(0)].data.tobytes().decode("ascii"), text)

    stack: list[tuple[Message, bool]] = [(msg, False)]  # (part, inside an encoded message)
    while stack:
        part, encoded = stack.pop()
        payload = part._payload
        cte = _cte(part.raw_items())
        if isinstance(payload, list):
            inner = encoded or (part.get_content_maintype() != "multipart"
                                and cte not in _IDENTITY_CTES)
            part.preamble, part.epilogue = restore(part.preamble), restore(part.epilogue)
            stack.extend((sub, inner) for sub in payload)
            continue
        if not isinstance(payload, str) or not token.search(payload):
            continue
        if (not encoded and cte == "base64" and isinstance(part, Part)
                and leaf_kind(part, part.get_content_type()) == "opaque"):
            part.runs = {t: runs[t] for t in token.findall(payload)}
            part.placeholder = token
        else:
            part._payload = restore(payload)
