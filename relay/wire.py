"""What arrives on the wire, checked before anything parses it. Pure functions, no I/O.

aiosmtpd (1.4.5+) ends DATA only at CRLF.CRLF, but keeps a bare CR, a bare LF and NUL
inside the data, and reads a command line up to a bare LF. Every one of these is how an
SMTP-smuggling attack hides a second message or command from one server and shows it to
the next, so the relay refuses them rather than guess what the sender meant:

- a message holding a bare CR, a bare LF or a NUL is refused with `550 5.6.0`, like
  Postfix's `smtpd_forbid_bare_newline = normal` (nothing is normalized or passed on);
- a command line ending in a bare LF, or holding a bare CR or a NUL, is refused with
  `500 5.5.2` and not executed.
"""

from __future__ import annotations

BARE_NEWLINE = ("550 5.6.0 message refused: it contains a bare CR or LF, lines must end "
                "with CRLF; fix the sending software (policy=smtp_wire)")
NUL_BYTE = ("550 5.6.0 message refused: it contains a NUL character; send binary content "
            "as a base64 attachment (policy=smtp_wire)")

COMMAND_NOT_CRLF = "500 5.5.2 command lines must end with CRLF and hold no bare CR"
COMMAND_NUL = "500 5.5.2 NUL character in command line"
COMMAND_EMPTY = "500 5.5.2 empty command line"
COMMAND_UNKNOWN = "500 5.5.1 command not recognized"


def data_problem(data: bytes) -> str | None:
    """The refusal for message data with a bare CR or LF or a NUL, else None."""
    # find, not "in": bytes.__contains__ first tries the needle as an int, and formats
    # the TypeError it then drops
    if data.find(b"\0") >= 0:
        return NUL_BYTE
    crlf = data.count(b"\r\n")
    if data.count(b"\r") != crlf or data.count(b"\n") != crlf:
        return BARE_NEWLINE
    return None


def command_problem(line: bytes, known: set[str] | frozenset[str] | dict) -> str | None:
    """Why a raw command line (as read up to LF) is refused, or None to execute it.

    `known` holds the command verbs the server implements.
    """
    if not line.endswith(b"\r\n") or line.find(b"\r", 0, len(line) - 2) >= 0:
        return COMMAND_NOT_CRLF
    if line.find(b"\0") >= 0:  # see data_problem
        return COMMAND_NUL
    text = line[:-2]
    if not text.strip():
        return COMMAND_EMPTY
    verb = text.partition(b" ")[0]
    try:
        command = verb.upper().decode("ascii")
    except UnicodeDecodeError:
        return COMMAND_UNKNOWN
    return None if command in known else COMMAND_UNKNOWN
