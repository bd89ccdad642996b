"""Only the document and image types a buyer needs, within a total size."""

from __future__ import annotations

from email.message import Message

from policies.chain import Policy
from policies.context import SELLER_TO_BUYER, Context
from policies.verdict import Verdict, reject

# extension -> content types that may carry it; octet-stream is what many clients send
ALLOWED = {
    "pdf": {"application/pdf"},
    "jpg": {"image/jpeg", "image/pjpeg"},
    "jpeg": {"image/jpeg", "image/pjpeg"},
    "png": {"image/png"},
    "gif": {"image/gif"},
    "tif": {"image/tiff"},
    "tiff": {"image/tiff"},
    "txt": {"text/plain"},
    "doc": {"application/msword"},
    "docx": {"application/vnd.openxmlformats-officedocument.wordprocessingml.document"},
}
GENERIC = "application/octet-stream"
ALLOWED_TYPES = {t for types in ALLOWED.values() for t in types}
ALLOWED_LIST = ", ".join(ALLOWED)


def attachments(msg: Message) -> list[Message]:
    """Leaf parts that are files rather than the message's own text."""
    found = []
    for part in msg.walk():
        if part.is_multipart():
            continue
        if part.get_content_maintype() != "text":
            found.append(part)
            continue
        disposition = part.get("Content-Disposition")
        if disposition is None:
            # No Content-Disposition, so the only file name is Content-Type's "name"
            # parameter (RFC 2231 pieces included), whose key holds those letters: without
            # them there is none, and parsing every parameter (get_filename) is skipped.
            if "name" in str(part.get("Content-Type", "")).lower() and part.get_filename():
                found.append(part)
            continue
        if str(disposition).split(";")[0].strip().lower() == "attachment" or part.get_filename():
            found.append(part)
    return found


def decoded_size(part: Message) -> int:
    # relay.parsing.Part counts a big base64 file without decoding it
    counted = getattr(part, "decoded_size", None)
    return counted() if counted is not None else len(part.get_payload(decode=True) or b"")


def check_part(part: Message) -> str | None:
    """Why this attachment is not allowed, or None."""
    ctype = part.get_content_type()
    filename = part.get_filename() or ""
    ext = filename.rpartition(".")[2].lower() if "." in filename else ""
    if ext:
        if ext not in ALLOWED or (ctype not in ALLOWED[ext] and ctype != GENERIC):
            return f"attachment type .{ext} ({ctype}) is not allowed"
        return None
    if ctype not in ALLOWED_TYPES:
        return f"attachment type {ctype} is not allowed"
    return None


def check(ctx: Context) -> Verdict | None:
    if ctx.message is None:
        return None
    total = 0
    for part in attachments(ctx.message):
        if problem := check_part(part):
            return reject(f"{problem}; allowed types: {ALLOWED_LIST}")
        total += decoded_size(part)
    limit = ctx.settings.max_attachment_bytes
    if total > limit:
        return reject(f"attachments total {total} bytes, over the limit of {limit} bytes; "
                      "send fewer or smaller files", code=552, status="5.3.4")
    return None


POLICY = Policy("attachments", ("data",), check, (SELLER_TO_BUYER,))
