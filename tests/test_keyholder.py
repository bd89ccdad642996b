"""The keyholder process: the daemon's private keys live there, and nowhere else."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from relay import config as relay_config
from relay.app import build_pipeline
from relay.dkim import DkimKeyError, Signer, generate_ed25519_pem, generate_rsa_pem
from relay.dkim_body import relaxed_body_hash
from relay.keyholder import KeyHolder, KeyHolderError
from tests.smtp_harness import write_config

T0 = 1_700_000_000
HEAD = (b"From: Shop <k3x9@relay.example>\r\nTo: Buyer <buyer@mail.example>\r\n"
        b"Subject: Your order\r\nMessage-ID: <1@relay.example>\r\n\r\n")
BODY = b"Hello,\r\n\r\nyour parcel left today.\r\n"


@pytest.fixture
def config(tmp_path):
    (tmp_path / "dkim.key").write_bytes(generate_rsa_pem())
    (tmp_path / "dkim.key.ed25519").write_bytes(generate_ed25519_pem())
    return relay_config.load(write_config(tmp_path))


def run(coro):
    return asyncio.run(coro)


def test_signatures_are_those_of_the_keys_in_process(config):
    local = Signer.from_config(config)
    held = Signer.from_config(config, keyholder=True)
    assert [k.key for k in held.keys] == [None, None]  # nothing of the keys in this process
    assert [k.algorithm for k in held.keys] == [k.algorithm for k in local.keys]

    async def sign() -> bytes:
        await held.start()
        try:
            return await held.fields(HEAD, relaxed_body_hash([BODY]), timestamp=T0)
        finally:
            await held.close()

    assert run(sign()) == local.sign_parts(HEAD, [BODY], timestamp=T0)


def test_a_key_the_keyholder_cannot_use_fails_at_start(config, tmp_path):
    (tmp_path / "dkim.key").write_bytes(b"-----BEGIN RSA PRIVATE KEY-----\nnonsense\n")
    signer = Signer.from_config(config, keyholder=True)
    with pytest.raises(DkimKeyError, match="not an unencrypted private key"):
        run(signer.start())


def test_a_request_in_flight_fails_when_the_child_dies_and_the_next_restarts_it(config):
    holder = KeyHolder([config["dkim"]["key"]])
    digest = bytes(32)

    async def scenario() -> None:
        await holder.start()
        first = await holder.sign(0, digest)
        pid = holder.pid
        os.kill(pid, signal.SIGSTOP)  # the request below waits in the pipe
        pending = asyncio.ensure_future(holder.sign(0, digest))
        await asyncio.sleep(0)  # written
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(KeyHolderError, match="exited"):
            await pending
        assert holder.pid is None
        assert await holder.sign(0, digest) == first  # a new child, the same key
        assert holder.starts == 2 and holder.pid != pid
        await holder.close()

    run(scenario())


def test_the_child_outlives_a_sigterm_and_ends_with_its_input(config):
    holder = KeyHolder([config["dkim"]["key"]])

    async def scenario() -> int | None:
        await holder.start()
        os.kill(holder.pid, signal.SIGTERM)  # as a stop of the whole process group would
        assert len(await holder.sign(0, bytes(32))) == 256  # still signing: RSA-2048
        return await holder.close()

    assert run(scenario()) == 0


def test_a_bad_request_fails_alone(config):
    holder = KeyHolder([config["dkim"]["key"]])

    async def scenario() -> None:
        await holder.start()
        with pytest.raises(KeyHolderError, match="cannot sign"):
            await holder.sign(7, bytes(32))  # no such key
        assert len(await holder.sign(0, bytes(32))) == 256
        await holder.close()

    run(scenario())


def test_the_daemon_signs_through_the_keyholder_unless_told_otherwise(tmp_path):
    (tmp_path / "dkim.key").write_bytes(generate_rsa_pem())
    on = relay_config.load(write_config(tmp_path))
    off = relay_config.load(write_config(tmp_path, dkim={"key": "dkim.key",
                                                         "keyholder": False}))
    from aliasdb import Store

    store = Store.open(tmp_path / "relay.db")
    try:
        assert build_pipeline(on, store, keyholder=True).signer.holder is not None
        assert build_pipeline(off, store, keyholder=True).signer.holder is None
        assert build_pipeline(on, store).signer.holder is None  # CLI: keys read in-process
    finally:
        store.close()


@pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="Linux scheduling policies")
def test_the_child_does_not_preempt_its_worker(config):
    holder = KeyHolder([config["dkim"]["key"]])

    async def scenario() -> int:
        await holder.start()
        try:
            return os.sched_getscheduler(holder.pid)
        finally:
            await holder.close()

    assert run(scenario()) == os.SCHED_BATCH


def test_a_child_that_does_not_answer_is_replaced(config):
    holder = KeyHolder([config["dkim"]["key"]], sign_timeout=0.5)

    async def scenario() -> None:
        await holder.start()
        stuck = holder.pid
        os.kill(stuck, signal.SIGSTOP)
        with pytest.raises(KeyHolderError, match="did not answer"):
            await holder.sign(0, bytes(32))
        assert len(await holder.sign(0, bytes(32))) == 256  # from a new child
        assert holder.starts == 2 and holder.pid != stuck
        await holder.close()

    run(scenario())
