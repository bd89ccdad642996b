"""Delivery back-ends: maildir durability and the pooled SMTP client."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap

import pytest
from aiosmtpd.smtp import SMTP

from relay.config import HostPort
from relay.delivery import DeliveryError, MaildirDelivery, SmtpDelivery

MESSAGE = b"From: a@relay.example\r\nSubject: hi\r\n\r\n" + b"body line\r\n" * 1000


def test_crash_between_write_and_rename_leaves_no_message_in_new(tmp_path):
    # A real crash: the process dies (no cleanup, no finally) where rename would happen.
    script = textwrap.dedent(f"""
        import asyncio, os
        from relay.delivery import MaildirDelivery
        os.rename = lambda *a: os._exit(9)
        asyncio.run(MaildirDelivery({str(tmp_path)!r}).deliver("", "jane@mail.example",
                                                              {MESSAGE!r}))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert proc.returncode == 9, proc.stderr
    box = tmp_path / "jane@mail.example"
    assert list((box / "new").iterdir()) == []
    [leftover] = list((box / "tmp").iterdir())  # complete, and invisible to readers
    assert leftover.read_bytes() == MESSAGE


def test_write_failure_is_a_tempfail_and_leaves_nothing(tmp_path, monkeypatch):
    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("os.fsync", broken_fsync)
    with pytest.raises(DeliveryError) as err:
        asyncio.run(MaildirDelivery(tmp_path).deliver("", "jane@mail.example", MESSAGE))
    assert (err.value.code, err.value.permanent) == (451, False)
    box = tmp_path / "jane@mail.example"
    assert list((box / "new").iterdir()) == [] and list((box / "tmp").iterdir()) == []


def test_maildir_delivery_is_complete_in_new(tmp_path):
    delivery = MaildirDelivery(tmp_path)
    asyncio.run(delivery.deliver("", "Jane@Mail.Example", MESSAGE))
    [path] = list((tmp_path / "jane@mail.example" / "new").iterdir())
    assert path.read_bytes() == MESSAGE
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_mailbox_names_cannot_escape_the_root(tmp_path):
    box = MaildirDelivery(tmp_path).mailbox("../../etc/passwd@x.example")
    assert box.parent == tmp_path and "/" not in box.name


def test_smtp_delivery_reuses_connections(loop_thread, sink):
    delivery = SmtpDelivery(HostPort("127.0.0.1", sink.port), "relay.example", timeout=5)

    async def send_three():
        for _ in range(3):
            await delivery.deliver("a@relay.example", "jane@mail.example", MESSAGE)
        pooled = len(delivery._idle)
        await delivery.close()
        return pooled

    assert loop_thread.run(send_three()) == 1
    assert len(sink.messages) == 3


# a big message in chunks goes out streamed (relay.delivery_stream), not through sendmail
STREAMED = [b"Subject: big\r\n\r\n", memoryview(b"QUFB\r\n" * 60_000)]


@pytest.mark.parametrize("message", [MESSAGE, STREAMED], ids=["sendmail", "streamed"])
def test_smtp_delivery_passes_refusals_back_in_class(loop_thread, sink, message):
    delivery = SmtpDelivery(HostPort("127.0.0.1", sink.port), "relay.example", timeout=5)

    async def attempt():
        try:
            await delivery.deliver("a@relay.example", "jane@mail.example", message)
        except DeliveryError as exc:
            return exc
        finally:
            await delivery.close()

    sink.handler.reply = lambda data: "550 5.1.1 <jane@mail.example> unknown user"
    permanent = loop_thread.run(attempt())
    sink.handler.reply = lambda data: "452 4.2.2 mailbox full"
    transient = loop_thread.run(attempt())
    assert (permanent.code, permanent.permanent) == (550, True)
    assert "jane" not in permanent.text
    assert (transient.code, transient.permanent) == (451, False)
    assert sink.messages == []


def test_a_pooled_connection_the_next_hop_closed_is_replaced_not_resent(loop_thread, sink):
    delivery = SmtpDelivery(HostPort("127.0.0.1", sink.port), "relay.example", timeout=5)
    delivery.fresh_for = 0  # check every pooled connection before use

    async def send():
        await delivery.deliver("a@relay.example", "jane@mail.example", MESSAGE)

    loop_thread.run(send())
    for smtp in sink.sessions:  # the next hop drops idle clients
        smtp.transport.close()
    loop_thread.run(send())
    loop_thread.run(delivery.close())
    assert len(sink.messages) == 2


def test_an_internationalized_recipient_goes_with_smtputf8(loop_thread, sink):
    delivery = SmtpDelivery(HostPort("127.0.0.1", sink.port), "relay.example", timeout=5)
    loop_thread.run(delivery.deliver("a@relay.example", "jöns@mail.example", MESSAGE))
    loop_thread.run(delivery.close())
    [got] = sink.messages
    assert (got.mail_from, got.rcpt_tos, got.data) == ("a@relay.example",
                                                       ["jöns@mail.example"], MESSAGE)


def test_an_internationalized_recipient_is_refused_where_smtputf8_is_not_offered(
        loop_thread, sink):
    class NoSmtpUtf8(SMTP):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **{**kwargs, "enable_SMTPUTF8": False})

    sink.smtp_class = NoSmtpUtf8
    delivery = SmtpDelivery(HostPort("127.0.0.1", sink.port), "relay.example", timeout=5)
    with pytest.raises(DeliveryError) as err:
        loop_thread.run(delivery.deliver("a@relay.example", "jöns@mail.example", MESSAGE))
    loop_thread.run(delivery.close())
    assert (err.value.code, err.value.permanent) == (550, True)
    assert sink.messages == []
