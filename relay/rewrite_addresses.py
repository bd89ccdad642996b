"""Finding and replacing the parties' real addresses, in text, raw bytes and header values.

Its one job is address substitution: :class:`AddressReplacer` compiles every real address
into one regex whose characters may also be written as HTML entities or %-escapes, and
:func:`sub_header_value` applies it to a raw header value, including addresses hidden in
RFC 2231 parameter continuations or RFC 2047 encoded words. Pure, no I/O.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from email.utils import collapse_rfc2231_value
from email.utils import quote as _quote_param
from urllib.parse import quote as _pct_quote

from relay.rewrite_mime import _EW_RUN, _params_message, decode_words, encode_words

# Named HTML entities an author (or an HTML editor) may use for address characters.
_NAMED_ENTITIES = {"@": ("commat",), ".": ("period",), "_": ("lowbar", "UnderBar"),
                   "+": ("plus",)}


def _char_alternatives(ch: str) -> list[str]:
    """Ways one address character appears in mail text: literal, HTML entity, %-escape."""
    alts = []
    # the address matches in any letter case, so its escapes must too (&#83; is "S")
    for variant in dict.fromkeys((ch, ch.lower(), ch.upper())):
        code = ord(variant)
        alts += [f"&\\#0*{code}(?:;|(?![0-9]))", f"&\\#x0*{code:x}(?:;|(?![0-9a-f]))"]
        alts += [f"&{name};" for name in _NAMED_ENTITIES.get(variant, ())]
        alts.append("".join(f"%{b:02x}" for b in variant.encode("utf-8")))
    return alts


class _CompiledReplacer:
    """The general case: every character of every address as literal-or-escape in one
    compiled regex. Compiling it costs tens of ms, so it serves only addresses the fast
    path below cannot (characters outside ASCII address text)."""

    def __init__(self, keys: list[str], aliases: list[str]) -> None:
        self._aliases = aliases
        self._aliases_b = [a.encode("utf-8") for a in aliases]
        str_groups, bytes_groups = [], []
        for i, key in enumerate(keys):
            s_chars, b_chars = [], []
            for ch in key:
                alts = _char_alternatives(ch)
                s_chars.append("(?:" + "|".join([re.escape(ch), *alts]) + ")")
                literal = re.escape(ch.encode("utf-8")).decode("latin-1")
                b_chars.append("(?:" + "|".join([literal, *alts]) + ")")
            str_groups.append(f"(?P<a{i}>{''.join(s_chars)})")
            bytes_groups.append(f"(?P<a{i}>{''.join(b_chars)})")
        self._re = re.compile("|".join(str_groups), re.IGNORECASE)
        self._bre = re.compile("|".join(bytes_groups).encode("latin-1"), re.IGNORECASE)

    def subn_text(self, text: str) -> tuple[str, int]:
        return self._re.subn(lambda m: self._aliases[int(m.lastgroup[1:])], text)

    def subn_bytes(self, data: bytes) -> tuple[bytes, int]:
        return self._bre.subn(lambda m: self._aliases_b[int(m.lastgroup[1:])], data)


# The fast path. A run is a stretch of characters an ASCII address may hold, each literal
# or escaped; one fixed regex finds the runs, and only a run with an "@" in some form is
# decoded (unit by unit, so what is not replaced keeps its original spelling) and searched.
_ESCAPE = r"&\#[0-9]+;?|&\#[xX][0-9a-fA-F]+;?|&[A-Za-z]+;|%[0-9A-Fa-f]{2}"
_PLAIN = "A-Za-z0-9._+\\-!#$*/=?^`{|}~'@"
_RUN = re.compile(f"(?:[{_PLAIN}]|{_ESCAPE})+")
_UNIT = re.compile(f"{_ESCAPE}|.", re.DOTALL)
_FAST_KEY = re.compile(f"[{_PLAIN}]+")
_AT_FORMS = ("@", "&#", "&commat;", "%40")
# no "@" in any spelling, no address: most text ends here, in one C-level scan
_MAYBE_ADDRESS = re.compile(r"@|&#|&commat;|%", re.IGNORECASE)


def _decode_unit(unit: str) -> str:
    """One character of a run, escapes decoded; "\ufffd" for what is no address character."""
    if len(unit) == 1:
        return unit
    if unit[0] == "%":
        return chr(int(unit[1:], 16))
    for candidate in (unit, unit.lower()):  # &COMMAT; is no entity, but a reader may be lax
        decoded = html.unescape(candidate)
        if decoded != candidate:
            return decoded if len(decoded) == 1 else "\ufffd"
    return "\ufffd"


def _lower1(ch: str) -> str:
    low = ch.lower()
    return low if len(low) == 1 else ch


class AddressReplacer:
    """Every real address, in text, raw bytes and header values, replaced by its alias.

    Each character may be literal or escaped, so `jane&#64;mail.example` and
    `mailto:jane%40mail.example` are caught without decoding the HTML or URL first.
    Matching is deliberately not anchored at word boundaries: a longer address that
    merely ends with a real one is mangled rather than risk a leak.
    """

    def __init__(self, replacements: Mapping[str, str]) -> None:
        # Longest first, so that of two keys starting at one position the longer wins.
        lowered = {k.lower(): v for k, v in replacements.items() if k}
        self._keys = sorted(lowered, key=len, reverse=True)
        self._lowered = lowered
        self._slow = None
        if self._keys and not all(_FAST_KEY.fullmatch(k) for k in self._keys):
            self._slow = _CompiledReplacer(self._keys, [lowered[k] for k in self._keys])

    def subn_text(self, text: str) -> tuple[str, int]:
        if not self._keys:
            return text, 0
        if self._slow is not None:
            return self._slow.subn_text(text)
        # "in" is a C-level search; the regex only when an "&" may start an entity
        if not ("@" in text or "%" in text or ("&" in text and _MAYBE_ADDRESS.search(text))):
            return text, 0
        count = 0

        def run(match: re.Match) -> str:
            nonlocal count
            new, n = self._replace_run(match.group(0))
            count += n
            return new

        new = _RUN.sub(run, text)
        return (new, count) if count else (text, 0)

    def sub_text(self, text: str) -> str:
        return self.subn_text(text)[0]

    def subn_bytes(self, data: bytes) -> tuple[bytes, int]:
        if not self._keys:
            return data, 0
        if self._slow is not None:
            return self._slow.subn_bytes(data)
        if self.finds_nothing_in(data):  # subn_text's first test, before decoding
            return data, 0
        # latin-1 maps bytes to characters one to one; the aliases are ASCII
        new, n = self.subn_text(data.decode("latin-1"))
        return (new.encode("latin-1"), n) if n else (data, 0)

    def finds_nothing_in(self, data: bytes) -> bool:
        """Whether nothing can be replaced in ``data`` nor in its text in a codec that
        gives "@", "%" and "&" only for those bytes: none of them is in it (the fast
        path's first test). False when unsure (the general case's addresses)."""
        if not self._keys:
            return True
        return (self._slow is None and data.find(b"@") < 0 and data.find(b"%") < 0
                and data.find(b"&") < 0)

    def _replace_run(self, run: str) -> tuple[str, int]:
        lowered = run.lower()
        if not any(form in lowered for form in _AT_FORMS) and "%" not in run:
            return run, 0
        units = _UNIT.findall(run)
        # one character per unit, so positions in `decoded` are positions in `units`
        decoded = "".join(_lower1(_decode_unit(u)) for u in units)
        spans: list[tuple[int, int, str]] = []
        i = 0
        while i < len(decoded):
            for key in self._keys:
                if decoded.startswith(key, i):
                    spans.append((i, i + len(key), self._lowered[key]))
                    i += len(key)
                    break
            else:
                i += 1
        if not spans:
            return run, 0
        out, last = [], 0
        for start, end, alias in spans:
            out.extend(units[last:start])
            out.append(alias)
            last = end
        out.extend(units[last:])
        return "".join(out), len(spans)


# -- header values ---------------------------------------------------------------------

_PARAM_HEADERS = ("content-type", "content-disposition")
# Decoding parameters (quotes, RFC 2231 pieces and %XX, encoded words) can only bring out
# an "@", "&#", "&commat;" or "%" that was already there as such, or "&" and the rest in
# pieces, or behind "=?". Without any of these the parameters hold no address.
_PARAM_MAY_HIDE = re.compile(r"[@&%]|=\?")


def _format_param(key: str, value: str) -> str:
    if value.isascii() and value.isprintable():
        return f'{key}="{_quote_param(value)}"'
    return f"{key}*=utf-8''{_pct_quote(value, safe='')}"


def _sub_params(value: str, r: AddressReplacer) -> str:
    """Content-Type/Disposition with RFC 2231 continuations or encoded-word params.

    An address split over `filename*0*=` / `filename*1*=` is invisible to a plain search,
    so look at the decoded parameters and rebuild the header only when one matches.
    """
    if ";" not in value or not _PARAM_MAY_HIDE.search(value):
        return value
    try:
        params = _params_message("Content-Type", value).get_params()
    except Exception:  # malformed parameters: the plain search still runs afterwards
        return value
    if not params:
        return value
    decoded, changed = [], False
    for key, val in params[1:]:
        text = collapse_rfc2231_value(val) if isinstance(val, tuple) else val
        if "=?" in text:
            text = decode_words(text)
        text, n = r.subn_text(text)
        changed = changed or bool(n)
        decoded.append((key, text))
    if not changed:
        return value
    return "; ".join([params[0][0], *(_format_param(k, v) for k, v in decoded)])


def _sub_ew_run(run: str, r: AddressReplacer) -> str:
    text, n = r.subn_text(decode_words(run))
    return "\r\n ".join(encode_words(text)) if n else run


def sub_header_value(name: str, value: str, r: AddressReplacer) -> str:
    """Replace real addresses in one raw header value; returns `value` itself if none."""
    if name.strip().lower() in _PARAM_HEADERS:
        value = _sub_params(value, r)
    if "=?" in value:
        value = _EW_RUN.sub(lambda m: _sub_ew_run(m.group(0), r), value)
    new, n = r.subn_text(value)
    return new if n else value
