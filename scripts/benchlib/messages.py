"""Realistic seller -> buyer messages of a chosen size, cheap to stamp out per transaction.

Every message is multipart/alternative (text + HTML) naming an order of its pair in the
Subject and the text, from the seller's enabled address, with nothing the content rules
refuse. Sizes above 4 KB add a file the way sellers send them (a PDF or a photo, base64),
since that is what makes seller mail big: the text parts stay about 4 KB.

The body is the same for every message of one size (built once); the header block is
made per message, so each has its own pair, order, Message-ID and Date.
"""

from __future__ import annotations

import base64
import random
from email.utils import formatdate

KB = 1024
SIZES = {"1KB": 1 * KB, "4KB": 4 * KB, "100KB": 100 * KB, "1MB": 1024 * KB}
HEAP_SIZES = {"1MB": 1024 * KB, "4MB": 4096 * KB}  # two sizes: what grows with the message

_PARAGRAPHS = [
    "Thank you for your order. Your walnut serving board has been finished, oiled and "
    "packed, and it left our workshop this morning with the tracked parcel service.",
    "The engraving reads exactly as you asked: the initials in the centre and the date "
    "along the lower edge. We let the oil cure for two days so it will not mark the box.",
    "Delivery usually takes two to three working days. The carrier will leave a card if "
    "nobody is at home, and you can pick the parcel up at the local depot the next day.",
    "Before the first use, please wipe the board with a damp cloth and let it dry flat. "
    "Wood moves a little with the seasons, so keep it away from radiators and the sink.",
    "If the parcel arrives damaged, please take a photo of the box before you open it "
    "and reply to this message through the marketplace so we can arrange a replacement.",
    "Every board is cut from the same plank as the sample you saw in the listing, so the "
    "grain will look very close to the photos, with small natural differences in colour.",
    "We sand each piece by hand to a fine finish and check it twice before it is packed, "
    "which is why the making time on the listing is a little longer than usual.",
    "The care instructions are also printed on the card inside the box, together with "
    "the order number for your records and the date the board was finished.",
]


def _paragraphs(words: int) -> list[str]:
    """The first ``words`` words of the paragraphs above, taken in turn."""
    out, left, i = [], words, 0
    while left > 0:
        para = _PARAGRAPHS[i % len(_PARAGRAPHS)].split()[:left]
        out.append(" ".join(para))
        left -= len(para)
        i += 1
    return out


def _wrap(text: str, width: int = 76) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    if line:
        lines.append(line)
    return lines


class MessageFactory:
    """Messages of one size: ``make(pair, n)`` gives the bytes for the n-th message."""

    def __init__(self, size: int, seed: int = 7) -> None:
        self.size = size
        self.rng = random.Random(seed + size)
        self.boundary = f"=_alt_{self.rng.getrandbits(48):012x}"
        self.attachment = ""
        # the alternative parts fill about 4 KB (or the whole of a 1 KB message)
        alt_target = min(size, 4 * KB)
        low, high = 1, 2000
        while low < high:  # the most words that keep the message within its target
            mid = (low + high + 1) // 2
            self._build(mid, attach=False)
            if len(self.sample()) <= alt_target:
                low = mid
            else:
                high = mid - 1
        self._build(low, attach=size > 4 * KB)
        if size > 4 * KB:
            room = size - len(self.sample())
            raw_len = max(1, room * 3 // 4 * 76 // 78)
            raw = self.rng.randbytes(raw_len)
            magic = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" if size >= 512 * KB else b"%PDF-1.4\n"
            raw = magic + raw[len(magic):]
            b64 = base64.b64encode(raw).decode()
            self.attachment = "\r\n".join(b64[i:i + 76] for i in range(0, len(b64), 76))

    def sample(self) -> bytes:
        return self.make("shop@seller12345.example", "Hollow Oak Woodcraft 12345",
                         "abcdefghijklmnopqrst@relay.example", "123-0012345-0012345", 123456)

    def _build(self, words: int, attach: bool) -> None:
        paras = _paragraphs(words)
        text_lines = ["Hello {BUYER},", ""]
        for para in paras:
            text_lines += _wrap(para) + [""]
        text_lines += ["Your order: {ORDER}", "", "Kind regards,", "Owen", "{SELLER}"]
        html_lines = ["<html><body>", "<p>Hello {BUYER},</p>"]
        for para in paras:
            html_lines += ["<p>"] + _wrap(para) + ["</p>"]
        html_lines += ["<p>Your order: <b>{ORDER}</b></p>",
                       "<p>Kind regards,<br>Owen<br>{SELLER}</p>", "</body></html>"]
        alt = [
            f'Content-Type: multipart/alternative; boundary="{self.boundary}"', "",
            f"--{self.boundary}",
            'Content-Type: text/plain; charset="utf-8"',
            "Content-Transfer-Encoding: 7bit", "",
            *text_lines, "",
            f"--{self.boundary}",
            'Content-Type: text/html; charset="utf-8"',
            "Content-Transfer-Encoding: 7bit", "",
            *html_lines, "",
            f"--{self.boundary}--", "",
        ]
        if not attach:
            self.mime_head = alt[0]
            body_lines = alt[2:]
        else:
            mixed = f"=_mix_{self.boundary[6:]}"
            name, ctype = (("photo.jpg", "image/jpeg") if self.size >= 512 * KB
                           else ("invoice.pdf", "application/pdf"))
            self.mime_head = f'Content-Type: multipart/mixed; boundary="{mixed}"'
            body_lines = [f"--{mixed}", *alt, f"--{mixed}",
                          f'Content-Type: {ctype}; name="{name}"',
                          "Content-Transfer-Encoding: base64",
                          f'Content-Disposition: attachment; filename="{name}"', "",
                          "{ATTACHMENT}", f"--{mixed}--", ""]
        self.body_template = "\r\n".join(body_lines)

    def render_body(self, buyer: str, order: str, seller: str) -> str:
        return (self.body_template.replace("{BUYER}", buyer).replace("{ORDER}", order)
                .replace("{SELLER}", seller))

    def make(self, sender: str, seller_name: str, alias: str, order: str, n: int) -> bytes:
        body = self.render_body("there", order, seller_name)
        if self.attachment:
            body = body.replace("{ATTACHMENT}", self.attachment)
        head = "\r\n".join([
            f"From: Owen at {seller_name} <{sender}>",
            f"To: <{alias}>",
            f"Subject: Your order {order} has shipped",
            f"Date: {formatdate(localtime=False)}",
            f"Message-ID: <bench.{n}.{order}@{sender.rpartition('@')[2]}>",
            "MIME-Version: 1.0",
            self.mime_head,
        ])
        return (head + "\r\n\r\n" + body).encode()
