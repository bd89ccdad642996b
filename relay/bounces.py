"""Reading delivery-status notifications: did it fail for good (hard) or for now (soft)?

flufl.bounce (GNU Mailman's detector) knows the many formats in the wild; RFC 3464
reports it does not recognize still say so through their Status fields.
"""

from __future__ import annotations

import logging
import re
from email.message import Message

from flufl.bounce import all_failures

# flufl.bounce logs at INFO, and on trouble the failing recipients: keep it quiet
logging.getLogger("flufl.bounce").setLevel(logging.CRITICAL)

_STATUS = re.compile(r"^Status:\s*([245])\.\d{1,3}\.\d{1,3}", re.I | re.M)


def classify(msg: Message) -> str | None:
    """"hard", "soft", or None when the message is not a bounce."""
    try:
        temporary, permanent = all_failures(msg)
    except Exception:  # a detector choking on odd input is no reason to fail the session
        temporary, permanent = frozenset(), frozenset()
    if permanent:
        return "hard"
    if temporary:
        return "soft"
    if msg.get_content_type() == "multipart/report":
        for part in msg.walk():
            if part.get_content_type() == "message/delivery-status":
                statuses = _STATUS.findall(_text(part))
                if "5" in statuses:
                    return "hard"
                if "4" in statuses:
                    return "soft"
    return None


def _text(part: Message) -> str:
    payload = part.get_payload()
    if isinstance(payload, list):  # compat32 parses delivery-status into header blocks
        return "\n".join(str(p) for p in payload)
    return str(payload)
