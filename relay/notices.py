"""Messages the relay writes itself: delivery-status notices and opt-out confirmations.

They are built from fixed text and ids only: nothing of the bounce or of the other party's
message goes in, so no real address can ride along.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from email.utils import format_datetime

from relay.parsing import parse
from relay.rewrite import RewritePlan, rewrite


def build(*, domain: str, to_addr: str, to_name: str | None, subject: str, body: str,
          sender: str = "mailer-daemon", sender_name: str = "Mail Delivery System",
          extra: tuple[tuple[str, str], ...] = ()) -> bytes:
    """A plain-text message from the relay, with headers written by the rewrite's writer."""
    raw = (f"Subject: {subject}\r\nDate: {format_datetime(datetime.now(UTC))}\r\n"
           "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
           "Content-Transfer-Encoding: 8bit\r\n\r\n").encode() + body.replace(
               "\n", "\r\n").encode()
    plan = RewritePlan(
        from_name=sender_name, from_addr=f"{sender}@{domain}", to_name=to_name,
        to_addr=to_addr, message_id=f"<{secrets.token_hex(12)}@{domain}>", in_reply_to=None,
        references=(), replacements={},
        extra_headers=(("Auto-Submitted", "auto-replied"), *extra))
    return rewrite(parse(raw), plan)
